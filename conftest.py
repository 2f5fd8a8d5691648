"""Test setup for pytest-k3s' own suite (not shipped with the plugin).

It enables ``pytester``, decides what happens without a Docker engine (skip,
or fail under ``PYTEST_K3S_REQUIRE_DOCKER=1`` as CI sets it, where no Docker
test may skip at all), points the plugin at the k3s node double unless
``PYTEST_K3S_IMAGE`` names an image, and checks that nothing labelled is
left behind: after every test that touches the engine (marked ``docker``, or
using an engine fixture), after every such module, and after the whole run
(so the example suite, whose clusters live for the run, is checked too).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any

import pytest


if TYPE_CHECKING:
    import docker

    from pytest_k3s.engine.docker_engine import DockerEngine

pytest_plugins = ["pytester"]

LABEL = "io.pytest-k3s.cluster"
REQUIRE_DOCKER = "PYTEST_K3S_REQUIRE_DOCKER"
REAL_SKIPPED = pytest.StashKey[str]()
#: The engine's volumes when the run began (see the end check).
AT_START = pytest.StashKey[set[str]]()
#: Fixtures that talk to the engine: a test using one is a Docker test.
ENGINE_FIXTURES = {
    "docker_client",
    "docker_engine",
    "double_image",
    "balancer_image",
    "registry_image",
}


def _on(variable: str) -> bool:
    """Whether an environment variable is set to something that means yes."""
    value = os.environ.get(variable, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def _docker_required() -> bool:
    return _on(REQUIRE_DOCKER)


@functools.cache
def _engine_error() -> str | None:
    """Return why no Docker engine answers, or None when one does (asked once)."""
    import docker

    try:
        client = docker.from_env(timeout=10)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure means "no usable engine"
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        _private_cache_home(config)
    # The xdist controller exports the images (the double, and a load
    # balancer built from Debian's haproxy) before the workers start, and
    # they inherit them, so each is built (or found) once per run.
    if hasattr(config, "workerinput"):
        return
    if config.option.help or config.option.collectonly:
        return
    wanted = [
        name
        for name in ("PYTEST_K3S_IMAGE", "PYTEST_K3S_LOAD_BALANCER_IMAGE")
        if not os.environ.get(name)
    ]
    if not wanted or _engine_error() is not None:
        return
    from k3s_double.build import ensure_image
    from k3s_double.haproxy_image import ensure_load_balancer_image

    if "PYTEST_K3S_IMAGE" in wanted:
        os.environ["PYTEST_K3S_IMAGE"] = ensure_image()
    if "PYTEST_K3S_LOAD_BALANCER_IMAGE" in wanted:
        os.environ["PYTEST_K3S_LOAD_BALANCER_IMAGE"] = ensure_load_balancer_image()


def _private_cache_home(config: pytest.Config) -> None:
    """Give this session a user cache of its own (system images, reusable clusters).

    Sessions then never see each other's cache; within one, clusters save
    and seed system images as a user's do. xdist workers and pytester's
    subprocesses inherit it.
    """
    import shutil
    import tempfile

    before = os.environ.get("XDG_CACHE_HOME")
    home = tempfile.mkdtemp(prefix="pytest-k3s-test-cache-")
    os.environ["XDG_CACHE_HOME"] = home

    def restore() -> None:
        if before is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = before
        shutil.rmtree(home, ignore_errors=True)

    config.add_cleanup(restore)


def _real_image_reason() -> str | None:
    """Return why the real rancher/k3s tests cannot run here, or None if they can."""
    from pytest_k3s import DEFAULT_IMAGE

    if _on("PYTEST_K3S_REAL"):
        return None  # asked for: the tests pull the image themselves
    if _engine_error() is not None:
        return "no Docker engine"
    import docker

    client = docker.from_env(timeout=10)
    try:
        client.images.get(DEFAULT_IMAGE)
    except docker.errors.ImageNotFound:
        return (
            f"{DEFAULT_IMAGE} is not on the Docker engine (docker pull it, or set "
            "PYTEST_K3S_REAL=1 to pull it)"
        )
    finally:
        client.close()
    return None


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    # Tests of the real image are deselected, not skipped, where it cannot be
    # had: they are not part of this machine's suite, and say so in the header.
    real = [item for item in items if item.get_closest_marker("real_k3s")]
    if real:
        reason = _real_image_reason()
        if reason is not None:
            config.hook.pytest_deselected(items=real)
            items[:] = [item for item in items if item not in real]
            config.stash[REAL_SKIPPED] = (
                f"{len(real)} real rancher/k3s tests deselected: {reason}"
            )
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)
    if not any(item.get_closest_marker("docker") for item in items):
        return
    reason = _engine_error()
    if reason is None:
        return
    if _docker_required():
        raise pytest.UsageError(
            f"{REQUIRE_DOCKER} is set but no Docker engine answers ({reason}); "
            "start dockerd or unset the variable to skip the Docker tests"
        )
    skip = pytest.mark.skip(reason=f"no Docker engine: {reason}")
    for item in items:
        if item.get_closest_marker("docker"):
            item.add_marker(skip)


#: Test suites that run one after another, each on one worker, under
#: ``--dist loadgroup``: the plugin's tests start, kill and sweep runs, and
#: their order matters; the double's own tests run beside them.
SUITES = ("tests", "k3s_double")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``--dist loadgroup``, one worker per suite of :data:`SUITES`.

    xdist's own loadgroup renames items by their ``xdist_group`` mark, which
    pytest 9.2 no longer lets it do (a node id is read-only there), so this
    scheduler groups by the suite's folder instead; anything else is grouped
    by module, as ``--dist loadscope`` does.
    """
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class BySuite(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            top = nodeid.split("/", 1)[0]
            return top if top in SUITES else nodeid.rsplit("::", 1)[0]

    return BySuite(config, log)


def pytest_report_collectionfinish(config: pytest.Config) -> str | None:
    return config.stash.get(REAL_SKIPPED, None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    # Under PYTEST_K3S_REQUIRE_DOCKER a Docker test that skips (for whatever
    # reason: an engine it cannot use, an interpreter it cannot mount) has
    # not tested what CI is there to test: it fails, saying why.
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and _docker_required() and item.get_closest_marker("docker"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        report.outcome = "failed"
        report.longrepr = (
            f"{REQUIRE_DOCKER} is set, so this Docker test may not skip: {reason}"
        )


def _run_leftovers(run_id: str, volumes_before: set[str]) -> list[str]:
    """What this session's run left on the engine (empty when it left nothing).

    That is every container and network labelled with the run's id or owned
    by this very process (reusable clusters, kept on purpose, aside), and
    every volume made since the run began that no container mounts: an
    anonymous volume whose container went without it. Objects of other
    sessions on the same engine are never counted, so runs may share it.
    """
    import docker

    from pytest_k3s import labels as k3s_labels
    from pytest_k3s.owner import Owner

    me = str(Owner.current())

    def ours(tags: dict[str, str]) -> bool:
        if tags.get(k3s_labels.REUSE) == "true":
            return False
        return tags.get(k3s_labels.RUN) == run_id or tags.get(k3s_labels.OWNER) == me

    client = docker.from_env(timeout=60)
    try:
        api = client.api
        volumes = {v["Name"] for v in api.volumes().get("Volumes") or []}
        containers = api.containers(all=True)
        mounted = {m.get("Name", "") for c in containers for m in c.get("Mounts") or []}
        left = [
            f"container {c['Names'][0].lstrip('/')}"
            for c in containers
            if ours(c.get("Labels") or {})
        ]
        left += [
            f"network {n['Name']}"
            for n in api.networks(filters={"label": LABEL})
            if ours(n.get("Labels") or {})
        ]
        left += [f"volume {v}" for v in sorted(volumes - volumes_before - mounted)]
    finally:
        client.close()
    return left


def _volumes() -> set[str] | None:
    """Every volume on the engine now (None: no engine answers)."""
    if _engine_error() is not None:
        return None
    import docker

    client = docker.from_env(timeout=60)
    try:
        return {v["Name"] for v in client.api.volumes().get("Volumes") or []}
    finally:
        client.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionstart(session: pytest.Session) -> Iterator[None]:
    yield
    if not hasattr(session.config, "workerinput"):
        found = _volumes()
        if found is not None:
            session.config.stash[AT_START] = found


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session: pytest.Session) -> Iterator[None]:
    # Wraps the plugin's own end of the run (which removes the run's
    # clusters), so this sees what the run left for good.
    yield
    before = session.config.stash.get(AT_START, None)
    if before is None or hasattr(session.config, "workerinput"):
        return
    from pytest_k3s.plugin import RUN_KEY

    run_id = session.config.stash[RUN_KEY].run_id
    left = _run_leftovers(run_id, before)
    if left:  # another session's objects may be on their way: ask again
        time.sleep(2)
        left = _run_leftovers(run_id, before)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"LEAK: the run left behind: {left}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A Docker SDK client for the local engine, closed after the session."""
    import docker

    client = docker.from_env(timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """The session's engine, as the plugin makes one: connected once, passed down.

    Tests that start clusters with ``K3sCluster.start`` pass it as
    ``engine=``, so what it learns (privileged mode refused, what the host
    can grant) is learnt once, as in a plugin run.
    """
    from pytest_k3s.engine.docker_engine import DockerEngine

    engine = DockerEngine.connect()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def double_image() -> str:
    """The k3s node double's image reference, built on first use."""
    image = os.environ.get("PYTEST_K3S_IMAGE")
    if image:
        return image
    from k3s_double.build import ensure_image

    return ensure_image()


@pytest.fixture(scope="session")
def balancer_image() -> str:
    """The load balancer's image: HAProxy from Debian's package, built on first use."""
    image = os.environ.get("PYTEST_K3S_LOAD_BALANCER_IMAGE")
    if image:
        return image
    from k3s_double.haproxy_image import ensure_load_balancer_image

    return ensure_load_balancer_image()


@pytest.fixture(scope="session")
def registry_image() -> str:
    """The registry image of the mirror and clusters' registries.

    ``PYTEST_K3S_REGISTRY_IMAGE`` where set (the official one, where it can
    be pulled), else Debian's docker-registry with the official
    ``registry:2`` image's contract, built once.
    """
    image = os.environ.get("PYTEST_K3S_REGISTRY_IMAGE")
    if image:
        return image
    from k3s_double.registry_image import ensure_registry_image

    return ensure_registry_image()


#: Clusters that module- or session-scoped fixtures share between tests; the
#: per-test leak check leaves them to the module check.
SHARED_CLUSTERS: set[str] = set()


def _listing(client: docker.DockerClient) -> list[tuple[str, str, str | None]]:
    """(kind, name, cluster label) of our containers and networks, and every volume.

    The low-level API lists without inspecting, so objects removed meanwhile
    by another process cannot make the listing fail. Objects of another live
    test session on the same engine (their owner is alive and not a process
    of this session) are left out, with the volumes of their containers, so
    that sessions sharing an engine do not see each other's clusters as leaks.
    """
    api = client.api
    listed: list[tuple[str, str, str | None]] = []
    foreign_volumes: set[str] = set()
    for c in api.containers(all=True, filters={"label": LABEL}):
        if foreign(c["Labels"]):
            foreign_volumes.update(m.get("Name", "") for m in c.get("Mounts") or [])
            continue
        listed.append(("container", c["Names"][0].lstrip("/"), c["Labels"].get(LABEL)))
    for n in api.networks(filters={"label": LABEL}):
        if not foreign(n.get("Labels") or {}):
            listed.append(("network", n["Name"], (n.get("Labels") or {}).get(LABEL)))
    for v in api.volumes().get("Volumes") or []:
        if v["Name"] not in foreign_volumes:
            listed.append(("volume", v["Name"], (v.get("Labels") or {}).get(LABEL)))
    return listed


#: Processes this one started (inner pytest runs): a cluster one of them left
#: behind is this process's leak even once its owner is dead.
SPAWNED: set[int] = set()
_popen_init = subprocess.Popen.__init__


def _recording_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
    _popen_init(self, *args, **kwargs)
    SPAWNED.add(self.pid)


subprocess.Popen.__init__ = _recording_init  # type: ignore[method-assign]


def foreign(labels: dict[str, str]) -> bool:
    """Whether an object belongs to a process outside this test session.

    That is a live process that is not this one nor one of its descendants,
    or a dead one this process did not start: the other xdist lane's inner
    runs leave clusters for a moment when a fault test kills them.
    """
    from pytest_k3s import labels as k3s_labels
    from pytest_k3s.owner import Owner
    from pytest_k3s.owner import owner_alive

    owner = k3s_labels.owner_of(labels)
    if owner is None:
        return False
    # Sessions sharing this engine share this PID namespace too (older
    # releases did not label it): check the PID alone.
    here = Owner.current()
    owner = dataclasses.replace(owner, pidns=here.pidns, boot=here.boot)
    alive = owner_alive(owner)
    if alive is False:
        return owner.pid != os.getpid() and owner.pid not in SPAWNED
    if alive is not True:
        return False
    pid = owner.pid
    while pid > 1:
        if pid == os.getpid():
            return False
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                pid = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            return True
    return True


def labelled_objects(client: docker.DockerClient) -> set[str]:
    """Our labelled containers and networks, except shared clusters'."""
    return {
        f"{kind} {name}"
        for kind, name, cluster in _listing(client)
        if kind != "volume" and cluster not in SHARED_CLUSTERS
    }


def all_objects(client: docker.DockerClient) -> set[str]:
    """Labelled containers and networks, and every volume.

    Anonymous volumes (the k3s image declares four) cannot carry labels, so
    every volume counts: a module must not leave any new one behind.
    """
    return {f"{kind} {name}" for kind, name, _ in _listing(client)}


def _uses_docker(node: pytest.Item | pytest.Module) -> bool:
    if isinstance(node, pytest.Module):
        return any(item.get_closest_marker("docker") for item in _items(node))
    return node.get_closest_marker("docker") is not None


def _items(module: pytest.Module) -> list[pytest.Item]:
    return [i for i in module.session.items if i.parent is module]


def _leak_check(
    request: pytest.FixtureRequest, snapshot: Callable[[docker.DockerClient], set[str]]
) -> Iterator[None]:
    if not _uses_docker(request.node):
        yield
        return
    client: docker.DockerClient = request.getfixturevalue("docker_client")
    before = snapshot(client)
    yield
    left = snapshot(client) - before
    if left:  # a parallel session's object caught mid-creation: ask again
        time.sleep(2)
        left &= snapshot(client) - before
    assert not left, f"{request.node.nodeid} left behind: {sorted(left)}"


@pytest.fixture(autouse=True)
def _not_a_worker_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs a test starts (pytester's) must not think they are xdist workers.

    Under ``-n``, this process is a worker and its environment says so;
    inner runs inherit it, and code that asks (the fault tests' signals)
    would take an inner single-process run for a worker.
    """
    for variable in ("WORKER", "WORKER_COUNT", "TESTRUNUID"):
        monkeypatch.delenv(f"PYTEST_XDIST_{variable}", raising=False)


@pytest.fixture(autouse=True)
def _no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a Docker test that leaves labelled containers or networks behind."""
    yield from _leak_check(request, labelled_objects)


@pytest.fixture(scope="module", autouse=True)
def _module_leaves_nothing(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a Docker test module that leaves any labelled object or volume behind.

    Module-scoped fixtures are finalised before this check (set up after it).
    """
    yield from _leak_check(request, all_objects)
