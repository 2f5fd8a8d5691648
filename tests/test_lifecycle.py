"""A cluster's life with a fake engine: the start sequence and node operations.

What only Docker and k3s can tell (that the nodes really start and join)
is tested against the node double in test_cluster.py; here the sequence's
own decisions are checked in milliseconds.
"""

from __future__ import annotations

import inspect
from dataclasses import replace

import pytest

from pytest_k3s import K3sCluster
from pytest_k3s import labels
from pytest_k3s.engine.no_engine import NoEngine
from pytest_k3s.engine.node_container import KUBECONFIG_OUTPUT
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.errors import ClusterTimeoutError
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import NameConflictError
from pytest_k3s.errors import NoEngineError
from pytest_k3s.kube import kubeconfig
from pytest_k3s.lifecycle import load_balancer
from pytest_k3s.lifecycle.start import StartOptions
from pytest_k3s.lifecycle.start import start_cluster
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import PortMapping
from tests.fake_engine import FakeApi
from tests.fake_engine import FakeEngine


SPEC = ClusterSpec(image="k3s:test", image_cache=False, wait_for_coredns=False)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    return FakeApi().install(monkeypatch)


def test_servers_start_one_after_another_and_agents_alongside(
    api: FakeApi, tmp_path: object
) -> None:
    engine = FakeEngine()
    spec = ClusterSpec(image="k3s:test", servers=3, agents=2, image_cache=False)
    started = start_cluster(engine, spec, StartOptions(name="k3s-order"))
    starts = [c.removeprefix("start ") for c in engine.calls if c.startswith("start")]
    assert engine.calls[0] == "network k3s-order"
    assert starts[:2] == ["k3s-order-serverlb", "k3s-order-server-0"]
    servers = [s for s in starts if "-server-" in s]
    assert servers == ["k3s-order-server-0", "k3s-order-server-1", "k3s-order-server-2"]
    assert sorted(s for s in starts if "-agent-" in s) == [
        "k3s-order-agent-0",
        "k3s-order-agent-1",
    ]
    assert [n.name for n in started.nodes] == [
        *servers,
        "k3s-order-agent-0",
        "k3s-order-agent-1",
    ]
    assert api.asked[:2] == ["readyz", "nodes"]
    assert "coredns_available" in api.asked  # the spec waits for CoreDNS


def test_every_object_is_labelled_with_cluster_run_and_owner(api: FakeApi) -> None:
    engine = FakeEngine()
    options = StartOptions(name="k3s-lab", run_id="run-1", keep_until=2e9)
    start_cluster(engine, ClusterSpec(image="k3s:test", agents=1), options)
    tags = [c.node.labels for c in engine.containers_by_id.values()]
    tags.append(engine.network_labels["k3s-lab"])
    for found in tags:
        assert found[labels.CLUSTER] == "k3s-lab"
        assert found[labels.RUN] == "run-1"
        assert labels.owner_of(found) is not None
        assert found[labels.KEEP_UNTIL] == "2000000000"
    assert sorted(t[labels.ROLE] for t in tags) == ["agent", "network", "server"]


def test_the_kubeconfig_points_at_the_published_port(api: FakeApi) -> None:
    engine = FakeEngine()
    started = start_cluster(engine, SPEC, StartOptions(name="k3s-kc"))
    config = kubeconfig.parse(started.kubeconfig_path.read_bytes())
    port = engine.published_port(started.nodes[0].container_id)
    assert config["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{port}"
    assert config["current-context"] == "k3s-kc"
    assert started.private_dir is not None
    assert started.kubeconfig_path.parent == started.private_dir


def test_a_crashing_node_fails_the_start_and_everything_goes(api: FakeApi) -> None:
    engine = FakeEngine(crash={"k3s-crash-agent-1"})
    spec = ClusterSpec(image="k3s:test", agents=2, image_cache=False, timeout=5)
    with pytest.raises(ClusterStartError, match="k3s-crash-agent-1") as failure:
        start_cluster(engine, spec, StartOptions(name="k3s-crash"))
    assert "exited with status 1" in str(failure.value)
    assert "the fake node crashed" in str(failure.value)  # its last log lines
    assert engine.names() == []


def test_a_node_that_never_logs_ready_times_out_naming_it(api: FakeApi) -> None:
    engine = FakeEngine(silent={"k3s-slow-server-0"})
    spec = ClusterSpec(image="k3s:test", image_cache=False, timeout=0.3)
    with pytest.raises(ClusterTimeoutError, match="k3s-slow-server-0 to log"):
        start_cluster(engine, spec, StartOptions(name="k3s-slow"))
    assert engine.names() == []


def test_nodes_that_are_not_ready_time_out_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    FakeApi(not_ready="node k3s-nr-server-0 is NotReady").install(monkeypatch)
    engine = FakeEngine()
    spec = ClusterSpec(image="k3s:test", image_cache=False, timeout=0.3)
    with pytest.raises(ClusterTimeoutError, match="all nodes to be Ready: node"):
        start_cluster(engine, spec, StartOptions(name="k3s-nr"))
    assert engine.names() == []


def test_a_name_clash_removes_nothing_of_the_other_cluster(api: FakeApi) -> None:
    engine = FakeEngine()
    start_cluster(engine, SPEC, StartOptions(name="k3s-same", run_id="first"))
    before = engine.names()
    with pytest.raises(NameConflictError):
        start_cluster(engine, SPEC, StartOptions(name="k3s-same", run_id="second"))
    assert engine.names() == before


def test_a_missing_image_is_pulled_before_the_deadline_starts(api: FakeApi) -> None:
    engine = FakeEngine(images=())
    start_cluster(engine, SPEC, StartOptions(name="k3s-pull"))
    assert engine.calls[0] == "pull k3s:test"
    assert engine.calls[1] == "network k3s-pull"


def test_a_refused_privileged_mode_falls_back_and_says_so(api: FakeApi) -> None:
    engine = FakeEngine(refuse_privileged=True)
    lines: list[str] = []
    spec = ClusterSpec(image="k3s:test", agents=1, image_cache=False)
    start_cluster(engine, spec, StartOptions(name="k3s-caps", progress=lines.append))
    assert [c.privileged for c in engine.containers_by_id.values()] == [False, False]
    assert sum("refused privileged mode" in line for line in lines) == 1


def test_an_explicit_privileged_request_is_not_silently_downgraded(
    api: FakeApi,
) -> None:
    engine = FakeEngine(refuse_privileged=True)
    spec = ClusterSpec(image="k3s:test", privileged="privileged", image_cache=False)
    with pytest.raises(RuntimeError, match="unable to apply caps"):
        start_cluster(engine, spec, StartOptions(name="k3s-priv"))
    assert engine.names() == []


def test_a_late_kubeconfig_is_waited_for(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    reads: list[str] = []
    real = engine.read_file

    def late(container_id: str, path: str) -> bytes:
        reads.append(path)
        if len(reads) < 3:
            raise FileNotFoundError(path)
        return real(container_id, path)

    monkeypatch.setattr(engine, "read_file", late)
    start_cluster(engine, SPEC, StartOptions(name="k3s-late"))
    assert reads == [KUBECONFIG_OUTPUT] * 3


# node operations -----------------------------------------------------------


def _cluster(engine: FakeEngine, agents: int = 1) -> K3sCluster:
    spec = ClusterSpec(image="k3s:test", agents=agents, image_cache=False)
    started = start_cluster(engine, spec, StartOptions(name="k3s-ops"))
    return K3sCluster.from_started(started, engine)


def test_an_added_agent_joins_as_the_others_did(api: FakeApi) -> None:
    engine = FakeEngine()
    cluster = _cluster(engine, agents=2)
    cluster.remove_node("agent-0")
    added = cluster.add_agent(timeout=5)
    assert added.name == "k3s-ops-agent-2", "the next free index, not a reused one"
    server0 = engine.containers_by_id[cluster.servers[0].container_id].node
    joined = engine.containers_by_id[added.container_id].node
    assert joined.environment["K3S_TOKEN"] == server0.environment["K3S_TOKEN"]
    assert joined.environment["K3S_URL"] == "https://k3s-ops-server-0:6443"
    assert joined.labels[labels.ROLE] == "agent"
    assert joined.labels[labels.RUN] == server0.labels[labels.RUN]
    assert [n.name for n in cluster.agents] == ["k3s-ops-agent-1", "k3s-ops-agent-2"]


def test_servers_are_not_removed(api: FakeApi) -> None:
    engine = FakeEngine()
    cluster = _cluster(engine)
    with pytest.raises(K3sError, match="is a server; remove_node removes agents"):
        cluster.remove_node("server-0")
    assert len(cluster.nodes) == 2


def test_node_operations_on_a_shared_cluster_warn(api: FakeApi) -> None:
    engine = FakeEngine()
    cluster = _cluster(engine)
    cluster.share()
    with pytest.warns(UserWarning, match="which other tests of this run share"):
        cluster.restart_node("agent-0", timeout=5)
    assert [c for c in engine.calls if "agent-0" in c][-2:] == [
        "stop k3s-ops-agent-0",
        "restart k3s-ops-agent-0",
    ]


def test_a_restarted_node_must_report_ready_after_its_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeApi().install(monkeypatch)
    engine = FakeEngine()
    cluster = _cluster(engine)
    seen: list[float | None] = []
    from pytest_k3s.kube import client

    def nodes_ready(
        api_client: object, names: set[str], heartbeat_after: float | None = None
    ) -> tuple[str | None, None]:
        seen.append(heartbeat_after)
        return None, None

    monkeypatch.setattr(client, "nodes_ready", nodes_ready)
    cluster.restart_node("agent-0", timeout=5)
    assert seen
    assert seen[-1] is not None, "an old Ready heartbeat must not count"
    assert api.asked  # the start itself asked the API


def test_an_existing_clusters_engine_says_there_is_none() -> None:
    engine = NoEngine("prod")
    with pytest.raises(NoEngineError, match="cluster prod is an existing cluster"):
        engine.logs("id")
    with pytest.raises(NoEngineError, match="load_image is not available"):
        engine.image_platform("x")
    engine.close()  # closing is fine


#: What an existing cluster's engine can answer without containers.
ANSWERED = {"address", "close", "host_warnings", "privileged_refused"}


@pytest.mark.parametrize(
    "operation",
    sorted(
        name
        for name in dir(NoEngine)
        if not name.startswith("_") and name not in ANSWERED and name != "cluster"
    ),
)
def test_every_engine_operation_of_an_existing_cluster_is_refused(
    operation: str,
) -> None:
    method = getattr(NoEngine("prod"), operation)
    parameters = inspect.signature(method).parameters.values()
    arguments = {
        p.name: None for p in parameters if p.default is inspect.Parameter.empty
    }
    with pytest.raises(NoEngineError, match="cluster prod is an existing cluster"):
        method(**arguments)


def test_every_node_gets_a_fixed_address_and_the_labels_say_which(
    api: FakeApi,
) -> None:
    engine = FakeEngine()
    spec = ClusterSpec(image="k3s:test", agents=2, image_cache=False)
    start_cluster(engine, spec, StartOptions(name="k3s-ips"))
    subnet = "172.30.1.0/24"  # the fake engine's first network
    found = {c.node.name: c.node for c in engine.containers_by_id.values()}
    assert {name: node.address for name, node in found.items()} == {
        "k3s-ips-server-0": "172.30.1.2",
        "k3s-ips-agent-0": "172.30.1.3",
        "k3s-ips-agent-1": "172.30.1.4",
    }, f"the lower half of {subnet}, after its gateway"
    for node in found.values():
        assert node.labels[labels.ADDRESS] == node.address


def test_a_ha_cluster_is_reached_through_its_load_balancer(api: FakeApi) -> None:
    engine = FakeEngine()
    spec = ClusterSpec(
        image="k3s:test",
        servers=3,
        agents=1,
        image_cache=False,
        ports=(PortMapping(30080),),
    )
    started = start_cluster(engine, spec, StartOptions(name="k3s-lb"))
    found = {c.node.name: c for c in engine.containers_by_id.values()}
    balancer = found["k3s-lb-serverlb"]
    assert started.balancer == balancer.id
    assert balancer.node.address == "172.30.1.2"
    assert balancer.node.labels[labels.ROLE] == "loadbalancer"
    assert balancer.node.image == spec.load_balancer_image
    config = balancer.files[load_balancer.CONFIG_PATH].decode()
    for index, address in enumerate(("172.30.1.3", "172.30.1.4", "172.30.1.5")):
        assert f"server k3s-lb-server-{index} {address}:6443 check" in config
    assert "server k3s-lb-agent-0 172.30.1.6:30080 check" in config
    assert [str(m) for _, m in balancer.node.ports] == ["6443/tcp", "30080/tcp"]
    for name in ("k3s-lb-server-0", "k3s-lb-server-1"):
        command = " ".join(found[name].node.command)
        assert "--tls-san k3s-lb-serverlb --tls-san 172.30.1.2" in command
        assert found[name].node.ports == (), "the balancer publishes, not server-0"
    joined = found["k3s-lb-agent-0"].node.environment["K3S_URL"]
    assert joined == "https://k3s-lb-serverlb:6443"
    server = kubeconfig.parse(started.kubeconfig_path.read_bytes())["clusters"][0]
    port = engine.published_port(balancer.id)
    assert server["cluster"]["server"] == f"https://127.0.0.1:{port}"
    assert "k3s-lb-serverlb" not in [n.name for n in started.nodes]


def test_a_one_server_cluster_gets_a_balancer_only_when_asked(api: FakeApi) -> None:
    engine = FakeEngine()
    start_cluster(engine, SPEC, StartOptions(name="k3s-one"))
    asked = replace(SPEC, load_balancer=True)
    start_cluster(engine, asked, StartOptions(name="k3s-asked"))
    names = sorted(c.node.name for c in engine.containers_by_id.values())
    assert names == ["k3s-asked-server-0", "k3s-asked-serverlb", "k3s-one-server-0"]


def test_an_added_agent_takes_the_next_address_and_the_balancer_follows(
    api: FakeApi,
) -> None:
    engine = FakeEngine()
    spec = ClusterSpec(
        image="k3s:test",
        servers=2,
        agents=1,
        image_cache=False,
        ports=(PortMapping(30080),),
    )
    cluster = K3sCluster.from_started(
        start_cluster(engine, spec, StartOptions(name="k3s-grow")), engine
    )
    cluster.stop_node("server-1")
    added = cluster.add_agent(timeout=5)
    node = engine.containers_by_id[added.container_id].node
    assert node.address == "172.30.1.6", "after the highest taken, stopped or not"
    assert node.environment["K3S_URL"] == "https://k3s-grow-serverlb:6443"
    balancer = engine.containers_by_id[cluster._balancer or ""]
    config = balancer.files[load_balancer.CONFIG_PATH].decode()
    assert "server k3s-grow-agent-1 172.30.1.6:30080 check" in config
    assert "signal k3s-grow-serverlb SIGUSR2" in engine.calls
    cluster.remove_node(added.name)
    config = balancer.files[load_balancer.CONFIG_PATH].decode()
    assert "k3s-grow-agent-1" not in config
    assert engine.calls.count("signal k3s-grow-serverlb SIGUSR2") == 2


def test_a_port_the_engine_moved_is_followed_by_the_kubeconfig(
    api: FakeApi,
) -> None:
    engine = FakeEngine(ports_move=True)
    cluster = K3sCluster.from_started(
        start_cluster(engine, SPEC, StartOptions(name="k3s-move")), engine
    )
    before = cluster.api_client
    cluster.restart_node("server-0", timeout=5)
    port = engine.published_port(cluster.servers[0].container_id)
    assert cluster.api_url == f"https://127.0.0.1:{port}"
    assert cluster.api_client is not before, "the cached client named the old port"
