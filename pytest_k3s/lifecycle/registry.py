"""A cluster's own registry for the user's images: ``<cluster>-registry``.

As k3d's ``registry create`` does, a cluster whose spec asks
(:attr:`~pytest_k3s.spec.ClusterSpec.registry`) gets a registry container
(the official ``registry`` image, or ``registry_image``) on its network,
started before the nodes and labelled as the cluster's other objects are,
with the role :data:`~pytest_k3s.labels.REGISTRY_ROLE`: it is no node, and
the cluster's removal removes it, its blobs (an anonymous volume) with it.

Its port 5000 is published on the engine's host, at a free port ``P``, on
127.0.0.1 whatever ``ports_bind`` says: it has no authentication, and only
the engine needs it. The engine pushes, not this process, and Docker trusts
a loopback registry without TLS, so ``localhost:P`` works for a remote
engine too. Every node's
``registries.yaml`` sends both names an image in it may carry,
``localhost:P/<name>`` (as it was pushed) and ``<cluster>-registry:5000/<name>``
(as the cluster network knows the registry), to
``http://<cluster>-registry:5000`` (:func:`endpoints`, merged as the
registry mirror's are), so pods run an image under the name it was pushed
as. A node added later copies server-0's ``registries.yaml``.

:class:`ClusterRegistry` is what :attr:`pytest_k3s.K3sCluster.registry`
gives: the ``host`` to push to, image names, and a push through the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

from pytest_k3s import labels
from pytest_k3s.engine.node_container import NodeContainer
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.engine.protocol import role_container
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.errors import K3sError
from pytest_k3s.lifecycle import mirror
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import PortMapping


#: The port the registry serves on, in its container.
PORT = mirror.PORT
#: Where the port is published: the engine's own pushes are all that use it.
LOOPBACK = "127.0.0.1"


def registry_name(cluster: str) -> str:
    """The registry's container name (and host name on the cluster network)."""
    return f"{cluster}-registry"


def endpoints(cluster: str, host: str) -> dict[str, str]:
    """The ``registries.yaml`` mirrors of the registry at ``host``: name -> URL."""
    name = registry_name(cluster)
    url = f"http://{name}:{PORT}"
    return {host: url, f"{name}:{PORT}": url}


def registry_container(
    spec: ClusterSpec, *, cluster: str, tags: Mapping[str, str]
) -> NodeContainer:
    """Describe the registry of ``cluster``: its image, port and labels."""
    return NodeContainer(
        name=registry_name(cluster),
        image=spec.registry_image,
        command=(),
        environment={},
        labels={**tags, labels.ROLE: labels.REGISTRY_ROLE},
        network=cluster,
        ports=((LOOPBACK, PortMapping(PORT)),),
    )


@dataclass(frozen=True)
class ClusterRegistry:
    """The registry of one cluster, for images the nodes pull.

    ``cluster.registry.push("my-app:dev")`` returns the name a pod runs it
    by; a push needs no registry configuration on the host (Docker trusts
    loopback registries without TLS).

    :ivar host: where the Docker engine reaches it, ``localhost:<port>``:
        what ``docker push`` from this machine (or the engine's) uses
    :ivar container_id: the registry's container
    """

    host: str
    container_id: str = field(repr=False)
    engine: Engine = field(repr=False, compare=False)

    def image(self, name: str) -> str:
        """The reference pods use for ``name`` (``app:1``): ``<host>/app:1``.

        :raises K3sError: ``name`` names a registry of its own
        """
        if _registry_of(name) is not None or not name:
            raise K3sError(
                f"{name!r} is not an image name within the cluster's registry; "
                "give it without a registry, e.g. 'my-app:1' (the image is then "
                f"{self.host}/my-app:1)"
            )
        return f"{self.host}/{name}"

    def push(self, local_image: str, name: str | None = None) -> str:
        """Push a local image to the registry; return the reference pods use.

        :param local_image: an image on the Docker engine (``my-app:dev``)
        :param name: its name in the registry (default: ``local_image``
            without its registry or digest, ``latest`` if it has no tag)
        :raises ImageUnavailableError: the engine does not have ``local_image``
        :raises K3sError: the push failed
        """
        reference = self.image(name or default_name(local_image))
        self.engine.push_image(local_image, reference)
        return reference


def default_name(reference: str) -> str:
    """The name an image is pushed under by default: ``reference``'s own.

    Without its registry or digest, and ``latest`` if it has no tag:
    ``example.com/team/app@sha256:...`` is pushed as ``team/app:latest``.
    """
    path = reference.partition("@")[0]
    registry = _registry_of(path)
    if registry is not None:
        path = path.removeprefix(f"{registry}/")
    if ":" not in path.rpartition("/")[2]:
        path += ":latest"
    return path


def _registry_of(name: str) -> str | None:
    """The registry an image name starts with (as Docker tells one), or None."""
    first, slash, _ = name.partition("/")
    if slash and (first == "localhost" or "." in first or ":" in first):
        return first
    return None


def start(
    engine: Engine, spec: ClusterSpec, *, cluster: str, tags: Mapping[str, str]
) -> ClusterRegistry:
    """Start the registry of ``cluster`` and wait until it serves.

    :raises ClusterStartError: it exited or did not log that it listens
    """
    container = registry_container(spec, cluster=cluster, tags=tags)
    container_id = engine.start_proxy(container)
    try:
        mirror.wait_listening(engine, container_id, container.name)
    except K3sError as exc:
        raise ClusterStartError(
            f"the registry of cluster {cluster} did not start: {exc}; is its "
            f"image ({spec.registry_image}) a registry image? set "
            "--k3s-registry-image"
        ) from exc
    return _handle(engine, container_id)


def find(engine: Engine, cluster: str) -> ClusterRegistry:
    """The registry of a running ``cluster``, by its label and published port.

    :raises K3sError: its container is gone, or not running
    """
    found = role_container(engine, cluster, labels.REGISTRY_ROLE)
    if found is None:
        raise K3sError(
            f"the registry container {registry_name(cluster)} of cluster "
            f"{cluster} is gone; remove the cluster and start another"
        )
    return _handle(engine, found.id)


def _handle(engine: Engine, container_id: str) -> ClusterRegistry:
    port = engine.published_port(container_id, f"{PORT}/tcp")
    return ClusterRegistry(f"localhost:{port}", container_id, engine)
