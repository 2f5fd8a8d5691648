"""A cluster's own registry without an engine: settings, merge, start and handle.

What only Docker, a real registry and the double's real pulls can tell (a
push, pods pulling from it) is in test_cluster_registry.py; here the fake
engine plays Docker.
"""

from __future__ import annotations

import pytest
import yaml

from pytest_k3s import K3sCluster
from pytest_k3s import labels
from pytest_k3s.engine.no_engine import NoEngine
from pytest_k3s.engine.node_container import REGISTRIES_PATH
from pytest_k3s.engine.protocol import node_containers
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.errors import ImageUnavailableError
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import NoEngineError
from pytest_k3s.errors import SpecError
from pytest_k3s.lifecycle import registry
from pytest_k3s.lifecycle.start import StartOptions
from pytest_k3s.lifecycle.start import start_cluster
from pytest_k3s.marker import spec_for_markers
from pytest_k3s.plugin import SETTINGS_KEY
from pytest_k3s.run import reuse
from pytest_k3s.settings import Settings
from pytest_k3s.spec import DEFAULT_REGISTRY_IMAGE
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import PortMapping
from pytest_k3s.spec import RegistryMirror
from tests.fake_engine import FakeApi
from tests.fake_engine import FakeEngine


IMAGE = "registry:test"
SPEC = ClusterSpec(
    image="k3s:test",
    agents=1,
    image_cache=False,
    wait_for_coredns=False,
    registry=True,
    registry_image=IMAGE,
)
#: Where the fake engine publishes a container's port: 40000 + its id's number.
FAKE_PORT = 40000


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    return FakeApi().install(monkeypatch)


def settings(pytester: pytest.Pytester, *args: str) -> Settings:
    return pytester.parseconfigure(*args).stash[SETTINGS_KEY]


def started(engine: FakeEngine, spec: ClusterSpec = SPEC) -> K3sCluster:
    found = start_cluster(engine, spec, StartOptions(name="k3s-reg"))
    return K3sCluster.from_started(found, engine)


# the spec, the marker and the knobs ---------------------------------------


def test_a_registry_makes_another_cluster_its_image_does_not() -> None:
    plain = ClusterSpec()
    assert ClusterSpec(registry=True).digest() != plain.digest()
    assert ClusterSpec(registry_image="mine:1").digest() == plain.digest()
    assert plain.registry is False
    assert plain.registry_image == DEFAULT_REGISTRY_IMAGE


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"registry": "yes"}, "registry must be True or False, not 'yes'"),
        ({"registry_image": "a b"}, "registry_image 'a b' is not a valid image"),
    ],
)
def test_the_spec_checks_its_registry_fields(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        ClusterSpec(**changes)  # type: ignore[arg-type]


def test_the_marker_asks_for_a_registry() -> None:
    found = spec_for_markers(ClusterSpec(), [pytest.mark.k3s(registry=True).mark], "t")
    assert found.registry is True
    with pytest.raises(
        pytest.UsageError, match=r"t: @pytest\.mark\.k3s: registry must"
    ):
        spec_for_markers(ClusterSpec(), [pytest.mark.k3s(registry=1).mark], "t")


def test_the_knobs_ask_for_a_registry(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings(pytester).spec.registry is False
    assert settings(pytester, "--k3s-registry").spec.registry is True
    monkeypatch.setenv("PYTEST_K3S_REGISTRY", "true")
    assert settings(pytester).spec.registry is True
    monkeypatch.setenv("PYTEST_K3S_REGISTRY", "maybe")
    with pytest.raises(pytest.UsageError, match="PYTEST_K3S_REGISTRY=maybe"):
        settings(pytester)


def test_one_registry_image_knob_serves_the_mirror_and_the_clusters(
    pytester: pytest.Pytester,
) -> None:
    spec = settings(
        pytester, "--k3s-registry-image=reg:1", "--k3s-registry-mirror=on"
    ).spec
    assert spec.registry_image == "reg:1"
    assert spec.registry_mirror == RegistryMirror(image="reg:1")


# registries.yaml -------------------------------------------------------------


def test_both_names_of_the_registry_lead_to_it_on_the_network() -> None:
    assert registry.endpoints("k3s-reg", "localhost:20001") == {
        "localhost:20001": "http://k3s-reg-registry:5000",
        "k3s-reg-registry:5000": "http://k3s-reg-registry:5000",
    }


def test_every_node_gets_the_registry_merged_into_the_users_registries(
    api: FakeApi,
) -> None:
    user = {
        "mirrors": {
            "docker.io": {"endpoint": ["https://corp.example"]},
            "k3s-reg-registry:5000": {"endpoint": ["http://mine.example"]},
        },
        "configs": {"corp.example": {"auth": {"username": "u", "password": "p"}}},
    }
    engine = FakeEngine(images=("k3s:test", IMAGE))
    cluster = started(engine, ClusterSpec(**{**vars(SPEC), "registries": user}))
    port = FAKE_PORT + 1  # the registry is the engine's first container
    ours = "http://k3s-reg-registry:5000"
    for node in cluster.nodes:
        files = engine.containers_by_id[node.container_id].files
        assert yaml.safe_load(files[REGISTRIES_PATH]) == {
            "mirrors": {
                "docker.io": {"endpoint": ["https://corp.example"]},
                f"localhost:{port}": {"endpoint": [ours]},
                "k3s-reg-registry:5000": {"endpoint": [ours, "http://mine.example"]},
            },
            "configs": user["configs"],
        }


def test_registries_that_are_no_mapping_fail_the_start_saying_so(
    api: FakeApi,
) -> None:
    engine = FakeEngine(images=("k3s:test", IMAGE))
    spec = ClusterSpec(**{**vars(SPEC), "registries": "- a list"})
    with pytest.raises(SpecError, match="not a YAML mapping, so the cluster's reg"):
        started(engine, spec)
    assert engine.names() == []


# the start and the handle ------------------------------------------------------


def test_the_registry_starts_before_the_nodes_and_is_no_node(api: FakeApi) -> None:
    engine = FakeEngine(images=("k3s:test",))
    cluster = started(engine)
    assert engine.calls[:3] == [
        "pull registry:test",
        "network k3s-reg",
        "start k3s-reg-registry",
    ]
    assert [n.name for n in cluster.nodes] == ["k3s-reg-server-0", "k3s-reg-agent-0"]
    assert [c.name for c in node_containers(engine, "k3s-reg")] == [
        "k3s-reg-server-0",
        "k3s-reg-agent-0",
    ]
    found = engine.containers({labels.ROLE: labels.REGISTRY_ROLE})
    assert [c.name for c in found] == ["k3s-reg-registry"]
    container = engine.containers_by_id[found[0].id].node
    assert container.image == IMAGE
    assert container.network == "k3s-reg"
    assert container.labels[labels.CLUSTER] == "k3s-reg"
    assert container.labels[labels.RUN] == engine.network_labels["k3s-reg"][labels.RUN]
    assert list(container.ports) == [("127.0.0.1", PortMapping(5000))]
    cluster.stop()
    assert engine.names() == [], "the cluster's removal takes the registry"


def test_the_registry_stays_on_loopback_when_ports_are_widened(api: FakeApi) -> None:
    """It has no authentication, and only the engine's pushes use it."""
    engine = FakeEngine(images=("k3s:test", IMAGE))
    cluster = started(engine, ClusterSpec(**{**vars(SPEC), "ports_bind": "0.0.0.0"}))
    (found,) = engine.containers({labels.ROLE: labels.REGISTRY_ROLE})
    assert [b for b, _ in engine.containers_by_id[found.id].node.ports] == ["127.0.0.1"]
    cluster.stop()


def test_the_handle_pushes_through_the_engine(api: FakeApi) -> None:
    engine = FakeEngine(images=("k3s:test", IMAGE, "my-app:dev"))
    cluster = started(engine)
    host = f"localhost:{FAKE_PORT + 1}"
    assert cluster.registry.host == host
    assert cluster.registry.image("team/app:1") == f"{host}/team/app:1"
    assert cluster.registry.push("my-app:dev") == f"{host}/my-app:dev"
    assert cluster.registry.push("my-app:dev", "other:2") == f"{host}/other:2"
    assert engine.pushed == [
        ("my-app:dev", f"{host}/my-app:dev"),
        ("my-app:dev", f"{host}/other:2"),
    ]
    with pytest.raises(ImageUnavailableError, match="'gone:1' is not on the fake"):
        cluster.registry.push("gone:1")
    with pytest.raises(K3sError, match=r"'ghcr\.io/a/b:1' is not an image name within"):
        cluster.registry.image("ghcr.io/a/b:1")
    assert "container k3s-reg-registry: running" in cluster.container_states()


@pytest.mark.parametrize(
    ("reference", "name"),
    [
        ("my-app", "my-app:latest"),
        ("my-app:dev", "my-app:dev"),
        ("team/app:1", "team/app:1"),
        ("localhost:5000/app:1", "app:1"),
        ("ghcr.io/team/app@sha256:" + "0" * 64, "team/app:latest"),
        ("registry.example.com:443/app:2@sha256:" + "0" * 64, "app:2"),
    ],
)
def test_an_image_is_pushed_under_its_own_name_without_its_registry(
    reference: str, name: str
) -> None:
    assert registry.default_name(reference) == name


def test_an_attached_handle_finds_the_registry_by_its_label(api: FakeApi) -> None:
    engine = FakeEngine(images=("k3s:test", IMAGE))
    cluster = started(engine)
    attached = K3sCluster.attach(
        name="k3s-reg",
        spec=SPEC,
        kubeconfig_path=cluster.kubeconfig_path,
        engine=engine,
    )
    assert [n.name for n in attached.nodes] == [n.name for n in cluster.nodes]
    assert attached.registry == cluster.registry
    cluster.stop()


def test_an_added_agent_pulls_from_the_registry_too(api: FakeApi) -> None:
    engine = FakeEngine(images=("k3s:test", IMAGE))
    cluster = started(engine)
    added = cluster.add_agent(timeout=5)
    files = engine.containers_by_id[added.container_id].files
    assert cluster.registry.host in yaml.safe_load(files[REGISTRIES_PATH])["mirrors"]
    cluster.stop()


def test_a_reusable_cluster_whose_registry_stopped_is_not_reused(
    api: FakeApi,
) -> None:
    engine = FakeEngine(images=("k3s:test", IMAGE))
    started(engine)
    found = engine.containers({labels.ROLE: labels.REGISTRY_ROLE})[0]
    engine.stop_container(found.id)
    assert (
        reuse._unhealthy(engine, "k3s-reg") == "its registry k3s-reg-registry is exited"
    )


def test_a_registry_that_exits_fails_the_start_naming_its_image(api: FakeApi) -> None:
    engine = FakeEngine(images=("k3s:test", IMAGE), crash=["k3s-reg-registry"])
    with pytest.raises(ClusterStartError) as raised:
        started(engine)
    assert "the registry of cluster k3s-reg did not start" in str(raised.value)
    assert "fake registry crashed" in str(raised.value)
    assert f"({IMAGE}) a registry image? set --k3s-registry-image" in str(raised.value)
    assert engine.names() == []


def test_a_cluster_without_a_registry_says_how_to_ask_for_one(api: FakeApi) -> None:
    engine = FakeEngine()
    cluster = started(engine, ClusterSpec(image="k3s:test", image_cache=False))
    with pytest.raises(K3sError, match=r"has no registry: ask for one with "):
        cluster.registry  # noqa: B018
    with pytest.raises(K3sError, match=r"registry=True\), the --k3s-registry option"):
        cluster.registry  # noqa: B018
    assert not engine.containers({labels.ROLE: labels.REGISTRY_ROLE})
    cluster.stop()


def test_an_existing_cluster_has_no_registry() -> None:
    cluster = K3sCluster(
        name="prod",
        spec=ClusterSpec(registry=True),
        engine=NoEngine("prod"),
        nodes=(),
        kubeconfig_path=None,  # type: ignore[arg-type]
        owned=False,
    )
    with pytest.raises(NoEngineError, match="has no Docker network, so it has no reg"):
        cluster.registry  # noqa: B018
