"""What users of the plugin see, run through pytester (inner pytest runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from conftest import foreign
from pytest_k3s import labels
from pytest_k3s.engine.docker_engine import DockerEngine


def clusters_of(client: docker.DockerClient) -> dict[str, set[str]]:
    """Map each labelled cluster on the engine to its run ids.

    Clusters of other live test sessions on the engine are left out, so a
    test that removes what it kept never removes theirs.
    """
    found: dict[str, set[str]] = {}
    # Listed, never inspected: a container going meanwhile cannot fail it.
    for container in client.api.containers(all=True, filters={"label": labels.CLUSTER}):
        tags = container.get("Labels") or {}
        if foreign(tags):
            continue
        found.setdefault(tags[labels.CLUSTER], set()).add(tags.get(labels.RUN, ""))
    return found


# --- without Docker ---------------------------------------------------------


def test_options_and_ini_keys_are_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "k3s clusters in Docker (pytest-k3s):",
            "*--k3s-image=IMAGE*",
            "*--k3s-version=*",
            "*--k3s-servers=N*",
            "*--k3s-agents=N*",
            "*--k3s-timeout=*",
            "*--k3s-privileged=MODE*",
            "*--k3s-keep*",
            "*--k3s-keep-on-failure*",
            "*k3s_agents (string):*",
        ]
    )


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.k3s(servers=1, agents=0, *"])


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--fixtures")
    result.stdout.fnmatch_lines(
        [
            "k3s_cluster -- *",
            "*The k3s cluster for this test*",
            "k3s_session_cluster [[]session scope[]] -- *",
            "k3s_module_cluster [[]module scope[]] -- *",
            "k3s_client -- *",
            "k3s_kubeconfig -- *",
            "k3s_namespace -- *",
        ]
    )


def test_report_header_shows_the_settings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--k3s-agents=2", "--k3s-image=x/k3s:1")
    result.stdout.fnmatch_lines(
        ["k3s: image x/k3s:1 (command line), default cluster 1 server(s) + 2 agent(s)*"]
    )


def test_report_header_says_how_the_api_is_reached(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    given = pytester.runpytest("--k3s-api-host=10.1.2.3")
    given.stdout.fnmatch_lines(
        ["k3s API: 10.1.2.3 (--k3s-api-host), the published port"]
    )


def test_report_header_of_an_unreadable_existing_cluster(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_x(): pass")
    missing = pytester.path / "nowhere.yaml"
    result = pytester.runpytest(f"--k3s-kubeconfig={missing}")
    result.stdout.fnmatch_lines(
        [f"k3s: existing cluster from {missing} (context current); nothing runs*"]
    )


@pytest.mark.parametrize(
    "xdist",
    [
        [],
        ["-n", "2"],
        ["-n", "2", "--dist", "loadscope"],
        ["-n", "2", "--dist", "loadgroup"],
    ],
    ids=["no-xdist", "load", "loadscope", "loadgroup"],
)
def test_bad_marker_fails_collection_naming_the_test(
    pytester: pytest.Pytester, xdist: list[str]
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.k3s(agnets=2)
        def test_typo(k3s_cluster):
            pass

        def test_fine():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", *xdist)
    assert result.ret not in (pytest.ExitCode.OK, pytest.ExitCode.INTERNAL_ERROR)
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting test_bad_marker_fails_collection_naming_the_test.py*",
            "test_bad_marker_fails_collection_naming_the_test.py::test_typo: "
            "@pytest.mark.k3s got an unknown argument 'agnets'; valid arguments are "
            "agent_args, agent_env, agents, image, load_balancer, ports, *",
        ]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert "passed" not in result.stdout.str(), "no test of the module may run"


def test_bad_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--k3s-servers=none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--k3s-servers: 'none' is not a whole number*"])


def test_a_run_without_k3s_fixtures_imports_no_sdk(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import sys

        HEAVY = (
            "docker", "kubernetes", "filelock", "yaml", "concurrent.futures",
            "pytest_k3s.cluster", "pytest_k3s.engine.docker_engine",
            "pytest_k3s.run.pool", "pytest_k3s.kube.client",
        )

        def pytest_sessionfinish(session):
            loaded = [m for m in HEAVY if m in sys.modules]
            print("LOADED", loaded)

        def pytest_unconfigure(config):
            # After the plugin's own end of the run, which has nothing to do.
            ours = ("pytest_k3s.run.finish", "pytest_k3s.lifecycle.removal")
            print("ENDED", [m for m in ours if m in sys.modules])
        """
    )
    pytester.makepyfile("def test_plain(): assert True")
    result = pytester.runpytest_subprocess("-s", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*LOADED []", "ENDED []"])


# --- with Docker and the k3s node double ------------------------------------

RECORDING_CONFTEST = """
import json, os, uuid

import docker
import pytest

from pytest_k3s.plugin import RUN_KEY


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    # Runs before pytest-k3s removes the run's clusters: count them by label.
    if hasattr(session.config, "workerinput"):
        return
    run_id = session.config.stash[RUN_KEY].run_id
    client = docker.from_env()
    try:
        found = client.api.containers(
            all=True, filters={"label": f"io.pytest-k3s.run={run_id}"}
        )
    finally:
        client.close()
    clusters = sorted({c["Labels"]["io.pytest-k3s.cluster"] for c in found})
    with open(os.path.join(os.environ["RECORD_DIR"], "labels.txt"), "w") as out:
        out.write("\\n".join(clusters))


@pytest.fixture
def record(request, k3s_cluster):
    def write(**extra):
        from kubernetes.client import CoreV1Api

        nodes = CoreV1Api(k3s_cluster.api_client).list_node().items
        entry = {
            "test": request.node.nodeid,
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
            "cluster": k3s_cluster.name,
            "nodes": sorted(n.metadata.name for n in nodes),
            **extra,
        }
        out = os.path.join(os.environ["RECORD_DIR"], f"{uuid.uuid4().hex}.json")
        with open(out, "w") as stream:
            json.dump(entry, stream)
    return write
"""

TOPOLOGY_TESTS = """
import pytest


@pytest.mark.parametrize("i", range(3))
def test_default(record, i):
    record()


@pytest.mark.k3s(agents=2)
@pytest.mark.parametrize("i", range(3))
def test_two_agents(record, i):
    record()


@pytest.mark.k3s(servers=3)
class TestHighAvailability:
    @pytest.mark.parametrize("i", range(3))
    def test_three_servers(self, record, i):
        record()
"""


def read_records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def labelled_clusters(directory: Path) -> set[str]:
    """The run's clusters as Docker labels showed them at the end of the run."""
    return set((directory / "labels.txt").read_text().split())


def check_topologies(records: list[dict[str, Any]]) -> None:
    by_test: dict[str, set[str]] = {}
    for entry in records:
        kind = entry["test"].split("::")[-1].split("[")[0]
        by_test.setdefault(kind, set()).add(entry["cluster"])
        cluster = entry["cluster"]
        servers = [n for n in entry["nodes"] if n.startswith(f"{cluster}-server-")]
        agents = [n for n in entry["nodes"] if n.startswith(f"{cluster}-agent-")]
        expected = {
            "test_default": (1, 0),
            "test_two_agents": (1, 2),
            "test_three_servers": (3, 0),
        }[kind]
        assert (len(servers), len(agents)) == expected, entry
        assert len(entry["nodes"]) == sum(expected), entry
    assert all(len(names) == 1 for names in by_test.values()), by_test
    assert len(set().union(*by_test.values())) == 3


@pytest.mark.docker
@pytest.mark.parametrize("workers", [0, 3], ids=["single-process", "xdist-3"])
def test_one_cluster_per_topology_for_the_whole_run(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    docker_client: docker.DockerClient,
    workers: int,
) -> None:
    records = pytester.mkdir("records")
    monkeypatch.setenv("RECORD_DIR", str(records))
    pytester.makeconftest(RECORDING_CONFTEST)
    pytester.makepyfile(test_topologies=TOPOLOGY_TESTS)
    args = ["-p", "no:randomly", "-p", "no:cacheprovider"]
    if workers:
        args += ["-n", str(workers)]
    result = pytester.runpytest_subprocess(*args, timeout=600)
    result.assert_outcomes(passed=9)
    entries = read_records(records)
    assert len(entries) == 9
    check_topologies(entries)
    if workers:
        assert len({e["worker"] for e in entries}) > 1, "xdist spread the tests"
    names = {e["cluster"] for e in entries}
    assert labelled_clusters(records) == names, "Docker labels show the same 3"
    for name in names:
        result.stdout.fnmatch_lines([f"k3s cluster {name} (*) was ready in *"])
    assert not set(clusters_of(docker_client)) & names, "the run removed its clusters"


@pytest.mark.docker
def test_module_clusters_live_as_long_as_their_module(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = pytester.mkdir("records")
    monkeypatch.setenv("RECORD_DIR", str(records))
    check = """
        import json, os, docker, pytest

        def names():
            client = docker.from_env()
            try:
                found = client.api.containers(
                    all=True, filters={{"label": "io.pytest-k3s.cluster"}})
                return {{c["Labels"]["io.pytest-k3s.cluster"] for c in found}}
            finally:
                client.close()

        def test_{name}(k3s_module_cluster):
            path = os.path.join(os.environ["RECORD_DIR"], "{name}.json")
            with open(path, "w") as stream:
                json.dump({{"cluster": k3s_module_cluster.name,
                           "agents": len(k3s_module_cluster.agents),
                           "alive": sorted(names())}}, stream)
    """
    pytester.makepyfile(
        test_a="import pytest\npytestmark = pytest.mark.k3s(agents=1)\n"
        + check.format(name="a").replace("\n        ", "\n"),
        test_b=check.format(name="b").replace("\n        ", "\n"),
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", timeout=300)
    result.assert_outcomes(passed=2)
    a = json.loads((records / "a.json").read_text())
    b = json.loads((records / "b.json").read_text())
    assert (a["agents"], b["agents"]) == (1, 0)
    assert a["cluster"] != b["cluster"]
    assert a["cluster"] in a["alive"]
    assert a["cluster"] not in b["alive"], "module a's cluster went with module a"


@pytest.mark.docker
def test_keep_leaves_clusters_until_the_sweep(
    pytester: pytest.Pytester, docker_client: docker.DockerClient
) -> None:
    pytester.makepyfile(
        """
        def test_uses_cluster(k3s_cluster):
            assert k3s_cluster.nodes
        """
    )
    before = set(clusters_of(docker_client))
    result = pytester.runpytest_subprocess(
        "--k3s-keep", "-p", "no:randomly", timeout=300
    )
    result.assert_outcomes(passed=1)
    kept = set(clusters_of(docker_client)) - before
    try:
        assert len(kept) == 1
        (name,) = kept
        result.stdout.fnmatch_lines(
            [
                f"kept k3s cluster {name} for 24h: kubectl --kubeconfig *.yaml get "
                "nodes",
                f"remove kept clusters with: python -m pytest_k3s rm {name}",
            ]
        )
        kubeconfig = result.stdout.str().split("kubectl --kubeconfig ")[1].split()[0]
        server0 = docker_client.containers.get(f"{name}-server-0")
        until = int(server0.labels[labels.KEEP_UNTIL])
        assert abs(until - (time.time() + 24 * 3600)) < 600, "kept for 24 hours"
        nodes = subprocess.run(
            ["kubectl", "--kubeconfig", kubeconfig, "get", "nodes", "-o", "name"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"node/{name}-server-0" in nodes

        plain = subprocess.run(
            [sys.executable, "-m", "pytest_k3s", "sweep"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert name not in plain.stdout, "a plain sweep spares kept clusters"
        swept = subprocess.run(
            [sys.executable, "-m", "pytest_k3s", "sweep", "--include-kept"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert f"removed {name}" in swept.stdout
        assert not Path(kubeconfig).parent.exists(), "the kept admin kubeconfig went"
    finally:
        remove_clusters(docker_client, kept)
    assert set(clusters_of(docker_client)) == before


def remove_clusters(client: docker.DockerClient, names: set[str]) -> None:
    """Remove clusters a test deliberately kept."""
    for name in names:
        selector = {"label": f"{labels.CLUSTER}={name}"}
        for container in client.api.containers(all=True, filters=selector):
            client.api.remove_container(container["Id"], force=True, v=True)
        for network in client.api.networks(filters=selector):
            client.api.remove_network(network["Id"])


@pytest.mark.docker
@pytest.mark.parametrize("outcome", ["passed", "failed"])
def test_keep_on_failure_keeps_only_a_failed_runs_clusters(
    pytester: pytest.Pytester, docker_client: docker.DockerClient, outcome: str
) -> None:
    names = pytester.mkdir("names")
    module = f"""
        import pathlib
        import pytest

        pytestmark = pytest.mark.k3s(agents=1)

        def test_module(k3s_module_cluster):
            pathlib.Path({str(names)!r}, __name__).write_text(k3s_module_cluster.name)
    """
    pytester.makepyfile(
        test_failing=module
        + f"""
        def test_default(k3s_cluster):
            assert {outcome == "passed"}
        """,
        test_passing=module,
    )
    before = set(clusters_of(docker_client))
    result = pytester.runpytest_subprocess(
        "--k3s-keep-on-failure", "-p", "no:randomly", timeout=300
    )
    kept = set(clusters_of(docker_client)) - before
    try:
        if outcome == "passed":
            result.assert_outcomes(passed=3)
            assert kept == set()
        else:
            result.assert_outcomes(passed=2, failed=1)
            failing = (names / "test_failing").read_text()
            passing = (names / "test_passing").read_text()
            assert failing in kept, "the failed module's own cluster stays"
            assert passing not in kept, "a passing module's cluster went at its end"
            assert len(kept) == 2, "and the shared cluster stays"
            result.stdout.fnmatch_lines(["kept k3s cluster k3s-*: kubectl *"])
    finally:
        remove_clusters(docker_client, kept)


@pytest.mark.docker
def test_namespace_fixture_and_failure_diagnostics(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from kubernetes.client import CoreV1Api

        NAMES = []

        @pytest.mark.parametrize("case", ["A very [long] Name/" * 5])
        def test_namespace(k3s_client, k3s_namespace, case):
            assert len(k3s_namespace) <= 63
            assert k3s_namespace.startswith("test-namespace-a-very-long-name")
            CoreV1Api(k3s_client).read_namespace(k3s_namespace)
            NAMES.append(k3s_namespace)

        def test_namespace_was_deleted(k3s_cluster, k3s_kubeconfig):
            assert k3s_kubeconfig.stat().st_mode & 0o777 == 0o600
            # Terminating or gone already: either way it goes, within seconds.
            k3s_cluster.wait_for("Namespace", NAMES[0], delete=True, timeout=30)

        def test_fails(k3s_client, k3s_namespace):
            pod = {"metadata": {"name": "doomed"},
                   "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
            CoreV1Api(k3s_client).create_namespaced_pod(k3s_namespace, pod)
            assert False, "deliberately"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", timeout=300)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- k3s cluster k3s-* -*",
            "container k3s-*-server-0: running",
            "node k3s-*-server-0: *Ready=True*",
            "pod test-fails-*/doomed: *",
        ]
    )


@pytest.mark.docker
def test_a_failed_start_is_reported_once_per_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.k3s(server_env=["K3S_DOUBLE_FAULT=crash"])
        @pytest.mark.parametrize("i", range(4))
        def test_x(k3s_cluster, i):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "2", timeout=300)
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(["*ClusterStartError*exited with status 1*"])
    text = result.stdout.str()
    assert (
        text.count("failed to start in another worker")
        + text.count("exited with status 1 during start-up")
        >= 4
    )
    assert os.environ.get("PYTEST_K3S_IMAGE")


@pytest.mark.docker
def test_session_cluster_is_the_default_cluster(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def seeded(k3s_session_cluster):
            manifest = '{"apiVersion": "v1", "kind": "Namespace", '
            manifest += '"metadata": {"name": "seeded"}}'
            k3s_session_cluster.kubectl("apply", "-f", "-", input=manifest)
            return k3s_session_cluster.name
        """
    )
    pytester.makepyfile(
        """
        def test_same_cluster(seeded, k3s_cluster):
            assert k3s_cluster.name == seeded
            assert "seeded" in k3s_cluster.kubectl("get", "namespaces", "-o", "name")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", timeout=300)
    result.assert_outcomes(passed=1)


def test_no_docker_engine_is_one_line_per_test_and_a_normal_summary(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    pytester.makepyfile(
        """
        def test_needs_a_cluster(k3s_client):
            pass

        def test_plain():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "DockerUnavailableError: no Docker engine answers at "
            "unix:///nonexistent/docker.sock (*); start the Docker engine*",
            "*= 1 passed, 1 error in *",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert result.stderr.str().strip() == "", "no crash of a hook"
    assert "could not remove" not in result.stdout.str(), "nothing was started"


@pytest.mark.docker
@pytest.mark.parametrize("workers", [0, 2], ids=["single-process", "xdist-2"])
def test_a_shared_handle_cannot_remove_the_shared_cluster(
    pytester: pytest.Pytester, workers: int
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("i", range(4))
        def test_stop_then_use(k3s_cluster, i):
            with pytest.warns(UserWarning, match="is shared by the tests of this run"):
                k3s_cluster.stop()
            with pytest.warns(UserWarning):
                with k3s_cluster:
                    pass
            assert "Ready" in k3s_cluster.kubectl("get", "nodes")
        """
    )
    args = ["-p", "no:randomly"] + (["-n", str(workers)] if workers else [])
    result = pytester.runpytest_subprocess(*args, timeout=300)
    result.assert_outcomes(passed=4)


@pytest.mark.docker
@pytest.mark.parametrize("how", ["pytest.exit", "ctrl-c"])
def test_session_fixtures_tear_down_before_the_clusters_go(
    pytester: pytest.Pytester, how: str
) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def seeded(k3s_session_cluster):
            yield k3s_session_cluster
            nodes = k3s_session_cluster.kubectl("get", "nodes", "-o", "name")
            print("TEARDOWN SAW", nodes.strip())
        """
    )
    stop = (
        "pytest.exit('stopping early')"
        if how == "pytest.exit"
        else "os.kill(os.getpid(), signal.SIGINT)"
    )
    pytester.makepyfile(
        f"""
        import os, signal
        import pytest

        def test_stop(seeded):
            {stop}
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-s", timeout=300)
    result.stdout.fnmatch_lines(["TEARDOWN SAW node/k3s-*-server-0"])


@pytest.mark.docker
def test_any_start_failure_is_recorded_and_the_sweep_is_best_effort(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import os
        import pytest_k3s.cluster as cluster
        import pytest_k3s.run.pool as pool

        def broken_sweep(engine, **options):
            raise RuntimeError("another run's sweep got there first")

        def failing_start(*args, **kwargs):
            with open(f"attempt-{os.getpid()}-{len(os.listdir('.'))}", "w"):
                pass
            raise RuntimeError("not a K3sError")

        pool.sweep_leftovers = broken_sweep
        cluster.start_cluster = failing_start
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("i", range(4))
        def test_x(k3s_cluster, i):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "2", timeout=300)
    result.assert_outcomes(errors=4)
    attempts = list(pytester.path.glob("attempt-*"))
    assert len(attempts) == 1, "one start attempt for the whole run"
    text = result.stdout.str()
    assert text.count("RuntimeError: not a K3sError") >= 1, "the start's own error"
    assert text.count("RuntimeError('not a K3sError')") >= 3, "and the record's"
    assert "failed to start in another worker" in text
    assert "failed to start earlier in this process" in text
    # The failed sweep is a logged warning; the start went on (one attempt).
    assert "sweeping dead runs' k3s clusters failed" in text


@pytest.mark.docker
def test_specs_that_differ_only_in_waiting_share_a_cluster(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest

        NAMES = set()

        @pytest.mark.k3s(timeout=100)
        def test_a(k3s_cluster):
            NAMES.add(k3s_cluster.name)

        @pytest.mark.k3s(timeout=200, wait_for_coredns=False)
        def test_b(k3s_cluster):
            NAMES.add(k3s_cluster.name)
            assert len(NAMES) == 1
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", timeout=300)
    result.assert_outcomes(passed=2)


EXISTING_TESTS = """
import pytest
from kubernetes.client import CoreV1Api
from pytest_k3s import K3sError


def test_client_and_namespace(k3s_client, k3s_namespace, k3s_kubeconfig):
    core = CoreV1Api(k3s_client)
    assert len(core.list_node().items) == 2
    core.create_namespaced_config_map(
        k3s_namespace, {"metadata": {"name": "here"}, "data": {"a": "b"}}
    )
    assert oct(k3s_kubeconfig.stat().st_mode & 0o777) == "0o600"
    assert k3s_kubeconfig.read_text().count("name:") == 3, "one context only"


@pytest.mark.k3s(agents=1)
def test_fits(k3s_cluster):
    assert len(k3s_cluster.nodes) == 2
    with pytest.raises(K3sError, match="is an existing cluster"):
        k3s_cluster.logs(k3s_cluster.nodes[0])
    assert "Ready" in k3s_cluster.kubectl("get", "nodes")


@pytest.mark.k3s(agents=2)
def test_too_big(k3s_cluster):
    pass


@pytest.mark.k3s(server_args=["--disable=traefik"])
def test_own_cluster(k3s_cluster):
    pass


def test_module(k3s_module_cluster):
    pass
"""


@pytest.mark.docker
def test_an_existing_cluster_serves_the_fixtures_without_docker(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    double_image: str,
    docker_engine: DockerEngine,
) -> None:
    from pytest_k3s import ClusterSpec
    from pytest_k3s import K3sCluster

    spec = ClusterSpec(image=double_image, agents=1, wait_for_coredns=False)
    with K3sCluster.start(spec, engine=docker_engine) as cluster:
        monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        pytester.makepyfile(EXISTING_TESTS)
        result = pytester.runpytest_subprocess(
            "-p", "no:randomly", "-rs", f"--k3s-kubeconfig={cluster.kubeconfig_path}"
        )
        result.assert_outcomes(passed=2, skipped=3)
        result.stdout.fnmatch_lines_random(
            [
                f"k3s: existing cluster from {cluster.kubeconfig_path} (context "
                f"current, server {cluster.api_url}); nothing runs in Docker",
                "SKIPPED [[]1[]] *: needs 1 control-plane node(s) and 2 other(s); "
                "the existing cluster has 1 and 1",
                "SKIPPED [[]1[]] *: needs a cluster of its own (server_args), but "
                "this run uses an existing cluster (--k3s-kubeconfig)",
                "SKIPPED [[]1[]] *: k3s_module_cluster needs a cluster of its own*",
            ]
        )
        # Any Docker call would have failed: DOCKER_HOST points nowhere.
        text = result.stdout.str()
        assert "Docker" not in text.replace("nothing runs in Docker", "")


def test_an_unreachable_existing_cluster_fails_each_test_in_one_line(
    pytester: pytest.Pytester,
) -> None:
    kubeconfig = pytester.path / "gone.yaml"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: gone, context: {cluster: c, user: u}}]\n"
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("i", range(3))
        def test_x(k3s_client, i):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", f"--k3s-kubeconfig={kubeconfig}"
    )
    result.assert_outcomes(errors=3)
    text = result.stdout.str()
    # The short summary repeats each message (whole where CI is set): count
    # the error reports above it.
    reports = text.split("short test summary info")[0]
    message = "K3sError: the existing cluster at https://127.0.0.1:9 (context 'gone' of"
    assert reports.count(message) == 3
    assert "Traceback" not in text
