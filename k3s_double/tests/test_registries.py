"""registries.yaml and real pulls: endpoint resolution, auth, TLS, verification.

No Docker: the pure rules of :mod:`k3s_double.node.registries`, and the
containerd double pulling from an in-process registry
(:mod:`.fake_registry`) on 127.0.0.1, with ``ctr`` as a subprocess.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3s_double.node import ctr
from k3s_double.node import fetch
from k3s_double.node import registries
from k3s_double.node.flags import AGENT_FLAGS
from k3s_double.node.flags import for_release
from k3s_double.node.pki import new_ca
from k3s_double.node.pki import serving_cert
from k3s_double.node.pulls import BACKOFF_INITIAL
from k3s_double.node.pulls import BACKOFF_MAX
from k3s_double.node.pulls import ImagePuller
from k3s_double.node.pulls import node_images
from k3s_double.node.pulls import waiting_status
from k3s_double.releases import has_default_endpoint_flag

from . import fake_registry
from .fake_registry import Registry
from .fake_registry import digest
from .fake_registry import make_image
from .test_pulls import members
from .test_pulls import run_ctr


def urls(config: registries.Registries, registry: str) -> list[str]:
    return [e.url for e in config.endpoints(registry)]


# ---------------------------------------------------------------------------
# endpoint resolution, as k3s writes hosts.toml and containerd reads it


def test_without_registries_yaml_only_the_default_endpoint() -> None:
    none = registries.Registries()
    assert urls(none, "docker.io") == ["https://registry-1.docker.io/v2"]
    assert urls(none, "upstream.test:5000") == ["https://upstream.test:5000/v2"]
    # containerd speaks plain HTTP to a localhost registry on another port.
    assert urls(none, "localhost:35001") == ["http://localhost:35001/v2"]
    assert urls(none, "127.0.0.1:443") == ["https://127.0.0.1:443/v2"]


def test_mirror_endpoints_in_order_then_the_default() -> None:
    config = registries.parse(
        """
mirrors:
  docker.io:
    endpoint:
      - http://mirror:5000
      - mirror2.test
      - https://mirror3.test/prefix/v2
      - mirror2.test/v2
      - 'http://[::1'
"""
    )
    found = config.endpoints("docker.io")
    assert [e.url for e in found] == [
        "http://mirror:5000/v2",
        "https://mirror2.test/v2",  # the duplicate in another spelling is dropped
        "https://mirror3.test/prefix/v2",  # override_path: taken verbatim
        "https://registry-1.docker.io/v2",  # the invalid one is skipped
    ]
    assert [e.default for e in found] == [False, False, False, True]
    # A mirror is another host: containerd names the registry in ns=.
    assert found[0].request_path("docker.io", "library/nginx", "manifests", "1") == (
        "/v2/library/nginx/manifests/1?ns=docker.io"
    )
    assert found[2].request_path("docker.io", "a/b", "blobs", "sha256:x") == (
        "/prefix/v2/a/b/blobs/sha256:x?ns=docker.io"
    )
    assert found[3].request_path("docker.io", "library/nginx", "manifests", "1") == (
        "/v2/library/nginx/manifests/1"
    )


def test_wildcard_mirror_serves_registries_without_an_entry() -> None:
    config = registries.parse(
        """
mirrors:
  "*":
    endpoint: ["http://cache:5000"]
  own.test:
    endpoint: ["http://own-mirror:5000"]
configs:
  "*":
    tls: {insecure_skip_verify: true}
"""
    )
    assert urls(config, "quay.io") == ["http://cache:5000/v2", "https://quay.io/v2"]
    assert urls(config, "own.test") == [
        "http://own-mirror:5000/v2",
        "https://own.test/v2",
    ]
    wild = config.endpoints("quay.io")[-1]
    assert wild.config.tls is not None
    assert wild.config.tls.insecure_skip_verify
    assert config.endpoints("own.test")[-1].config.tls is None


def test_disable_default_endpoint_drops_the_fallback_of_mirrored_registries() -> None:
    text = "mirrors:\n  docker.io:\n    endpoint: [http://mirror:5000]\n"
    config = registries.parse(text, no_default_endpoint=True)
    assert urls(config, "docker.io") == ["http://mirror:5000/v2"]
    # Only registries with a mirror entry lose it (docs.k3s.io).
    assert urls(config, "ghcr.io") == ["https://ghcr.io/v2"]
    # The flag exists from the January 2024 releases on.
    assert has_default_endpoint_flag("v1.29.1+k3s1")
    assert has_default_endpoint_flag("v1.28.6+k3s1")
    assert not has_default_endpoint_flag("v1.28.5+k3s1")
    assert not has_default_endpoint_flag("v1.25.16+k3s4")
    names = {f.name for f in for_release(AGENT_FLAGS, "v1.28.5+k3s1")}
    assert "disable-default-registry-endpoint" not in names
    assert "private-registry" in names


def test_rewrite_applies_to_mirror_endpoints_only() -> None:
    config = registries.parse(
        r"""
mirrors:
  docker.io:
    endpoint: ["http://mirror:5000"]
    rewrite:
      "^rancher/(.*)": "mirrorproject/rancher-images/$1"
      "^library/(?P<name>.*)": "lib/${name}x$$"
"""
    )
    mirror, default = config.endpoints("docker.io")
    assert mirror.repository("rancher/mirrored-pause") == (
        "mirrorproject/rancher-images/mirrored-pause"
    )
    assert mirror.repository("library/nginx") == "lib/nginxx$"
    assert mirror.repository("other/app") == "other/app"
    assert default.repository("rancher/mirrored-pause") == "rancher/mirrored-pause"


def test_configs_of_the_endpoint_host_give_auth_and_tls() -> None:
    config = registries.parse(
        """
mirrors:
  docker.io:
    endpoint: ["https://mirror.test:5000"]
configs:
  mirror.test:5000:
    auth: {username: u, password: p}
    tls: {ca_file: /ca.pem}
  registry-1.docker.io:
    auth: {auth: dXNlcjpwYXNz}
  tokened.test:
    auth: {identity_token: tok}
"""
    )
    mirror, default = config.endpoints("docker.io")
    assert mirror.config.auth is not None
    assert mirror.config.auth.credentials() == ("u", "p")
    assert mirror.config.tls == registries.TLS(ca_file="/ca.pem")
    assert default.config.auth is not None
    assert default.config.auth.credentials() == ("user", "pass")
    token = config.endpoints("tokened.test")[0].config.auth
    assert token is not None
    assert token.credentials() == ("", "tok")


def test_bad_yaml_is_refused_with_gos_wording(tmp_path: Path) -> None:
    with pytest.raises(registries.RegistriesError) as caught:
        registries.parse("mirrors:\n  docker.io: a: b\n")
    assert str(caught.value) == (
        "yaml: line 2: mapping values are not allowed in this context"
    )
    with pytest.raises(registries.RegistriesError, match="cannot unmarshal !!seq"):
        registries.parse("mirrors: [a, b]\n")
    assert registries.load(str(tmp_path / "absent.yaml")) is None


def test_which_pulls_are_simulated() -> None:
    config = registries.parse(
        "mirrors:\n  docker.io:\n    endpoint: [https://registry-1.docker.io/x]\n"
    )
    mirror, default = config.endpoints("docker.io")
    # A mirror endpoint is always contacted, even on a public host.
    assert not mirror.simulated("docker.io")
    assert default.simulated("docker.io")
    for public in ("ghcr.io", "quay.io", "registry.k8s.io", "us.gcr.io"):
        assert registries.default_endpoint(public, registries.Config()).simulated(
            public
        )
    for private in ("upstream.test:5000", "localhost:35001", "my-registry:5000"):
        end = registries.default_endpoint(private, registries.Config())
        assert not end.simulated(private)


def test_challenges_parse_as_containerds_parser_does() -> None:
    found = fetch.parse_challenges(
        'Bearer realm="https://auth.test/token",service="reg",'
        'scope="repository:a/b:pull,push", Basic realm="x \\"y\\""'
    )
    assert found == [
        fetch.Challenge(
            "bearer",
            {
                "realm": "https://auth.test/token",
                "service": "reg",
                "scope": "repository:a/b:pull,push",
            },
        ),
        fetch.Challenge("basic", {"realm": 'x "y"'}),
    ]


def test_waiting_status_keeps_the_other_containers() -> None:
    pod: dict[str, Any] = {
        "spec": {
            "initContainers": [{"name": "init", "image": "a"}],
            "containers": [{"name": "main", "image": "b"}],
        },
        "status": {"containerStatuses": [{"name": "main", "x": 1}]},
    }
    patch = waiting_status(pod, "init", "ErrImagePull", "boom")
    assert patch["initContainerStatuses"][0]["state"] == {
        "waiting": {"reason": "ErrImagePull", "message": "boom"}
    }
    assert patch["containerStatuses"] == [{"name": "main", "x": 1}]


# ---------------------------------------------------------------------------
# real pulls from an in-process registry


@pytest.fixture
def registry() -> Iterator[Registry]:
    served = fake_registry.serve(Registry())
    yield served
    served.stop()


def containerd_with(tmp_path: Path, text: str = "") -> ctr.Containerd:
    config = registries.parse(text) if text else None
    daemon = ctr.Containerd(
        str(tmp_path / "node"), str(tmp_path / "ctr.sock"), registries=config
    )
    daemon.start()
    return daemon


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ctr.Containerd]:
    daemon = containerd_with(tmp_path)
    yield daemon
    daemon.stop()


def host_of(registry: Registry) -> str:
    return registry.url.split("://", 1)[1]


def test_a_real_pull_verifies_and_stores_every_blob(
    registry: Registry, node: ctr.Containerd, tmp_path: Path
) -> None:
    image = make_image("hello")
    registry.push("team/app", "1.0", image)
    ref = f"{host_of(registry)}/team/app:1.0"
    image_id = node.pull(ref)
    assert image_id == digest(image.config)
    index = digest(image.index)
    names = sorted(node.store.list("k8s.io"))
    assert names == sorted([ref, f"{host_of(registry)}/team/app@{index}", image_id])
    # Exactly what containerd asks for: the tag, then everything by digest
    # (never the other platform's manifest).
    assert registry.paths() == [
        "/v2/team/app/manifests/1.0",
        f"/v2/team/app/manifests/{index}",
        f"/v2/team/app/manifests/{digest(image.manifest)}",
        f"/v2/team/app/blobs/{digest(image.config)}",
        f"/v2/team/app/blobs/{digest(image.layer)}",
    ]
    head = registry.requests[0]
    assert head[0] == "HEAD"
    assert head[2]["accept"] == fetch.MANIFEST_ACCEPT
    for blob in image.blobs:
        assert node.content.read(blob) == image.blobs[blob]
    size = len(image.index) + len(image.manifest) + len(image.config)
    size += len(image.layer)
    assert node_images(node)[0]["sizeBytes"] == size
    log = Path(node.log_path).read_text()
    assert f'Pulled image \\"{ref}\\" with image id \\"{image_id}\\"' in log
    # ctr images export writes the real bytes, and they import again.
    done = run_ctr(node, "images", "export", "--local", "-", ref)
    assert done.returncode == 0, done.stderr
    files = members(done.stdout)
    assert files[f"blobs/sha256/{index[7:]}"] == image.index
    assert files[f"blobs/sha256/{digest(image.layer)[7:]}"] == image.layer
    entry = json.loads(files["index.json"])["manifests"][0]
    assert entry["digest"] == index
    again = containerd_with(tmp_path / "other")
    try:
        done = run_ctr(again, "images", "import", "-", stdin=done.stdout)
        assert done.returncode == 0, done.stderr
        assert ref in again.store.list("k8s.io")
    finally:
        again.stop()
    # Only this platform was fetched: all platforms cannot be exported.
    done = run_ctr(node, "images", "export", "--local", "--all-platforms", "-", ref)
    assert done.returncode == 1
    assert f"content digest {image.other_manifest}: not found" in done.stderr.decode()


def test_a_pull_by_digest_records_no_tag(
    registry: Registry, node: ctr.Containerd
) -> None:
    image = make_image("by digest")
    registry.push("app", "v1", image)
    index = digest(image.index)
    ref = f"{host_of(registry)}/app@{index}"
    node.pull(ref)
    assert sorted(node.store.list("k8s.io")) == sorted([ref, digest(image.config)])
    assert registry.paths()[0] == f"/v2/app/manifests/{index}"


def test_a_mirror_that_fails_falls_back_to_the_next_endpoint(
    registry: Registry, tmp_path: Path
) -> None:
    image = make_image("mirrored")
    registry.push("mirrorproject/app", "2", image)
    node = containerd_with(
        tmp_path,
        f"""
mirrors:
  upstream.test:5000:
    endpoint:
      - http://no-such-host.invalid:5000
      - {registry.url}
    rewrite:
      "^team/(.*)": "mirrorproject/$1"
""",
    )
    try:
        node.pull("upstream.test:5000/team/app:2")
    finally:
        node.stop()
    assert registry.paths()[0] == (
        "/v2/mirrorproject/app/manifests/2?ns=upstream.test%3A5000"
    )
    log = Path(node.log_path).read_text()
    assert 'msg="trying next host" error="failed to do request: Head ' in log
    assert "lookup no-such-host.invalid on " in log
    assert "no such host" in log
    assert "upstream.test:5000/team/app:2" in node.store.list("k8s.io")


def test_a_failed_pull_reports_containerds_errors(
    registry: Registry, tmp_path: Path
) -> None:
    node = containerd_with(
        tmp_path, f"mirrors:\n  missing.test:\n    endpoint: [{registry.url}]\n"
    )
    try:
        with pytest.raises(ctr.PullError) as caught:
            node.pull("missing.test/app:1")
    finally:
        node.stop()
    text = str(caught.value)
    # The mirror's 404 outranks the default endpoint's lookup failure.
    assert text == (
        'failed to pull and unpack image "missing.test/app:1": failed to resolve '
        'reference "missing.test/app:1": missing.test/app:1: not found'
    )
    assert caught.value.not_found
    log = Path(node.log_path).read_text()
    assert 'msg="trying next host after status: 404 Not Found"' in log
    assert 'level=error msg="PullImage \\"missing.test/app:1\\" failed"' in log


def test_a_blob_that_does_not_match_its_digest_fails_the_pull(
    registry: Registry, node: ctr.Containerd
) -> None:
    image = make_image("corrupt")
    registry.push("app", "1", image)
    registry.corrupt.add(digest(image.layer))
    with pytest.raises(ctr.PullError, match="unexpected commit digest sha256:"):
        node.pull(f"{host_of(registry)}/app:1")
    assert not node.content.has(digest(image.layer))
    assert node.store.list("k8s.io") == {}


def test_basic_auth_from_configs(registry: Registry, tmp_path: Path) -> None:
    registry.basic = ("alice", "wonder")
    registry.push("app", "1", make_image("basic"))
    host = host_of(registry)
    refused = containerd_with(tmp_path / "a")
    try:
        with pytest.raises(ctr.PullError, match="no basic auth credentials"):
            refused.pull(f"{host}/app:1")
    finally:
        refused.stop()
    node = containerd_with(
        tmp_path / "b",
        f"configs:\n  '{host}':\n    auth: {{username: alice, password: wonder}}\n",
    )
    try:
        node.pull(f"{host}/app:1")
    finally:
        node.stop()
    assert registry.requests[-1][2]["authorization"].startswith("Basic ")


def test_bearer_tokens_from_the_challenges_realm(
    registry: Registry, node: ctr.Containerd
) -> None:
    registry.bearer = True
    registry.push("app", "1", make_image("bearer"))
    node.pull(f"{host_of(registry)}/app:1")
    token = [p for p in registry.paths() if p.startswith("/token")]
    assert len(token) == 1
    assert "service=fake-registry" in token[0]
    assert registry.requests[-1][2]["authorization"] == f"Bearer {fake_registry.TOKEN}"


def test_tls_endpoints_verify_against_the_configured_ca(tmp_path: Path) -> None:
    ca = new_ca("fake-registry-ca")
    pair = serving_cert(ca, ["127.0.0.1"])
    cert, key = pair.save(str(tmp_path / "tls"), "registry")
    ca_file = tmp_path / "tls" / "ca.pem"
    ca_file.write_bytes(ca.cert)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    registry = fake_registry.serve(Registry(), context)
    try:
        registry.push("app", "1", make_image("tls"))
        host = host_of(registry)
        mirror = f"mirrors:\n  tls.test:\n    endpoint: [{registry.url}]\n"
        untrusted = containerd_with(tmp_path / "a", mirror)
        try:
            with pytest.raises(ctr.PullError) as caught:
                untrusted.pull("tls.test/app:1")
        finally:
            untrusted.stop()
        log = Path(untrusted.log_path).read_text()
        assert "x509: certificate signed by unknown authority" in log
        assert "tls.test/app:1" in str(caught.value)
        trusted = containerd_with(
            tmp_path / "b",
            mirror + f"configs:\n  '{host}':\n    tls: {{ca_file: {ca_file}}}\n",
        )
        try:
            trusted.pull("tls.test/app:1")
        finally:
            trusted.stop()
    finally:
        registry.stop()


def test_public_registries_without_a_mirror_stay_simulated(
    node: ctr.Containerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctr, "PULL_SECONDS", 0)
    node.pull("ghcr.io/org/tool:1")
    entry = node.store.list("k8s.io")["ghcr.io/org/tool:1"]
    assert "content" not in entry


# ---------------------------------------------------------------------------
# the kubelet's back-off


class Recorded:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.waits: list[tuple[str, str]] = []

    def event(
        self, pod: Any, reason: str, message: str, *, warning: bool = False
    ) -> None:
        self.events.append((reason, message))

    def waiting(self, pod: Any, container: str, reason: str, message: str) -> None:
        self.waits.append((container, reason))


def test_failed_pulls_back_off_as_the_kubelet_does(
    registry: Registry, tmp_path: Path
) -> None:
    node = containerd_with(
        tmp_path, f"mirrors:\n  gone.test:\n    endpoint: [{registry.url}]\n"
    )
    now = [1000.0]
    image = "gone.test/app:1"
    pods = [
        {
            "metadata": {"uid": "u1", "name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": image}]},
        }
    ]
    seen = Recorded()
    puller = ImagePuller(
        node, lambda: pods, lambda images: True, "registry.k8s.io/pause:3.10",
        seen, lambda: now[0],
    )  # fmt: skip
    try:
        node.pull("registry.k8s.io/pause:3.10", sandbox=True)
        puller.sync()
        assert seen.waits == [("c", "ErrImagePull")]
        failed = [m for r, m in seen.events if r == "Failed"]
        assert failed[0].startswith(
            f'Failed to pull image "{image}": rpc error: code = NotFound desc = '
            f'failed to pull and unpack image "{image}": failed to resolve reference'
        )
        assert failed[1] == "Error: ErrImagePull"
        asked = len(registry.requests)
        puller.sync()  # within 10 s: backs off, once
        puller.sync()
        assert seen.waits[-1] == ("c", "ImagePullBackOff")
        assert seen.events[-2:] == [
            ("BackOff", f'Back-off pulling image "{image}"'),
            ("Failed", "Error: ImagePullBackOff"),
        ]
        assert len(registry.requests) == asked
        delays = []
        for _ in range(7):
            delay = puller.backoff[("u1", image)].delay
            delays.append(delay)
            now[0] += delay
            puller.sync()  # the back-off is over: Pulling again, and it fails
            assert ("Pulling", f'Pulling image "{image}"') in seen.events[-4:]
        assert delays == [BACKOFF_INITIAL, 20, 40, 80, 160, BACKOFF_MAX, BACKOFF_MAX]
        registry.push("app", "1", make_image("now there"))
        now[0] += BACKOFF_MAX
        puller.sync()
        assert node.has(image)
        assert ("u1", image) not in puller.backoff
    finally:
        node.stop()


def test_a_lone_manifest_of_another_platform_is_refused(
    registry: Registry, node: ctr.Containerd
) -> None:
    """A tag naming one manifest (no index): its config says the platform."""
    image = make_image("elsewhere")
    config = json.loads(image.config)
    config["architecture"] = "s390x" if config["architecture"] != "s390x" else "arm64"
    other = json.dumps(config).encode()
    manifest = json.loads(image.manifest)
    manifest["config"].update(digest=digest(other), size=len(other))
    lone = json.dumps(manifest).encode()
    registry.repos["app"] = {digest(b): b for b in (lone, other, image.layer)}
    registry.tags["app"] = {"1": digest(lone)}
    with pytest.raises(ctr.PullError, match="no match for platform in manifest"):
        node.pull(f"{host_of(registry)}/app:1")
    assert node.store.list("k8s.io") == {}
    registry.repos["app"][digest(image.manifest)] = image.manifest
    registry.repos["app"][digest(image.config)] = image.config
    registry.tags["app"]["2"] = digest(image.manifest)
    node.pull(f"{host_of(registry)}/app:2")  # this platform's lone manifest
