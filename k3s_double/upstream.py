"""An "upstream" registry for tests and benchmarks, and what was fetched from it.

No public registry is reachable on our machines, so the registry mirror is
tested against a registry of our own that stands for Docker Hub: the image
of :mod:`k3s_double.registry_image` (Debian's docker-registry, the
official image's contract), published on the host's loopback so the
engine can push to it (Docker trusts loopback registries without TLS), and
holding a small test image unique to the run. Its access log, one
``response completed`` line a request, says how often each blob was
fetched (:meth:`Upstream.fetches`).

Nodes reach it by :data:`HOST` on the cluster networks it joins
(:meth:`Upstream.join`); images name it as :data:`REGISTRY`, which speaks
plain HTTP, so a node's ``registries.yaml`` gives it an ``http://``
endpoint (:data:`REGISTRIES`), as users do for a registry without TLS.
A registry mirror reaches it by :data:`MIRROR_HOST`, a name it has on the
mirror's network alone (:meth:`Upstream.join_mirror`): the mirror joins the
cluster networks too, and a name on several would resolve to an address on
a cluster network, gone (with the mirror's connections to it) once that
cluster is removed.
:func:`run_everywhere` runs the test image on every node of a cluster, as
the mirror's tests and ``benchmarks.registry_mirror`` do.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import tarfile
import textwrap
import urllib.request
from collections import Counter
from typing import TYPE_CHECKING
from typing import Any

from k3s_double.build import base_image
from k3s_double.registry_image import ensure_registry_image


if TYPE_CHECKING:
    from pytest_k3s import K3sCluster


HOST = "upstream.pytest-k3s.test"
REGISTRY = f"{HOST}:5000"
REPOSITORY = "pytest-k3s/blobs"
#: What a node's registries.yaml says of it.
REGISTRIES = {"mirrors": {REGISTRY: {"endpoint": [f"http://{REGISTRY}"]}}}
#: A registry mirror's upstream entry for it (``--k3s-registry-mirror-upstreams``).
MIRROR_HOST = "upstream-for-mirrors.pytest-k3s.test"
MIRRORED = f"{REGISTRY}=http://{MIRROR_HOST}:5000"


class Upstream:
    """A running upstream registry holding one test image.

    :param container: its container (docker SDK)
    :param image: the test image as pods name it
    :param blobs: the image's config and layer digests
    """

    def __init__(self, container: Any, image: str, blobs: list[str]) -> None:
        self.container = container
        self.image = image
        self.blobs = blobs

    @classmethod
    def start(cls, client: Any, *, layer_bytes: int = 256 * 1024) -> Upstream:
        """Start one and push a fresh test image to it.

        The image (:func:`build_one_file_image`) has a layer of
        ``layer_bytes`` random bytes, so no earlier run's content is there. The
        container is labelled as pytest-k3s labels what it makes (its own
        cluster name, this process as owner), so leak checks and sweeps
        see it, and other test sessions on the engine leave it alone.
        """
        from pytest_k3s import labels as k3s
        from pytest_k3s.owner import Owner

        name = f"pytest-k3s-upstream-{secrets.token_hex(3)}"
        owner = Owner.current()
        labels = {
            k3s.CLUSTER: name,
            k3s.OWNER: str(owner),
            k3s.OWNER_NS: owner.namespace,
        }
        container = client.containers.run(
            ensure_registry_image(),
            name=name,
            detach=True,
            ports={"5000/tcp": ("127.0.0.1", None)},
            labels=labels,
        )
        try:
            for line in container.logs(stream=True, follow=True):
                if b"listening on" in line:
                    break
            container.reload()
            port = container.ports["5000/tcp"][0]["HostPort"]
            pushed = f"127.0.0.1:{port}/{REPOSITORY}:{secrets.token_hex(4)}"
            build_one_file_image(client, pushed, layer_bytes)
            try:
                client.images.push(pushed)
            finally:
                client.images.remove(pushed, force=True)
            tag = pushed.rpartition(":")[2]
            return cls(container, f"{REGISTRY}/{REPOSITORY}:{tag}", _blobs(pushed))
        except BaseException:
            container.remove(force=True, v=True)
            raise

    def fetches(self) -> Counter[str]:
        """How often each blob of the test image was fetched (GET, 200)."""
        found: Counter[str] = Counter()
        log = self.container.logs().decode(errors="replace")
        for (_, blob), times in blob_gets(log, REPOSITORY).items():
            found[blob] += times
        return Counter({blob: found[blob] for blob in self.blobs})

    def join(self, network: str) -> None:
        """Be reachable as :data:`HOST` on a cluster's ``network``."""
        self._connect(network, HOST)

    def join_mirror(self, network: str) -> None:
        """Be reachable as :data:`MIRROR_HOST` on the mirror's ``network``."""
        self._connect(network, MIRROR_HOST)

    def _connect(self, network: str, alias: str) -> None:
        self.container.reload()
        if network not in self.container.attrs["NetworkSettings"]["Networks"]:
            self.container.client.api.connect_container_to_network(
                self.container.id, network, aliases=[alias]
            )

    def remove(self) -> None:
        """Remove the container and its volume."""
        self.container.remove(force=True, v=True)


def blob_gets(log: str, repository: str) -> Counter[tuple[str, str]]:
    """(client address, blob) of each blob of ``repository`` served, counted.

    From a registry's access log: its ``response completed`` lines of GETs
    answered 200 (the fields come in alphabetical order).
    """
    pattern = re.compile(
        r"http\.request\.method=GET .*http\.request\.remoteaddr=\"?([0-9.]+):\d+"
        r".*http\.request\.uri=\"?/v2/"
        + re.escape(repository)
        + r"/blobs/(sha256:[0-9a-f]{64}).*http\.response\.status=200"
    )
    return Counter(
        (match.group(1), match.group(2))
        for match in map(pattern.search, log.splitlines())
        if match
    )


def run_everywhere(
    cluster: K3sCluster, image: str, *, timeout: float = 120
) -> list[str]:
    """Run ``image`` on every node of ``cluster``; return the pods' nodes, sorted.

    A Deployment ``blobs`` in ``default`` with a replica per node, spread one
    a node, whose container sleeps (the double runs the command as a
    process); it returns once every replica is Ready. Applied again after a
    node joined, it adds a replica for that node. An upstream's image needs
    the upstream on the cluster's network first (:meth:`Upstream.join`).
    """
    nodes = len(cluster.nodes)
    cluster.apply(
        textwrap.dedent(
            f"""
            apiVersion: apps/v1
            kind: Deployment
            metadata: {{name: blobs, namespace: default}}
            spec:
              replicas: {nodes}
              selector: {{matchLabels: {{app: blobs}}}}
              template:
                metadata: {{labels: {{app: blobs}}}}
                spec:
                  topologySpreadConstraints:
                  - maxSkew: 1
                    topologyKey: kubernetes.io/hostname
                    whenUnsatisfiable: DoNotSchedule
                    labelSelector: {{matchLabels: {{app: blobs}}}}
                  containers:
                  - name: blobs
                    image: {image}
                    command: [sleep, "3600"]
            """
        )
    )
    cluster.wait_for(
        "deployment",
        "blobs",
        namespace="default",
        jsonpath=f"{{.status.readyReplicas}}={nodes}",
        timeout=timeout,
    )
    from kubernetes.client import CoreV1Api

    pods = CoreV1Api(cluster.api_client).list_namespaced_pod(
        "default", label_selector="app=blobs"
    )
    return sorted(str(pod.spec and pod.spec.node_name) for pod in pods.items)


#: The test image: ``sleep`` (Debian's static busybox, so real k3s runs
#: the pods too; the double runs its own) and a file of random bytes.
_DOCKERFILE = """\
FROM {base} AS tools
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      busybox-static >/dev/null
FROM scratch
COPY --from=tools /bin/busybox /bin/sleep
COPY payload /payload
"""


def build_one_file_image(client: Any, tag: str, layer_bytes: int = 256 * 1024) -> None:
    """Build ``tag``: a config, ``/bin/sleep`` and ``layer_bytes`` random bytes.

    Three blobs: the config and two layers. The random file gives the
    image digests no other image has, so a registry's access log tells
    this image's fetches apart. The first build installs busybox in a
    builder stage; later ones take it from the build cache.
    """
    dockerfile = _DOCKERFILE.format(base=base_image(client)).encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, data in (
            ("Dockerfile", dockerfile),
            ("payload", secrets.token_bytes(layer_bytes)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)


def _blobs(reference: str) -> list[str]:
    """The config and layer digests of a pushed image, from its manifest."""
    host, _, rest = reference.partition("/")
    repository, _, tag = rest.rpartition(":")
    request = urllib.request.Request(
        f"http://{host}/v2/{repository}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        manifest = json.load(answer)
    return [manifest["config"]["digest"], *(x["digest"] for x in manifest["layers"])]
