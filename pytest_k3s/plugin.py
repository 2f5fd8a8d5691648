"""The pytest plugin: hooks and fixtures only; the work happens in the library.

Docker, Kubernetes and filelock are imported lazily, when a fixture first
needs a cluster, so a run that uses no k3s fixture pays nothing for them.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Generator
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import pytest

from pytest_k3s.marker import MARKER
from pytest_k3s.marker import MARKER_HELP
from pytest_k3s.marker import spec_for_markers
from pytest_k3s.settings import Settings
from pytest_k3s.settings import add_options
from pytest_k3s.spec import ClusterSpec


if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from pytest_k3s.cluster import K3sCluster
    from pytest_k3s.sharing import ClusterPool
    from pytest_k3s.sharing import RunInfo

log = logging.getLogger("pytest_k3s")

SETTINGS_KEY = pytest.StashKey[Settings]()
RUN_KEY = pytest.StashKey["RunInfo"]()
POOL_KEY = pytest.StashKey["ClusterPool"]()
SPEC_KEY = pytest.StashKey[ClusterSpec]()
SUMMARY_KEY = pytest.StashKey[list[str]]()
WORKER_INPUT = "pytest_k3s_run"
#: Fixtures whose failing tests get the cluster's state in their report.
CLUSTER_FIXTURES = ("k3s_cluster", "k3s_module_cluster", "k3s_session_cluster")


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    config.stash[SETTINGS_KEY] = Settings.from_config(config)
    config.stash[RUN_KEY] = _run_info(config)


def _run_info(config: pytest.Config) -> RunInfo:
    from pytest_k3s.sharing import RunInfo

    workerinput = getattr(config, "workerinput", {})
    if WORKER_INPUT in workerinput:
        return RunInfo.from_json(workerinput[WORKER_INPUT])
    return RunInfo.new(keep=config.stash[SETTINGS_KEY].keep)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Hand the run's identity to each xdist worker (xdist's hook)."""
    node.workerinput[WORKER_INPUT] = node.config.stash[RUN_KEY].to_json()


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[SETTINGS_KEY].header()


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    # Resolving every marked test's spec now turns bad marker arguments into
    # a usage error naming the test, before any cluster starts.
    base = config.stash[SETTINGS_KEY].spec
    for item in items:
        markers = list(item.iter_markers(MARKER))
        if markers:
            item.stash[SPEC_KEY] = spec_for_markers(base, markers, item.nodeid)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _progress(config: pytest.Config) -> Any:
    """Return a function that shows a start-up step to the user."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or _is_worker(config):
        return log.info

    def show(line: str) -> None:
        log.info(line)
        # Capturing would hide the line until the test ends.
        uncaptured = capture.global_and_fixture_disabled() if capture else nullcontext()
        with uncaptured:
            reporter.write_line(f"\n{line}" if line.startswith("starting") else line)

    return show


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    pool = config.stash.get(POOL_KEY, None)
    if pool is not None:
        pool.close()
    if _is_worker(config):
        return
    from pytest_k3s.sharing import finish_run

    summary: list[str] = []
    config.stash[SUMMARY_KEY] = summary
    failed = exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
    finish_run(config.stash[RUN_KEY], summary.append, failed=failed)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    summary = config.stash.get(SUMMARY_KEY, [])
    if summary:
        terminalreporter.write_sep("-", "k3s clusters")
        for line in summary:
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        funcargs: dict[str, Any] = getattr(item, "funcargs", {})
        for name in CLUSTER_FIXTURES:
            if name in funcargs:
                _add_diagnostics(report, funcargs[name], funcargs.get("k3s_namespace"))
                break
    return report


def _add_diagnostics(
    report: pytest.TestReport, cluster: K3sCluster, namespace: str | None
) -> None:
    from pytest_k3s import kube

    lines = [
        *cluster.container_states(),
        kube.diagnostics(cluster.api_client, namespace),
    ]
    report.sections.append((f"k3s cluster {cluster.name}", "\n".join(lines)))


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _k3s_pool(pytestconfig: pytest.Config) -> ClusterPool:
    """The run's clusters, one per spec, shared with the other xdist workers."""
    from pytest_k3s.sharing import ClusterPool

    pool = pytestconfig.stash.get(POOL_KEY, None)
    if pool is None:
        run = pytestconfig.stash[RUN_KEY]
        run.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pool = ClusterPool(run, _progress(pytestconfig))
        pytestconfig.stash[POOL_KEY] = pool
    return pool


@pytest.fixture
def k3s_cluster(request: pytest.FixtureRequest, _k3s_pool: ClusterPool) -> K3sCluster:
    """The k3s cluster for this test (``pytest_k3s.K3sCluster``).

    Its topology and image come from the nearest ``@pytest.mark.k3s`` marker
    (test, class, module), else from the ``--k3s-*`` settings. Every test that
    asks for the same spec gets the same cluster, for the whole run and across
    xdist workers; it is removed once, when the run ends. Don't change it in
    ways other tests would notice: use ``k3s_namespace``.
    """
    spec = request.node.stash.get(SPEC_KEY, None)
    if spec is None:
        spec = request.config.stash[SETTINGS_KEY].spec
    return _k3s_pool.acquire(spec)


@pytest.fixture(scope="session")
def k3s_session_cluster(
    pytestconfig: pytest.Config, _k3s_pool: ClusterPool
) -> K3sCluster:
    """The run's default cluster (session scope), from the ``--k3s-*`` settings.

    It is the same cluster that ``k3s_cluster`` gives unmarked tests. Use it in
    your own session- or module-scoped fixtures.
    """
    return _k3s_pool.acquire(pytestconfig.stash[SETTINGS_KEY].spec)


@pytest.fixture(scope="module")
def k3s_module_cluster(
    request: pytest.FixtureRequest, _k3s_pool: ClusterPool
) -> Iterator[K3sCluster]:
    """A cluster of this module's own (module scope), removed when the module ends.

    It honours the module's ``pytestmark = pytest.mark.k3s(...)``; it is never
    shared with other modules (under xdist, each worker running tests of the
    module has its own).
    """
    base = request.config.stash[SETTINGS_KEY].spec
    spec = spec_for_markers(
        base, request.node.iter_markers(MARKER), request.node.nodeid
    )
    cluster = _k3s_pool.start_private(spec)
    yield cluster
    if _k3s_pool.run.may_keep:  # the end of the run decides
        cluster.detach()
    else:
        cluster.stop()


@pytest.fixture
def k3s_client(k3s_cluster: K3sCluster) -> ApiClient:
    """A ``kubernetes.client.ApiClient`` for ``k3s_cluster``.

    Bound to that cluster alone: the client library's global configuration is
    never touched. Wrap it as usual, e.g. ``CoreV1Api(k3s_client)``.
    """
    return k3s_cluster.api_client


@pytest.fixture
def k3s_kubeconfig(k3s_cluster: K3sCluster) -> Path:
    """The path of ``k3s_cluster``'s kubeconfig (mode 0600), for kubectl or helm."""
    return k3s_cluster.kubeconfig_path


@pytest.fixture
def k3s_namespace(
    request: pytest.FixtureRequest, k3s_cluster: K3sCluster
) -> Iterator[str]:
    """A fresh namespace in ``k3s_cluster`` for this test, deleted afterwards.

    Its name comes from the test's name, made valid and unique (at most 63
    characters), so parallel workers and reruns never collide.
    """
    from pytest_k3s import kube

    name = kube.namespace_name(request.node.name, suffix=secrets.token_hex(3))
    api = k3s_cluster.api_client
    kube.create_namespace(api, name, {"app.kubernetes.io/managed-by": "pytest-k3s"})
    yield name
    kube.delete_namespace(api, name)
