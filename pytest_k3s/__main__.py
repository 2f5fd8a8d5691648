"""Command line: list or remove k3s clusters that pytest-k3s left on this engine.

``python -m pytest_k3s list`` shows every labelled cluster and its state;
``python -m pytest_k3s sweep`` removes those whose run has ended (add
``--include-kept`` for clusters kept with ``--k3s-keep``, ``--older-than 2h``
for every cluster created more than two hours ago whatever its owner's
state (kept ones still only with ``--include-kept``), ``--reusable`` for
clusters kept with ``--k3s-reuse`` that no run leases);
``python -m pytest_k3s rm NAME...`` removes the named clusters and their
kubeconfigs. A sweep never touches clusters of runs that are still alive,
or whose owner it cannot check (another host or container), unless
``--older-than`` says so; it removes a reusable cluster only with
``--reusable`` or once it went unused for 7 days, and never while a run
leases it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from collections.abc import Sequence

from pytest_k3s import labels
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.errors import K3sError
from pytest_k3s.owner import owner_alive
from pytest_k3s.run import reuse
from pytest_k3s.run.leftovers import kept
from pytest_k3s.run.leftovers import remove_named
from pytest_k3s.run.leftovers import sweep_leftovers
from pytest_k3s.settings import parse_duration


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""

    def duration(text: str) -> float:
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser = argparse.ArgumentParser(prog="python -m pytest_k3s", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the clusters pytest-k3s created")
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
        help="also remove clusters kept for reuse (--k3s-reuse) that no run uses",
    )
    remove = commands.add_parser(
        "rm",
        help="remove the named clusters and their kubeconfigs (a reusable one "
        "only when no run leases it)",
    )
    remove.add_argument("names", nargs="+", metavar="NAME")
    options = parser.parse_args(argv)

    try:
        engine = DockerEngine.connect()
    except K3sError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        found = engine.labelled()
        if options.command == "list":
            for name, tags in sorted(found.items()):
                print(
                    f"{name}\tspec {tags.get(labels.SPEC, '?')}\t"
                    f"run {tags.get(labels.RUN, '?')}\t{_state(name, tags)}"
                )
        elif options.command == "sweep":
            for name in sweep_leftovers(
                engine,
                include_kept=options.include_kept,
                older=options.older_than,
                reusable=options.reusable,
            ):
                print(f"removed {name}")
        else:
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
            if unknown or busy:
                return 1
    finally:
        engine.close()
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


if __name__ == "__main__":
    sys.exit(main())
