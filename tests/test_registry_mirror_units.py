"""The registry mirror's decisions, without an engine: settings, merge, life cycle.

What only a real registry and real pulls can tell (that blobs are fetched
once) is in test_registry_mirror.py; here the fake engine plays Docker.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from pytest_k3s import labels
from pytest_k3s.engine.node_container import NodeContainer
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import RegistryMirrorWarning
from pytest_k3s.errors import SpecError
from pytest_k3s.lifecycle import mirror
from pytest_k3s.lifecycle.start import StartOptions
from pytest_k3s.lifecycle.start import start_cluster
from pytest_k3s.plugin import SETTINGS_KEY
from pytest_k3s.run.leftovers import sweep_leftovers
from pytest_k3s.settings import Settings
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import RegistryMirror
from tests.fake_engine import FakeApi
from tests.fake_engine import FakeEngine


REGISTRY = "registry:test"
MIRROR = RegistryMirror(image=REGISTRY, upstreams=("docker.io", "ghcr.io"))
SPEC = ClusterSpec(
    image="k3s:test", image_cache=False, wait_for_coredns=False, registry_mirror=MIRROR
)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    return FakeApi().install(monkeypatch)


@pytest.fixture(autouse=True)
def _forget_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror, "_warned", set())


def settings(pytester: pytest.Pytester, *args: str) -> Settings:
    return pytester.parseconfigure(*args).stash[SETTINGS_KEY]


# settings ------------------------------------------------------------------


def test_the_mirror_is_off_unless_asked(pytester: pytest.Pytester) -> None:
    assert settings(pytester).spec.registry_mirror is None
    assert settings(pytester, "--k3s-registry-mirror=off").spec.registry_mirror is None


def test_on_keeps_blobs_in_a_volume_and_mirrors_docker_hub(
    pytester: pytest.Pytester,
) -> None:
    found = settings(pytester, "--k3s-registry-mirror=on").spec.registry_mirror
    assert found == RegistryMirror()
    assert found.storage is None
    assert found.remotes() == (("docker.io", "https://registry-1.docker.io"),)


def test_a_directory_is_taken_from_where_pytest_started(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_K3S_REGISTRY_MIRROR", "cache/mirror")
    monkeypatch.setenv("PYTEST_K3S_REGISTRY_MIRROR_UPSTREAMS", "docker.io, quay.io")
    found = settings(pytester, "--k3s-registry-image=mirror:1").spec
    assert found.registry_mirror == RegistryMirror(
        storage=str(pytester.path / "cache/mirror"),
        image="mirror:1",
        upstreams=("docker.io", "quay.io"),
    )
    assert "registry mirror of docker.io,quay.io in " in settings(pytester).header()


def test_a_wrong_upstream_is_a_usage_error_naming_it(
    pytester: pytest.Pytester,
) -> None:
    with pytest.raises(pytest.UsageError, match="'Docker Hub' is not a registry"):
        settings(
            pytester,
            "--k3s-registry-mirror=on",
            "--k3s-registry-mirror-upstreams=Docker Hub",
        )


@pytest.mark.parametrize(
    ("upstreams", "message"),
    [
        ((), "at least one upstream"),
        (("quay.io=ftp://quay.io",), "'ftp://quay.io' is not a registry URL"),
        (("quay.io=https://quay.io/v2",), "is not a registry URL"),
    ],
)
def test_upstreams_are_checked(upstreams: tuple[str, ...], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        RegistryMirror(upstreams=upstreams)


def test_the_mirror_does_not_change_which_cluster_a_spec_is() -> None:
    assert ClusterSpec(registry_mirror=MIRROR).digest() == ClusterSpec().digest()


# registries.yaml -----------------------------------------------------------

HUB = mirror.Mirror("docker.io", "https://registry-1.docker.io")
QUAY = mirror.Mirror("quay.io", "https://quay.io")


def test_a_registry_without_an_entry_keeps_the_users_wildcard_after_ours() -> None:
    user = {"mirrors": {"*": {"endpoint": ["https://corp.example"]}}}
    merged = yaml.safe_load(mirror.registries_yaml(yaml.safe_dump(user), [HUB]) or "")
    assert merged["mirrors"] == {
        "*": {"endpoint": ["https://corp.example"]},
        "docker.io": {
            "endpoint": [
                "http://pytest-k3s-mirror-docker.io:5000",
                "https://corp.example",
            ]
        },
    }
    rewriting = {"mirrors": {"*": {"endpoint": ["https://m"], "rewrite": {"a": "b"}}}}
    text = mirror.registries_yaml(yaml.safe_dump(rewriting), [HUB]) or ""
    assert yaml.safe_load(text) == rewriting


def test_mirrors_come_first_before_the_users_endpoints() -> None:
    user = yaml.safe_dump(
        {
            "mirrors": {"docker.io": {"endpoint": ["https://corp.example"]}},
            "configs": {"corp.example": {"auth": {"username": "u", "password": "p"}}},
        }
    )
    merged = yaml.safe_load(mirror.registries_yaml(user, [HUB, QUAY]) or "")
    assert merged["mirrors"] == {
        "docker.io": {
            "endpoint": [
                "http://pytest-k3s-mirror-docker.io:5000",
                "https://corp.example",
            ]
        },
        "quay.io": {"endpoint": ["http://pytest-k3s-mirror-quay.io:5000"]},
    }
    assert merged["configs"] == {
        "corp.example": {"auth": {"username": "u", "password": "p"}}
    }


def test_a_registry_the_user_rewrites_is_left_alone() -> None:
    user = {
        "mirrors": {"docker.io": {"endpoint": ["https://m"], "rewrite": {"a": "b"}}}
    }
    merged = yaml.safe_load(mirror.registries_yaml(yaml.safe_dump(user), [HUB]) or "")
    assert merged == user


def test_no_mirror_leaves_the_users_text_as_it_is() -> None:
    assert (
        mirror.registries_yaml("# mine\nmirrors: {}\n", []) == "# mine\nmirrors: {}\n"
    )
    assert mirror.registries_yaml(None, []) is None


def test_a_registries_text_that_is_no_mapping_is_kept_with_a_warning() -> None:
    with pytest.warns(RegistryMirrorWarning, match="not a YAML mapping"):
        assert mirror.registries_yaml("- a list", [HUB]) == "- a list"


def test_mirror_names_are_container_and_host_names() -> None:
    local = mirror.Mirror("registry.local:5000", "http://registry.local:5000")
    assert local.container == "pytest-k3s-mirror-registry.local-5000"
    assert local.endpoint == "http://pytest-k3s-mirror-registry.local-5000:5000"


# life cycle on a fake engine -------------------------------------------------


def test_a_start_starts_one_mirror_per_upstream_and_connects_it(
    api: FakeApi, tmp_path: Path
) -> None:
    engine = FakeEngine()
    started = start_cluster(engine, SPEC, StartOptions(name="k3s-one"))
    assert f"pull {REGISTRY}" in engine.calls
    mirrors = engine.containers({labels.MIRROR: ""})
    assert sorted(m.name for m in mirrors) == [
        "pytest-k3s-mirror-docker.io",
        "pytest-k3s-mirror-ghcr.io",
    ]
    assert engine.calls.index("network 0-pytest-k3s-mirror") < engine.calls.index(
        "start pytest-k3s-mirror-docker.io"
    )
    connects = [c for c in engine.calls if c.startswith("connect")]
    assert connects == [
        "connect pytest-k3s-mirror-docker.io",
        "connect pytest-k3s-mirror-ghcr.io",
    ]
    server = next(iter(n for n in started.nodes if n.role == "server"))
    written = engine.containers_by_id[server.container_id].files
    config = yaml.safe_load(written["/etc/rancher/k3s/registries.yaml"])
    assert config["mirrors"]["ghcr.io"] == {
        "endpoint": ["http://pytest-k3s-mirror-ghcr.io:5000"]
    }
    assert sorted(engine.volumes) == [
        "pytest-k3s-mirror-docker.io",
        "pytest-k3s-mirror-ghcr.io",
    ]


def test_the_second_cluster_finds_the_mirror_running(api: FakeApi) -> None:
    engine = FakeEngine(images=("k3s:test", REGISTRY))
    start_cluster(engine, SPEC, StartOptions(name="k3s-one"))
    before = len(engine.containers({labels.MIRROR: ""}))
    engine.calls.clear()
    start_cluster(engine, SPEC, StartOptions(name="k3s-two"))
    assert len(engine.containers({labels.MIRROR: ""})) == before
    assert not [c for c in engine.calls if "start pytest-k3s-mirror" in c]
    assert "network 0-pytest-k3s-mirror" not in engine.calls
    assert [c for c in engine.calls if c.startswith("connect")] == [
        "connect pytest-k3s-mirror-docker.io",
        "connect pytest-k3s-mirror-ghcr.io",
    ]


def test_a_stopped_mirror_is_made_again_on_its_blobs(api: FakeApi) -> None:
    """Made again, not started: it may name networks removed while it was down."""
    engine = FakeEngine(images=("k3s:test", REGISTRY))
    start_cluster(engine, SPEC, StartOptions(name="k3s-one"))
    old = {m.id for m in engine.containers({labels.MIRROR: ""})}
    for found in engine.containers({labels.MIRROR: ""}):
        engine.stop_container(found.id)
    assert len(mirror.stopped(engine, MIRROR)) == 2
    engine.calls.clear()
    start_cluster(engine, SPEC, StartOptions(name="k3s-two"))
    assert mirror.stopped(engine, MIRROR) == []
    assert not old & {m.id for m in engine.containers({labels.MIRROR: ""})}
    assert "start pytest-k3s-mirror-docker.io" in engine.calls
    assert not [c for c in engine.calls if c.startswith("restart")]
    assert sorted(engine.volumes) == [  # the blobs stay
        "pytest-k3s-mirror-docker.io",
        "pytest-k3s-mirror-ghcr.io",
    ]


def test_a_mirror_made_again_that_crashes_is_a_warning(api: FakeApi) -> None:
    engine = FakeEngine(images=("k3s:test", REGISTRY))
    start_cluster(engine, SPEC, StartOptions(name="k3s-one"))
    for found in engine.containers({labels.MIRROR: "ghcr.io"}):
        engine.stop_container(found.id)
    engine.crash.add("pytest-k3s-mirror-ghcr.io")
    with pytest.warns(RegistryMirrorWarning, match="ghcr.io exited"):
        started = start_cluster(engine, SPEC, StartOptions(name="k3s-two"))
    written = engine.containers_by_id[started.nodes[0].container_id].files
    config = yaml.safe_load(written["/etc/rancher/k3s/registries.yaml"])
    assert list(config["mirrors"]) == ["docker.io"]


def test_warnings_are_never_errors(api: FakeApi) -> None:
    """Under -W error (filterwarnings = error) the cluster still starts."""
    engine = FakeEngine(crash={"pytest-k3s-mirror-ghcr.io"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error")
        start_cluster(engine, SPEC, StartOptions(name="k3s-one"))
    assert [w.category for w in caught] == [RegistryMirrorWarning]


def test_anything_going_wrong_is_a_warning(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(engine, "create_volume", broken)
    with pytest.warns(RegistryMirrorWarning, match="disk full"):
        start_cluster(engine, SPEC, StartOptions(name="k3s-one"))


def test_a_mirror_that_cannot_start_costs_a_warning_not_the_cluster(
    api: FakeApi,
) -> None:
    engine = FakeEngine(crash={"pytest-k3s-mirror-ghcr.io"})
    with pytest.warns(RegistryMirrorWarning) as caught:
        started = start_cluster(engine, SPEC, StartOptions(name="k3s-one"))
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(
        "registry mirror of ghcr.io is not used: pytest-k3s-mirror-ghcr.io exited "
        '(code 2): panic: Get "x/v2/": no such host;'
    )
    server = started.nodes[0]
    written = engine.containers_by_id[server.container_id].files
    config = yaml.safe_load(written["/etc/rancher/k3s/registries.yaml"])
    assert list(config["mirrors"]) == ["docker.io"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process
        start_cluster(engine, SPEC, StartOptions(name="k3s-two"))


def test_mirror_settings_that_differ_are_used_with_a_warning(api: FakeApi) -> None:
    engine = FakeEngine(images=("k3s:test", REGISTRY, "other:1"))
    start_cluster(engine, SPEC, StartOptions(name="k3s-one"))
    other = ClusterSpec(
        image="k3s:test",
        image_cache=False,
        wait_for_coredns=False,
        registry_mirror=RegistryMirror(image="other:1"),
    )
    with pytest.warns(RegistryMirrorWarning, match="runs with other settings"):
        start_cluster(engine, other, StartOptions(name="k3s-two"))
    assert len(engine.containers({labels.MIRROR: "docker.io"})) == 1


def test_docker_hub_credentials_reach_the_mirror_only(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_K3S_REGISTRY_MIRROR_USERNAME", "me")
    monkeypatch.setenv("PYTEST_K3S_REGISTRY_MIRROR_PASSWORD", "dckr_pat_secret")
    engine = FakeEngine(images=("k3s:test", REGISTRY))
    start_cluster(engine, SPEC, StartOptions(name="k3s-one"))
    (hub,) = engine.containers({labels.MIRROR: "docker.io"})
    (ghcr,) = engine.containers({labels.MIRROR: "ghcr.io"})
    assert engine.environment(hub.id)["REGISTRY_PROXY_PASSWORD"] == "dckr_pat_secret"
    assert "REGISTRY_PROXY_PASSWORD" not in engine.environment(ghcr.id)
    everywhere = [
        *(str(c.node.labels) for c in engine.containers_by_id.values()),
        *(str(c.node.files) for c in engine.containers_by_id.values()),
        *map(str, mirror.status(engine)),
    ]
    assert not [text for text in everywhere if "dckr_pat_secret" in text]


def test_the_mirror_is_no_cluster_to_sweeps_and_rm_removes_it(api: FakeApi) -> None:
    engine = FakeEngine(images=("k3s:test", REGISTRY))
    started = start_cluster(engine, SPEC, StartOptions(name="k3s-one"))
    engine.remove_cluster(started.name)
    for found in engine.containers({labels.MIRROR: ""}):  # its creator is gone
        container = engine.containers_by_id[found.id]
        gone = {**container.node.labels, labels.OWNER: "host/1/0"}
        container.node = replace(container.node, labels=gone)
    assert mirror.NAME not in engine.labelled()
    assert sweep_leftovers(engine, include_kept=True, reusable=True) == []
    assert len(engine.containers({labels.MIRROR: ""})) == 2
    assert mirror.remove(engine, ["ghcr.io"]) == [
        "container pytest-k3s-mirror-ghcr.io",
        "volume pytest-k3s-mirror-ghcr.io",
    ]
    assert [m.name for m in engine.containers({labels.MIRROR: ""})] == [
        "pytest-k3s-mirror-docker.io"
    ]
    removed = mirror.remove(engine)
    assert sorted(removed) == [
        "container pytest-k3s-mirror-docker.io",
        "network 0-pytest-k3s-mirror",
        "volume pytest-k3s-mirror-docker.io",
    ]
    assert engine.names() == []


@pytest.mark.parametrize(
    "name", ["pytest-k3s-mirror", "pytest-k3s-mirror-x", "0", "0-a"]
)
def test_names_the_mirror_needs_are_no_cluster_names(name: str) -> None:
    with pytest.raises(SpecError, match="is reserved"):
        StartOptions(name=name)
    StartOptions(name="0a")  # sorts after the mirror's network


def test_a_mirror_another_process_made_first_is_used(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One that does not share our lock (another cache directory) won the race."""
    engine = FakeEngine(images=("k3s:test", REGISTRY))
    made = engine.start_proxy

    def race(container: NodeContainer) -> str:
        made(container)  # the other process's
        raise K3sError(
            f'Conflict. The container name "/{container.name}" is already in use'
        )

    monkeypatch.setattr(engine, "start_proxy", race)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        start_cluster(engine, SPEC, StartOptions(name="k3s-one"))
    assert len(engine.containers({labels.MIRROR: ""})) == 2


def test_concurrent_starts_make_one_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's lock: two processes (here threads) asking at once."""
    import threading
    import time

    engine = FakeEngine(images=())
    has_image = engine.has_image

    def slow(image: str) -> bool:  # between "none there" and "make one"
        time.sleep(0.2)
        return has_image(image)

    monkeypatch.setattr(engine, "has_image", slow)
    found: list[tuple[mirror.Mirror, ...]] = []
    threads = [
        threading.Thread(
            target=lambda: found.append(mirror.ensure(engine, MIRROR, environ={}))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found[0] == found[1] == mirror.mirrors_of(MIRROR)
    starts = [c for c in engine.calls if c.startswith("start ")]
    assert sorted(starts) == [
        "start pytest-k3s-mirror-docker.io",
        "start pytest-k3s-mirror-ghcr.io",
    ]
