"""The command line, ``pytest-k3s`` (also ``python -m pytest_k3s``).

``up`` starts a cluster for the shell and prints ``export KUBECONFIG=...``
(``eval "$(pytest-k3s up)"``); it is a reusable cluster, so it stays until
``down NAME`` (or goes unused for 7 days), the sweep leaves it alone, and
``pytest --k3s-reuse`` attaches to it when the spec matches. ``up --reuse``
attaches to a free one of the same spec instead of starting one.
``kubeconfig NAME`` prints a cluster's kubeconfig (``--internal``: the one for
containers on the cluster's network).

``list`` shows every labelled cluster and its state; ``sweep`` removes those
whose run has ended (add ``--include-kept`` for clusters kept with
``--k3s-keep``, ``--older-than 2h`` for every cluster created more than two
hours ago whatever its owner's state (kept ones still only with
``--include-kept``), ``--reusable`` for clusters kept with ``--k3s-reuse``
or made by ``up`` that no run leases); ``rm NAME...`` removes the named
clusters and their kubeconfigs. A sweep never touches clusters of runs that
are still alive, or whose owner it cannot check (another host or
container), unless ``--older-than`` says so; it removes a reusable cluster
only with ``--reusable`` or once it went unused for 7 days, and never while
a run leases it.

``mirror status`` shows the registry mirror's containers (one per upstream
registry), their state, upstream and storage; ``mirror rm [REGISTRY...]``
removes them (those of the registries named, else all) with their volumes,
and their network with the last (a storage directory stays): the next run
with ``--k3s-registry-mirror`` starts them afresh.

Exit status: 0 when it worked, 1 on an error (``error: ...`` on stderr names
the thing and the next step), 2 for a command line it cannot parse.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from pytest_k3s import labels
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import SpecError
from pytest_k3s.lifecycle import mirror
from pytest_k3s.lifecycle.versions import Resolver
from pytest_k3s.owner import owner_alive
from pytest_k3s.run import reuse
from pytest_k3s.run import shell
from pytest_k3s.run.leftovers import kept
from pytest_k3s.run.leftovers import remove_named
from pytest_k3s.run.leftovers import sweep_leftovers
from pytest_k3s.settings import Settings
from pytest_k3s.settings import parse_duration
from pytest_k3s.spec import DEFAULT_IMAGE
from pytest_k3s.spec import K3S_REPOSITORY
from pytest_k3s.spec import ClusterSpec


def main(argv: Sequence[str] | None = None, *, prog: str = "pytest-k3s") -> int:
    """Run the command line; return the exit status."""
    options = _parser(prog).parse_args(argv)
    try:
        engine = DockerEngine.connect()
    except K3sError as exc:
        return _error(exc)
    try:
        status: int = options.run(engine, options)
        return status
    except K3sError as exc:
        return _error(exc)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        engine.close()


def _error(exc: BaseException) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def _parser(prog: str) -> argparse.ArgumentParser:
    def duration(text: str) -> float:
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up",
        help="start a cluster (kept until down) and print export KUBECONFIG=...",
        description="Start a cluster, kept until 'down NAME' or 7 days unused, "
        "and print 'export KUBECONFIG=<path>' (the only line on stdout: "
        'eval "$(pytest-k3s up)"); progress goes to stderr. What the command '
        "line does not say comes from the PYTEST_K3S_* variables, as a pytest run "
        f"reads them (image {DEFAULT_IMAGE} and 1 server without them), so "
        "'pytest --k3s-reuse' in the same environment attaches to it; a version "
        f"names an image of $PYTEST_K3S_REPOSITORY (default {K3S_REPOSITORY}).",
    )
    up.add_argument(
        "--servers", type=int, metavar="N", help="default PYTEST_K3S_SERVERS, or 1"
    )
    up.add_argument(
        "--agents", type=int, metavar="M", help="default PYTEST_K3S_AGENTS, or 0"
    )
    up.add_argument(
        "--version",
        metavar="V",
        help="a k3s version: full (v1.31.4+k3s1), a release line (v1.33: its "
        "newest patch), stable or latest",
    )
    up.add_argument("--image", metavar="I", help="the node image")
    up.add_argument(
        "--name",
        metavar="NAME",
        help="the cluster's name (default: k3s-<random>); lower-case letters, "
        "digits and '-'",
    )
    up.add_argument(
        "--reuse",
        action="store_true",
        help="attach to a free, healthy cluster of the same spec (with --name: "
        "that one) where there is one, as pytest --k3s-reuse does",
    )
    up.set_defaults(run=_up)

    config = commands.add_parser(
        "kubeconfig", help="print a cluster's kubeconfig (YAML)"
    )
    config.add_argument("name", metavar="NAME")
    config.add_argument(
        "--internal",
        action="store_true",
        help="the kubeconfig for containers on the cluster's Docker network "
        "(its server is the load balancer or server-0, by name, port 6443)",
    )
    config.set_defaults(run=_kubeconfig)

    down = commands.add_parser(
        "down", help="remove a cluster (one up made, or any of ours) and its files"
    )
    down.add_argument("name", metavar="NAME")
    down.set_defaults(run=_down)

    listing = commands.add_parser("list", help="list the clusters pytest-k3s created")
    listing.set_defaults(run=_list)
    sweep = commands.add_parser(
        "sweep",
        help="remove clusters of ended runs, and reusable ones unused for 7 days "
        "that no run leases",
    )
    sweep.add_argument(
        "--include-kept", action="store_true", help="also remove kept clusters"
    )
    sweep.add_argument(
        "--older-than",
        type=duration,
        metavar="AGE",
        help="remove every cluster created more than AGE ago (e.g. 2h), whatever "
        "its owner's state; kept clusters only with --include-kept, reusable "
        "ones only with --reusable",
    )
    sweep.add_argument(
        "--reusable",
        action="store_true",
        help="also remove reusable clusters (--k3s-reuse, up) that no run uses",
    )
    sweep.set_defaults(run=_sweep)
    remove = commands.add_parser(
        "rm",
        help="remove the named clusters and their kubeconfigs (a reusable one "
        "only when no run leases it)",
    )
    remove.add_argument("names", nargs="+", metavar="NAME")
    remove.set_defaults(run=_rm)
    mirrors = commands.add_parser(
        "mirror",
        help="the registry mirror (--k3s-registry-mirror): status shows its "
        "containers, rm removes them with their network and volumes",
    )
    mirrors.add_argument("action", choices=("status", "rm"))
    mirrors.add_argument(
        "registries",
        nargs="*",
        metavar="REGISTRY",
        help="rm: only the mirrors of these registries (default: all)",
    )
    mirrors.set_defaults(run=_mirror)
    return parser


def _spec(
    options: argparse.Namespace,
    environ: Mapping[str, str] = os.environ,
    *,
    engine: Engine | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> ClusterSpec:
    """The spec ``up`` starts or attaches to.

    The cluster a pytest run in this environment would use
    (:meth:`Settings.from_environment`: every ``PYTEST_K3S_*`` knob), with
    the command line's ``--servers``, ``--agents``, ``--image`` or
    ``--version`` on top, so ``pytest --k3s-reuse`` in the same environment
    asks for the same spec. A version names an image of
    ``PYTEST_K3S_REPOSITORY`` (default ``rancher/k3s``); a partial one
    (``v1.33``, ``stable``) is resolved as a run resolves it
    (:mod:`pytest_k3s.lifecycle.versions`: the channel server, else
    ``engine``'s newest matching image, which ``progress`` is told).

    :raises SpecError: image and version are both given at one level, or a
        value is invalid or cannot be resolved
    """
    try:
        settings = Settings.from_environment(environ)
    except pytest.UsageError as exc:
        raise SpecError(str(exc)) from exc
    spec = settings.spec
    if options.image is not None and options.version is not None:
        raise SpecError(
            f"the command line gives both an image ({options.image}) and a k3s "
            f"version ({options.version}); give one of them"
        )
    version = options.version or (None if options.image else spec.version)
    changes: dict[str, Any] = {"version": None}
    if options.image is not None:
        changes["image"] = options.image
    if version is not None:
        resolver = Resolver(
            None if engine is None else lambda: engine,
            repository=settings.repository,
        )
        resolved = resolver.resolve(version)
        if resolved.note:
            progress(resolved.note)
        elif resolved.source != "given":
            progress(f"k3s version {resolved.describe()}")
        changes["image"] = resolver.image(version)
    for name in ("servers", "agents"):
        if getattr(options, name) is not None:
            changes[name] = getattr(options, name)
    return replace(spec, **changes)


def _up(engine: DockerEngine, options: argparse.Namespace) -> int:
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    spec = _spec(options, engine=engine, progress=progress)
    found = shell.up(
        engine, spec, name=options.name, reuse_free=options.reuse, progress=progress
    )
    cluster = found.cluster
    try:
        if found.attached:
            progress(
                f"reusing k3s cluster {cluster.name} (attached in {found.seconds:.1f}s)"
            )
        progress(
            f"k3s cluster {cluster.name} ({spec.describe()}) stays until "
            f"'pytest-k3s down {cluster.name}', or 7 days unused"
        )
        print(f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig_path))}")
        sys.stdout.flush()
    finally:
        # Free for the next run (pytest --k3s-reuse) or up --reuse.
        found.lease.release()
        cluster.detach()
    return 0


def _kubeconfig(engine: DockerEngine, options: argparse.Namespace) -> int:
    path = shell.kubeconfig_path(engine, options.name, internal=options.internal)
    sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0


def _down(engine: DockerEngine, options: argparse.Namespace) -> int:
    shell.down(engine, options.name)
    print(f"removed {options.name}")
    return 0


def _list(engine: DockerEngine, options: argparse.Namespace) -> int:
    for name, tags in sorted(engine.labelled().items()):
        print(
            f"{name}\tspec {tags.get(labels.SPEC, '?')}\t"
            f"run {tags.get(labels.RUN, '?')}\t{_state(name, tags)}"
        )
    return 0


def _sweep(engine: DockerEngine, options: argparse.Namespace) -> int:
    for name in sweep_leftovers(
        engine,
        include_kept=options.include_kept,
        older=options.older_than,
        reusable=options.reusable,
    ):
        print(f"removed {name}")
    return 0


def _rm(engine: DockerEngine, options: argparse.Namespace) -> int:
    outcome = remove_named(engine, options.names)
    for name, what in outcome.items():
        if what == "removed":
            print(f"removed {name}")
    unknown = [name for name, what in outcome.items() if what == "unknown"]
    busy = [name for name, what in outcome.items() if what == "in use"]
    if unknown:
        print(f"error: no cluster named {', '.join(unknown)}", file=sys.stderr)
    if busy:
        print(
            f"error: {', '.join(busy)} in use by a run (--k3s-reuse); "
            "remove it once that run has ended",
            file=sys.stderr,
        )
    return 1 if unknown or busy else 0


def _mirror(engine: DockerEngine, options: argparse.Namespace) -> int:
    if options.action == "rm":
        removed = mirror.remove(engine, options.registries or None)
        for what in removed:
            print(f"removed {what}")
        if not removed:
            print("no registry mirror on this engine")
        return 0
    found = mirror.status(engine)
    if not found:
        print(
            "no registry mirror on this engine; a run with --k3s-registry-mirror "
            "starts one"
        )
    for each in found:
        print(
            f"{each.registry}\t{each.container}\t{each.state}\t"
            f"upstream {each.remote}\tstorage {each.storage}"
        )
    return 0


def _state(name: str, tags: Mapping[str, str]) -> str:
    if tags.get(labels.REUSE) == "true":
        used = reuse.last_used(name)
        state = "reusable, " + ("leased" if reuse.leased(name) else "free")
        if used is not None:
            state += f", last used {(time.time() - used) / 3600:.1f}h ago"
    else:
        owner = labels.owner_of(tags)
        alive = owner_alive(owner) if owner else None
        state = {True: "run alive", False: "run ended", None: "owner unknown"}[alive]
    created = tags.get(labels.CREATED, "")
    if created.isdigit():
        state += f", created {(time.time() - int(created)) / 3600:.1f}h ago"
    if kept(tags):
        state += ", kept"
        until = tags.get(labels.KEEP_UNTIL, "")
        if until.isdigit():
            state += f" for {(int(until) - time.time()) / 3600:.1f}h more"
    return state
