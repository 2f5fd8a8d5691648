"""The pull-through registry mirror: one per engine and upstream, shared by all.

With :class:`~pytest_k3s.spec.RegistryMirror` on, a cluster's start makes
sure that for each upstream registry (``docker.io`` by default) a registry
container in pull-through mode runs on the engine:
``pytest-k3s-mirror-<registry>`` (the official ``registry`` image, whose
pull-through mode proxies one upstream per container), on the network
:data:`NETWORK`, with its blobs in a volume or in the directory given.
It is started once, under a file lock per engine, so concurrent runs and
xdist workers start one; later clusters find it running, or make it again
on its blobs if it stopped.

Every cluster's network gets the mirror containers connected to it (the
nodes reach them by name, with no port published on the host, so it works
the same from a laptop, a remote engine or a devcontainer), and every node's
``registries.yaml`` names them first for their registry, before the user's
own endpoints (:func:`registries_yaml`).
containerd falls back to the registry itself when a mirror fails, so a
broken mirror costs speed, never a test: a mirror that cannot start is one
:class:`~pytest_k3s.errors.RegistryMirrorWarning`, and the cluster starts
without it. The cluster network's removal disconnects the mirrors again.

The mirror outlives runs: its objects carry :data:`labels.MIRROR`, so they
are no cluster to the sweep, the end of a run or ``pytest-k3s list``; only
:func:`remove` (``pytest-k3s mirror rm``) removes them. Docker Hub
credentials (for its pull limits) reach the mirror from the environment
(:data:`CREDENTIALS`) and go nowhere else: not in labels, messages or logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import warnings
from collections.abc import Collection
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_k3s import labels
from pytest_k3s import userdirs
from pytest_k3s.engine.node_container import NodeContainer
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.engine.protocol import LogCursor
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import RegistryMirrorWarning
from pytest_k3s.owner import Owner
from pytest_k3s.spec import RegistryMirror


#: The CLUSTER label value of the mirror's objects.
NAME = "pytest-k3s-mirror"
#: The mirror's own network, through which it reaches the upstreams. Docker
#: routes a container on several networks through the gateway of the one
#: whose name sorts first (libnetwork's endpoint order), so it must sort
#: before every cluster network the mirror joins: were the default route a
#: cluster's, removing that cluster would leave the mirror's open upstream
#: connections hanging (no reset arrives), and pulls through it with them.
NETWORK = f"0-{NAME}"
PORT = 5000
ROLE = "mirror"
#: Where the registry image keeps its blobs.
STORAGE = "/var/lib/registry"
#: What the registry logs once it serves (k3d waits for it too).
READY_LOG = "listening on"
READY_TIMEOUT = 30.0
#: How long a start waits for another process to start the mirror (a first
#: pull of its image included) before it goes without.
LOCK_TIMEOUT = 300.0
#: The network's MIRROR label value (containers and volumes name a registry).
NETWORK_ROLE = "network"
#: Environment variables with the Docker Hub account the ``docker.io``
#: mirror pulls as (a token as the password), and the registry's own.
CREDENTIALS = {
    "PYTEST_K3S_REGISTRY_MIRROR_USERNAME": "REGISTRY_PROXY_USERNAME",
    "PYTEST_K3S_REGISTRY_MIRROR_PASSWORD": "REGISTRY_PROXY_PASSWORD",
}
CREDENTIALS_REGISTRY = "docker.io"


@dataclass(frozen=True)
class Mirror:
    """One upstream registry's mirror container."""

    registry: str
    remote: str

    @property
    def container(self) -> str:
        """The container's name, which nodes resolve on their network."""
        return f"{NAME}-{self.registry.replace(':', '-')}"

    @property
    def endpoint(self) -> str:
        """The URL ``registries.yaml`` gives nodes for ``registry``."""
        return f"http://{self.container}:{PORT}"


@dataclass(frozen=True)
class Status:
    """What ``pytest-k3s mirror status`` shows of one mirror container."""

    registry: str
    container: str
    state: str
    remote: str
    storage: str


def mirrors_of(mirror: RegistryMirror) -> tuple[Mirror, ...]:
    """The mirror containers ``mirror`` asks for, one per upstream."""
    return tuple(Mirror(registry, remote) for registry, remote in mirror.remotes())


def ensure(
    engine: Engine,
    mirror: RegistryMirror,
    *,
    environ: Mapping[str, str],
    owner: Owner | None = None,
) -> tuple[Mirror, ...]:
    """Make sure the mirror runs for every upstream; return those that do.

    A mirror that cannot run (its image unavailable, a crash) is left out
    with one :class:`RegistryMirrorWarning` per process, and nodes pull from
    the upstream instead. One that runs with other settings (another
    storage, remote or image) is used as it is, with a warning saying how
    to replace it: other runs may be pulling through it right now.
    """
    wanted = mirrors_of(mirror)
    # Anything that goes wrong here (the engine, the lock, a pull) is a
    # warning: a mirror must never fail a start.
    try:
        with _engine_lock(engine):
            _ensure_network(engine, owner)
            ready = []
            for each in wanted:
                try:
                    _ensure_container(engine, mirror, each, environ, owner)
                except Exception as exc:
                    warn(
                        f"registry mirror of {each.registry} is not used: {exc}; "
                        "nodes pull from the registry itself (pytest-k3s mirror "
                        "status, pytest-k3s mirror rm)"
                    )
                else:
                    ready.append(each)
            return tuple(ready)
    except Exception as exc:
        warn(f"registry mirror is not used: {exc}; nodes pull from the registries")
        return ()


def connect(engine: Engine, mirrors: Sequence[Mirror], network: str) -> list[Mirror]:
    """Connect each mirror to a cluster's ``network``; return those connected."""
    connected = []
    for each in mirrors:
        found = engine.containers({labels.MIRROR: each.registry})
        try:
            if not found:
                raise K3sError(f"its container {each.container} is gone")
            engine.connect_network(found[0].id, network)
        except K3sError as exc:
            warn(f"registry mirror of {each.registry} is not used by {network}: {exc}")
        else:
            connected.append(each)
    return connected


def registries_yaml(user: str | None, mirrors: Sequence[Mirror]) -> str | None:
    """A node's ``registries.yaml``: the user's, with the mirrors added.

    Each mirrored registry gets its mirror container as its first endpoint
    (:func:`merge_endpoints`). A ``registries`` that is not a mapping is
    left as it is, with a warning: the mirror never fails a start.
    """
    if not mirrors:
        return user
    try:
        return merge_endpoints(user, {each.registry: each.endpoint for each in mirrors})
    except K3sError as exc:
        warn(f"{exc}: the registry mirror is not added")
        return user


def merge_endpoints(user: str | None, endpoints: Mapping[str, str]) -> str:
    """``registries.yaml`` text ``user`` with ``endpoints`` (registry: URL) added.

    Each registry gets its URL as its first endpoint, before any endpoints
    of the user's (an insecure registry's ``http://`` one, a company
    mirror), which containerd tries next, and then the registry's own
    endpoint unless the user turned that off. A registry without an entry
    of its own takes the user's ``"*"`` entry's endpoints after ours, as k3s
    would have used them. A registry whose entry (or ``"*"`` entry) has a
    ``rewrite`` is the user's alone: the rewrite would apply to ours too,
    which serves the registry's names as they are. The registry mirror
    (:func:`registries_yaml`) and a cluster's own registry
    (:mod:`pytest_k3s.lifecycle.registry`) both merge this way.

    :raises K3sError: ``user`` is not a YAML mapping
    """
    import yaml

    config: Any = yaml.safe_load(user) if user else {}
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise K3sError("registries is not a YAML mapping")
    entries = config.get("mirrors") or {}
    config["mirrors"] = entries
    wildcard = entries.get("*")
    for registry, endpoint in endpoints.items():
        # An entry of its own ends k3s' use of the "*" entry for this
        # registry: it takes the wildcard's endpoints (and rewrite) along.
        entry = entries.setdefault(
            registry, dict(wildcard) if isinstance(wildcard, dict) else {}
        )
        if not isinstance(entry, dict) or entry.get("rewrite"):
            if entry == wildcard:
                del entries[registry]  # a copy that adds nothing: the "*" serves
            continue
        theirs = [e for e in entry.get("endpoint") or [] if e != endpoint]
        entry["endpoint"] = [endpoint, *theirs]
    return str(yaml.safe_dump(config, sort_keys=True))


def status(engine: Engine) -> list[Status]:
    """Every mirror container on the engine, with its state and settings."""
    found = []
    for listed in engine.containers({labels.MIRROR: ""}):
        registry = listed.labels.get(labels.MIRROR, "")
        state = engine.state(listed.id)
        text = str(state.get("Status", "unknown"))
        if text == "exited":
            text += f" (exit code {state.get('ExitCode')})"
        found.append(
            Status(
                registry=registry,
                container=listed.name,
                state=text,
                remote=engine.environment(listed.id).get(
                    "REGISTRY_PROXY_REMOTEURL", ""
                ),
                storage=listed.labels.get(labels.MIRROR_STORAGE, ""),
            )
        )
    return sorted(found, key=lambda s: s.registry)


def stopped(engine: Engine, mirror: RegistryMirror) -> list[str]:
    """A line for each of ``mirror``'s containers that is not running."""
    wanted = {each.registry for each in mirrors_of(mirror)}
    return [
        f"registry mirror {found.container} is {found.state}: nodes pulled "
        f"{found.registry} images from the registry itself since it stopped"
        for found in status(engine)
        if found.registry in wanted and found.state != "running"
    ]


def remove(engine: Engine, registries: Collection[str] | None = None) -> list[str]:
    """Remove mirrors (of ``registries``, else all) with their volumes.

    The network goes with the last mirror. A storage directory stays.
    Return what was removed.
    """
    with _engine_lock(engine):
        if registries is None:
            return engine.remove_cluster(NAME)
        removed = []
        for found in engine.containers({labels.MIRROR: ""}):
            if found.labels.get(labels.MIRROR) in registries:
                engine.remove_container(found.id)
                removed.append(f"container {found.name}")
                if found.labels.get(labels.MIRROR_STORAGE) == found.name:
                    engine.remove_volume(found.name)
                    removed.append(f"volume {found.name}")
        if not engine.containers({labels.MIRROR: ""}):
            removed += engine.remove_cluster(NAME)
        return removed


_warned: set[str] = set()


def warn(message: str) -> None:
    """Warn once per process with ``message``."""
    if message not in _warned:
        _warned.add(message)
        with warnings.catch_warnings():
            # Shown, never raised (-W error): the mirror must not fail a start.
            warnings.simplefilter("always", RegistryMirrorWarning)
            warnings.warn(RegistryMirrorWarning(message), stacklevel=3)


def _engine_lock(engine: Engine) -> contextlib.AbstractContextManager[None]:
    """One process at a time on this engine creates, starts or removes mirrors."""
    return userdirs.engine_lock(engine.address, "mirror", timeout=LOCK_TIMEOUT)


def _labels(owner: Owner | None, mirrored: str, **extra: str) -> dict[str, str]:
    owner = owner or Owner.current()
    return {
        labels.CLUSTER: NAME,
        labels.ROLE: ROLE,
        labels.MIRROR: mirrored,
        labels.OWNER: str(owner),
        labels.OWNER_NS: owner.namespace,
        labels.CREATED: str(int(time.time())),
        **extra,
    }


def ensure_network(engine: Engine, owner: Owner | None = None) -> str:
    """The mirror's network, created if need be; return its name.

    The mirrors reach their upstreams from it: a registry on a private
    network can be connected to it too.
    """
    with _engine_lock(engine):
        _ensure_network(engine, owner)
    return NETWORK


def _ensure_network(engine: Engine, owner: Owner | None) -> None:
    if not any(n.name == NETWORK for n in engine.networks({labels.CLUSTER: NAME})):
        engine.create_network(NETWORK, _labels(owner, NETWORK_ROLE))


def _settings_hash(mirror: RegistryMirror, each: Mirror) -> str:
    """What a running mirror must match to be this one (no credentials)."""
    text = f"{mirror.image} {each.remote} {mirror.storage or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _ensure_container(
    engine: Engine,
    mirror: RegistryMirror,
    each: Mirror,
    environ: Mapping[str, str],
    owner: Owner | None,
) -> None:
    wanted = _settings_hash(mirror, each)
    found = engine.containers({labels.MIRROR: each.registry})
    if found and engine.state(found[0].id).get("Status") == "running":
        if found[0].labels.get(labels.SPEC) != wanted:
            warn(
                f"registry mirror {each.container} runs with other settings "
                f"than this run's (image, upstream URL or storage); it is used "
                "as it is. Remove it (pytest-k3s mirror rm) to apply yours"
            )
        return
    if found:
        # Stopped (a reboot, a crash, by hand): made again rather than
        # started, since it may still name cluster networks removed
        # meanwhile, which Docker then refuses to start it with. Its blobs
        # are in its volume or directory, which stay.
        engine.remove_container(found[0].id)
    if not engine.has_image(mirror.image):
        engine.pull_image(mirror.image)
    if mirror.storage is None:
        source = each.container
        engine.create_volume(source, _labels(owner, each.registry))
    else:
        path = Path(mirror.storage) / each.registry.replace(":", "-")
        with contextlib.suppress(OSError):  # else the engine makes it
            path.mkdir(parents=True, exist_ok=True)
        source = str(path)
    environment = {"REGISTRY_PROXY_REMOTEURL": each.remote}
    if each.registry == CREDENTIALS_REGISTRY:
        environment.update(
            {
                ours: environ[theirs]
                for theirs, ours in CREDENTIALS.items()
                if environ.get(theirs)
            }
        )
    try:
        container_id = engine.start_proxy(
            NodeContainer(
                name=each.container,
                image=mirror.image,
                command=(),
                environment=environment,
                labels=_labels(
                    owner,
                    each.registry,
                    **{labels.SPEC: wanted, labels.MIRROR_STORAGE: source},
                ),
                network=NETWORK,
                mounts={source: STORAGE},
            )
        )
    except K3sError as exc:
        # A process that does not share our lock (another user's cache
        # directory) made it first: use that one.
        found = engine.containers({labels.MIRROR: each.registry})
        if "already in use" not in str(exc) or not found:
            raise
        container_id = found[0].id
    wait_listening(engine, container_id, each.container)


def wait_listening(engine: Engine, container_id: str, name: str) -> None:
    """Wait for a registry container's ready line (the mirror's, a cluster's own).

    :raises K3sError: it exits, or does not log it in :data:`READY_TIMEOUT`,
        with the lines that say why
    """
    cursor = LogCursor()
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        lines = engine.new_log_lines(container_id, cursor)
        if any(READY_LOG in line for line in lines):
            return
        state = engine.state(container_id)
        if state.get("Status") not in ("running", "created", "restarting"):
            engine.new_log_lines(container_id, cursor)
            raise K3sError(
                f"{name} exited (code {state.get('ExitCode')}): {_why(cursor.lines)}"
            )
        if time.monotonic() > deadline:
            raise K3sError(
                f"{name} did not log {READY_LOG!r} within {READY_TIMEOUT:.0f}s: "
                + _why(cursor.lines)
            )
        time.sleep(0.2)


def _why(lines: Sequence[str]) -> str:
    """The lines of a registry's log that say what went wrong, else its last.

    The registry panics when it cannot reach its upstream at start (a Go
    stack trace follows, which says nothing to a user).
    """
    telling = [
        line.strip()
        for line in lines
        if line.lstrip().startswith("panic:")
        or "level=fatal" in line
        or "level=error" in line
    ]
    return " | ".join(telling[-2:] or [line.strip() for line in lines[-3:]])
