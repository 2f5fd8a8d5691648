"""Command line: list or remove k3s clusters that pytest-k3s left on this engine.

``python -m pytest_k3s list`` shows every labelled cluster and its state;
``python -m pytest_k3s sweep`` removes those whose run has ended (add
``--include-kept`` for clusters kept with ``--k3s-keep``). Clusters of runs
that are still alive, or of other hosts, are never touched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pytest_k3s import labels
from pytest_k3s.errors import K3sError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m pytest_k3s", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the clusters pytest-k3s created")
    sweep = commands.add_parser("sweep", help="remove clusters of ended runs")
    sweep.add_argument(
        "--include-kept", action="store_true", help="also remove kept clusters"
    )
    options = parser.parse_args(argv)

    from pytest_k3s.docker_runtime import DockerRuntime

    try:
        runtime = DockerRuntime.connect()
    except K3sError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if options.command == "list":
            for name, found in sorted(runtime.labelled().items()):
                print(f"{name}\trun {found.get(labels.RUN, '?')}\t{_state(found)}")
        else:
            for name in runtime.sweep(include_kept=options.include_kept):
                print(f"removed {name}")
    finally:
        runtime.close()
    return 0


def _state(found: dict[str, str]) -> str:
    owner = labels.Owner.parse(found.get(labels.OWNER, ""))
    alive = labels.owner_alive(owner) if owner else None
    state = {True: "run alive", False: "run ended", None: "owner unknown"}[alive]
    return state + (", kept" if found.get(labels.KEEP) == "true" else "")


if __name__ == "__main__":
    sys.exit(main())
