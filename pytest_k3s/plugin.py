"""The pytest plugin: hooks and fixtures only; the work happens in the library.

Docker, Kubernetes and filelock are imported lazily, when a fixture first
needs a cluster, so a run that uses no k3s fixture pays nothing for them.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from collections.abc import Generator
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import pytest

from pytest_k3s.errors import K3sError
from pytest_k3s.errors import UnsuitableClusterError
from pytest_k3s.marker import MARKER
from pytest_k3s.marker import MARKER_HELP
from pytest_k3s.marker import marker_versions
from pytest_k3s.marker import spec_for_markers
from pytest_k3s.run.state import RunInfo
from pytest_k3s.settings import Settings
from pytest_k3s.settings import add_options
from pytest_k3s.spec import ClusterSpec


if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from pytest_k3s.cluster import K3sCluster
    from pytest_k3s.engine.protocol import Engine
    from pytest_k3s.matrix import RunMatrix
    from pytest_k3s.run.pool import Pool

log = logging.getLogger("pytest_k3s")

SETTINGS_KEY = pytest.StashKey[Settings]()
RUN_KEY = pytest.StashKey[RunInfo]()
POOL_KEY = pytest.StashKey["Pool"]()
ENGINE_KEY = pytest.StashKey["Engine"]()
SPEC_KEY = pytest.StashKey[ClusterSpec]()
SUMMARY_KEY = pytest.StashKey[list[str]]()
FAILED_MODULES_KEY = pytest.StashKey[set[str]]()
SIGNALS_KEY = pytest.StashKey[dict[int, Any]]()
MATRIX_KEY: pytest.StashKey[RunMatrix] = pytest.StashKey()
#: The user property of a report whose test got a failure bundle: its path.
BUNDLE_PROPERTY = "k3s_failure_bundle"
#: The user property of a report whose test got no bundle though one was
#: asked for: why.
UNWRITTEN_PROPERTY = "k3s_failure_bundle_unwritten"
#: Clusters (by name) whose API server did not answer a failing test's
#: collection: this process does not ask it again (each xdist worker finds
#: out for itself).
UNREACHABLE_KEY = pytest.StashKey[set[str]]()
WORKER_INPUT = "pytest_k3s_run"
#: The fixture a version matrix parametrizes; every cluster fixture uses it.
VERSION_FIXTURE = "_k3s_version"
#: The user property that names the k3s version a test ran against.
VERSION_PROPERTY = "k3s_version"
#: Fixtures whose failing tests get the cluster's state in their report.
CLUSTER_FIXTURES = ("k3s_cluster", "k3s_module_cluster", "k3s_session_cluster")


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    settings = config.stash[SETTINGS_KEY] = Settings.from_config(config)
    config.stash[RUN_KEY] = _run_info(config)
    from pytest_k3s.matrix import RunMatrix  # no I/O unless versions need it

    matrix = RunMatrix(
        settings, config.stash[RUN_KEY].state_dir, lambda: _engine(config)
    )
    config.stash[MATRIX_KEY] = matrix
    config.stash[SETTINGS_KEY] = matrix.settings
    config.stash[FAILED_MODULES_KEY] = set()
    config.stash[UNREACHABLE_KEY] = set()
    config.stash[SIGNALS_KEY] = _interrupt_on_termination()


def pytest_unconfigure(config: pytest.Config) -> None:
    for signum, handler in config.stash.get(SIGNALS_KEY, {}).items():
        signal.signal(signum, handler)
    engine = config.stash.get(ENGINE_KEY, None)
    if engine is not None:
        engine.close()


def _engine(config: pytest.Config) -> Engine:
    """This process's engine: connected on first need, then passed down."""
    engine = config.stash.get(ENGINE_KEY, None)
    if engine is None:
        from pytest_k3s.engine.docker_engine import DockerEngine

        engine = config.stash[ENGINE_KEY] = DockerEngine.connect()
    return engine


def _interrupt_on_termination() -> dict[int, Any]:
    """Make SIGTERM and SIGHUP end the run as Ctrl-C does, so clusters go too.

    CI systems cancel jobs with SIGTERM; by default it kills pytest before
    any clean-up. Handlers someone else installed are left alone. Returns
    the handlers replaced, to restore them.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")

    replaced: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            replaced[signum] = signal.signal(signum, interrupt)
    return replaced


def _run_info(config: pytest.Config) -> RunInfo:
    workerinput = getattr(config, "workerinput", {})
    if WORKER_INPUT in workerinput:
        return RunInfo.from_json(workerinput[WORKER_INPUT])
    settings = config.stash[SETTINGS_KEY]
    return RunInfo.new(
        keep_mode=settings.keep_mode,
        keep_for=settings.keep_for,
        reuse=settings.reuse,
        reuse_for=settings.reuse_for,
    )


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Hand the run's identity to each xdist worker (xdist's hook)."""
    node.workerinput[WORKER_INPUT] = node.config.stash[RUN_KEY].to_json()


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[SETTINGS_KEY]
    if settings.kubeconfig is not None:
        from pytest_k3s.kube.kubeconfig import read_context

        try:
            existing, _ = read_context(settings.kubeconfig, settings.context)
        except K3sError:
            return [settings.header()]
        server = existing["clusters"][0].get("cluster", {}).get("server", "?")
        return [settings.header(server=str(server))]
    from pytest_k3s.engine.access import Surroundings

    if settings.spec.api_host:
        access = (
            f"k3s API: {settings.spec.api_host} (--k3s-api-host), the published port"
        )
    elif not Surroundings.read().candidates():
        # Not in a container: no need to load the Docker SDK (or ask the
        # engine) in a run that may use no cluster at all.
        access = "k3s API: the published port; the tests do not run in a container"
    else:
        from pytest_k3s.engine.docker_engine import describe_access

        access = describe_access()
    return [settings.header(), *config.stash[MATRIX_KEY].header(), access]


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> Generator[None, Any, Any]:
    # Resolving every marked test's spec as it is collected turns a bad
    # marker argument into a collection error naming the test, before any
    # cluster starts; it reads the same with and without xdist (an error
    # raised later, in collection_modifyitems, crashes xdist's workers).
    made = yield
    config = collector.config
    settings = config.stash[SETTINGS_KEY]
    for item in made if isinstance(made, list) else [made]:
        if not isinstance(item, pytest.Function):
            continue
        markers = list(item.iter_markers(MARKER))
        if markers:
            try:
                item.stash[SPEC_KEY] = spec_for_markers(
                    settings.spec,
                    markers,
                    item.nodeid,
                    config.stash[MATRIX_KEY].image_of(markers),
                )
                listed = marker_versions(markers, item.nodeid)
            except pytest.UsageError as exc:
                raise collector.CollectError(str(exc)) from exc
            if listed and settings.kubeconfig is not None:
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"asks for k3s versions {', '.join(listed)}, but "
                        "this run uses one existing cluster (--k3s-kubeconfig)"
                    )
                )
    return made


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that uses a cluster once per k3s version of the matrix."""
    if VERSION_FIXTURE not in metafunc.fixturenames:
        return
    definition = metafunc.definition
    try:
        versions = metafunc.config.stash[MATRIX_KEY].versions_for(
            definition.iter_markers(MARKER), definition.nodeid
        )
    except pytest.UsageError as exc:
        # As a bad marker argument: a collection error naming the test.
        raise pytest.Collector.CollectError(str(exc)) from exc
    if versions:
        from pytest_k3s.matrix import param_id

        metafunc.parametrize(
            VERSION_FIXTURE,
            versions,
            indirect=True,
            ids=[param_id(v) for v in versions],
            scope="session",
        )


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


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # trylast: after pytest's own sessionfinish has torn down the session's
    # fixtures (on Ctrl-C or pytest.exit that happens here), so their
    # teardown still finds the clusters.
    config = session.config
    pool = config.stash.get(POOL_KEY, None)
    if pool is not None:
        pool.close()
    if _is_worker(config) or not config.stash[RUN_KEY].state_dir.exists():
        return  # a worker, or no process of the run ever needed a cluster
    from pytest_k3s.run.finish import finish_run

    summary: list[str] = config.stash[MATRIX_KEY].notes()
    config.stash[SUMMARY_KEY] = summary
    failed = exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
    run = config.stash[RUN_KEY]
    try:
        finish_run(
            run,
            summary.append,
            lambda: _engine(config),
            failed=failed,
            interrupted=exitstatus == pytest.ExitCode.INTERRUPTED,
        )
    except Exception as exc:  # a hook of ours must never crash pytest
        summary.append(
            f"warning: could not remove this run's k3s clusters: {exc}. Remove "
            "them later with: python -m pytest_k3s sweep"
        )
    wanted = config.stash[SETTINGS_KEY].spec.registry_mirror
    if wanted is not None:
        from pytest_k3s.lifecycle import mirror

        with contextlib.suppress(Exception):  # the warning is a courtesy
            summary += [
                f"warning: {line}" for line in mirror.stopped(_engine(config), wanted)
            ]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    summary = [*config.stash.get(SUMMARY_KEY, [])]
    # The reports of every process (xdist workers' too) end up here.
    bundles = {
        value
        for kind in ("failed", "error")
        for report in terminalreporter.stats.get(kind, [])
        for key, value in getattr(report, "user_properties", ())
        if key == BUNDLE_PROPERTY
    }
    if bundles:
        directory = config.stash[SETTINGS_KEY].artifacts
        summary.append(
            f"failure bundles of {len(bundles)} failing test(s) in {directory}"
        )
    unwritten = [
        (report.nodeid, value)
        for kind in ("failed", "error")
        for report in terminalreporter.stats.get(kind, [])
        for key, value in getattr(report, "user_properties", ())
        if key == UNWRITTEN_PROPERTY
    ]
    if unwritten:
        nodeid, why = unwritten[0]
        summary.append(
            f"no failure bundle for {len(unwritten)} failing test(s) (their "
            f"reports say why); {nodeid}: {why}"
        )
    if summary:
        terminalreporter.write_sep("-", "k3s clusters")
        for line in summary:
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    callspec = getattr(item, "callspec", None)
    if report.failed:
        version = callspec.params.get(VERSION_FIXTURE) if callspec else None
        item.config.stash[FAILED_MODULES_KEY].add(
            _module_key(_module_id(item), version)
        )
    if report.when == "setup" and callspec and VERSION_FIXTURE in callspec.params:
        # The item's: the call's and teardown's reports (JUnit's) get it too.
        item.user_properties.append(
            (VERSION_PROPERTY, callspec.params[VERSION_FIXTURE])
        )
        report.user_properties = list(item.user_properties)
    excinfo = call.excinfo
    if report.when == "setup" and excinfo and excinfo.errisinstance(K3sError):
        # The message says all (what failed, which node, its last log lines,
        # what to do); the traceback through our code does not.
        report.longrepr = f"{excinfo.type.__name__}: {excinfo.value}"
    if report.when in ("setup", "call") and report.failed:
        # At setup, the fixtures set up before the one that failed are there.
        funcargs: dict[str, Any] = getattr(item, "funcargs", {})
        for name in CLUSTER_FIXTURES:
            if name in funcargs:
                _add_diagnostics(
                    item, report, funcargs[name], funcargs.get("k3s_namespace")
                )
                break
    return report


def _module_key(module: str, version: str | None) -> str:
    """A module's key among the failed: with a matrix, each version's apart."""
    return module if version is None else f"{module}[{version}]"


def _module_id(node: pytest.Item) -> str:
    module = node.getparent(pytest.Module)
    return module.nodeid if module is not None else node.nodeid


def _add_diagnostics(
    item: pytest.Item,
    report: pytest.TestReport,
    cluster: K3sCluster,
    namespace: str | None,
) -> None:
    """Give a failing test's report the cluster's state; write its bundle.

    Once a cluster's API server has not answered at all, this process asks
    it nothing more for later failing tests: on a hung cluster, each would
    otherwise wait for its requests to time out.
    """
    from pytest_k3s.kube.client import diagnostics
    from pytest_k3s.kube.diagnostics import quick_client
    from pytest_k3s.run.artifacts import collect

    directory = item.config.stash[SETTINGS_KEY].artifacts
    unreachable = item.config.stash[UNREACHABLE_KEY]
    ask = cluster.name not in unreachable
    bundle = collect(
        cluster,
        namespace,
        test_id=item.nodeid,
        directory=directory,
        api=ask,
    )
    lines = cluster.container_states()
    if bundle.api_unreachable:
        unreachable.add(cluster.name)
        lines.append(
            "(cluster state not read: its API server did not answer"
            + ("" if ask else " for an earlier failing test")
            + "; it is not asked again in this process)"
        )
    else:
        api = quick_client(cluster.api_client)  # no retries: bounded
        try:
            lines.append(diagnostics(api, namespace))
        finally:
            api.close()  # type: ignore[no-untyped-call]
    lines += bundle.report_lines()
    report.sections.append((f"k3s cluster {cluster.name}", "\n".join(lines)))
    if bundle.path is not None:
        report.user_properties.append((BUNDLE_PROPERTY, str(bundle.path)))
    elif bundle.unwritten is not None:
        report.user_properties.append((UNWRITTEN_PROPERTY, bundle.unwritten))


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _k3s_pool(pytestconfig: pytest.Config) -> Pool:
    """The run's clusters, one per spec, shared with the other xdist workers.

    With --k3s-kubeconfig, the existing cluster instead (nothing in Docker).
    """
    pool = pytestconfig.stash.get(POOL_KEY, None)
    if pool is not None:
        return pool
    settings = pytestconfig.stash[SETTINGS_KEY]
    if settings.kubeconfig is not None:
        from pytest_k3s.run.existing import ExistingPool

        pool = ExistingPool(settings.kubeconfig, settings.context, settings.spec)
    else:
        from pytest_k3s.run.pool import DockerPool
        from pytest_k3s.userdirs import private_directory

        run = pytestconfig.stash[RUN_KEY]
        private_directory(run.state_dir)
        pool = DockerPool(run, _engine(pytestconfig), _progress(pytestconfig))
    pytestconfig.stash[POOL_KEY] = pool
    return pool


def _skip_unsuitable(
    get: Callable[[ClusterSpec], K3sCluster], spec: ClusterSpec
) -> K3sCluster:
    """Get a cluster for ``spec``; skip the test if the pool cannot give one."""
    try:
        return get(spec)
    except UnsuitableClusterError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def _k3s_version(request: pytest.FixtureRequest) -> str | None:
    """The k3s version of the matrix this test runs for; None without a matrix."""
    version: str | None = getattr(request, "param", None)
    return version


@pytest.fixture
def k3s_cluster(
    request: pytest.FixtureRequest, _k3s_pool: Pool, _k3s_version: str | None
) -> K3sCluster:
    """The k3s cluster for this test (``pytest_k3s.K3sCluster``).

    Its topology and image come from the nearest ``@pytest.mark.k3s`` marker
    (test, class, module), else from the ``--k3s-*`` settings. Every test that
    asks for the same spec gets the same cluster, for the whole run and across
    xdist workers; it is removed once, when the run ends. Its handle is
    shared: ``stop()`` warns and leaves it running. Don't change it in ways
    other tests would notice: use ``k3s_namespace``.
    """
    spec = request.node.stash.get(SPEC_KEY, None)
    if spec is None:
        spec = request.config.stash[SETTINGS_KEY].spec
    matrix = request.config.stash[MATRIX_KEY]
    if _k3s_version is None and matrix.run and matrix.run.matrix:
        pinned = marker_versions(request.node.iter_markers(MARKER), "") is not None
        if not pinned:
            pytest.fail(
                f"{request.node.nodeid} asked for k3s_cluster at run time "
                "(request.getfixturevalue), so it was not parametrized by "
                "--k3s-versions; name the fixture in the test's arguments",
                pytrace=False,
            )
    return _skip_unsuitable(_k3s_pool.acquire, matrix.versioned(spec, _k3s_version))


@pytest.fixture(scope="session")
def k3s_session_cluster(
    pytestconfig: pytest.Config, _k3s_pool: Pool, _k3s_version: str | None
) -> K3sCluster:
    """The run's default cluster (session scope), from the ``--k3s-*`` settings.

    It is the same cluster that ``k3s_cluster`` gives unmarked tests, and
    its handle is shared too. Use it in your own session- or module-scoped
    fixtures.
    """
    spec = pytestconfig.stash[MATRIX_KEY].versioned(
        pytestconfig.stash[SETTINGS_KEY].spec, _k3s_version
    )
    return _skip_unsuitable(_k3s_pool.acquire, spec)


@pytest.fixture(scope="module")
def k3s_module_cluster(
    request: pytest.FixtureRequest, _k3s_pool: Pool, _k3s_version: str | None
) -> Iterator[K3sCluster]:
    """A cluster of this module's own (module scope), removed when the module ends.

    It honours the module's ``pytestmark = pytest.mark.k3s(...)``; it is never
    shared with other modules (under xdist, each worker running tests of the
    module has its own), and its handle is the module's: ``stop()`` removes
    it. With ``--k3s-keep`` it is kept; with ``--k3s-keep-on-failure``, only
    if a test of this module failed. This is the place for tests that stop
    nodes or otherwise change the cluster.
    """
    base = request.config.stash[SETTINGS_KEY].spec
    markers = list(request.node.iter_markers(MARKER))
    matrix = request.config.stash[MATRIX_KEY]
    spec = spec_for_markers(
        base, markers, request.node.nodeid, matrix.image_of(markers)
    )
    spec = matrix.versioned(spec, _k3s_version)
    cluster = _skip_unsuitable(_k3s_pool.start_private, spec)
    yield cluster
    mode = request.config.stash[RUN_KEY].keep_mode
    failed = (
        _module_key(request.node.nodeid, _k3s_version)
        in request.config.stash[FAILED_MODULES_KEY]
    )
    # Interrupted, the end of the run removes it at once (saving no images).
    interrupted = request.session.exitstatus == pytest.ExitCode.INTERRUPTED
    keep = interrupted or mode == "always" or (mode == "on-failure" and failed)
    _k3s_pool.release_private(cluster, keep=keep)  # kept: the run's end has it


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
    import secrets

    from pytest_k3s.kube import client as kube

    name = kube.namespace_name(request.node.name, suffix=secrets.token_hex(3))
    api = k3s_cluster.api_client
    kube.create_namespace(api, name, kube.MANAGED_BY)
    yield name
    kube.delete_namespace(api, name)
