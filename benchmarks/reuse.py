"""Fresh start versus attaching to a reusable cluster (``--k3s-reuse``).

Each round runs the same one-test suite twice with ``--k3s-reuse`` in a
fresh reuse directory (a temporary ``XDG_CACHE_HOME``, so the image cache is
private and empty too): the first run is meant to start the cluster (kept
for reuse), the second to attach to it. Which one each run did is read from
its own report line, ``started in X s (kept for reuse)`` or ``reused
(attached in X s)``, never assumed from the order: a second run that started
a cluster counts as a start, and is reported. Run from the repository root::

    python -m benchmarks.reuse [--rounds 5]

Three figures per run, side by side:

- "request to body": measured in the run by a conftest, from the start of
  the setup of the first of the plugin's fixtures the test needs
  (``_k3s_pool``, which connects to the engine, then ``k3s_cluster``, then
  ``k3s_client``) to the first line of the test body;
- "plugin says": the figure the plugin reports (its start or attach alone,
  to 0.1 s);
- "whole run": the pytest process, interpreter start to exit (collection
  imports the client library, 0.2-0.8 s, whichever way the cluster comes).

The target is attaching in 0.5 s or less, request to body.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


#: Like a real test module, it imports the client library at collection, so
#: that import is not in "request to body". Its first line marks the body.
SUITE = """
import os
import time
from pathlib import Path

from kubernetes.client import CoreV1Api


def test_x(k3s_client):
    Path(os.environ["BENCH_BODY"]).write_text(repr(time.monotonic()))
    assert CoreV1Api(k3s_client).list_node().items
"""

#: Marks when each of the plugin's fixtures starts to be set up (in the same
#: process as the test body, so the monotonic clocks compare).
CONFTEST = """
import json
import os
import time

import pytest

FIXTURES = ("_k3s_pool", "k3s_cluster", "k3s_client")
MARKS = {}


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if fixturedef.argname in FIXTURES:
        MARKS.setdefault(fixturedef.argname, time.monotonic())
    return (yield)


def pytest_sessionfinish(session):
    with open(os.environ["BENCH_MARKS"], "w") as marks:
        json.dump(MARKS, marks)
"""

#: The plugin's line in the "k3s clusters" summary for a reusable cluster.
REPORT = re.compile(
    r"^k3s cluster (?P<name>\S+) \(.*\) (?:"
    r"reused \(attached in (?P<attached>[\d.]+)s\)"
    r"|started in (?P<started>[\d.]+)s \(kept for reuse\))$",
    re.MULTILINE,
)


@dataclass
class Run:
    """What one pytest run did, and how long it took."""

    kind: str  # "started" or "attached", from its report line
    name: str
    request_to_body: float
    reported: float
    whole: float


def run(directory: Path, env: dict[str, str]) -> Run:
    """Run the suite once and read what it did from its own output."""
    marks, body = directory / "marks.json", directory / "body"
    marks.unlink(missing_ok=True)
    body.unlink(missing_ok=True)
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "--k3s-reuse"],
        cwd=directory,
        env={**env, "BENCH_MARKS": str(marks), "BENCH_BODY": str(body)},
        capture_output=True,
        text=True,
        check=False,
    )
    whole = time.monotonic() - began
    found = list(REPORT.finditer(done.stdout))
    if done.returncode != 0 or len(found) != 1:
        raise SystemExit(
            f"pytest exited {done.returncode}, {len(found)} reusable cluster "
            f"line(s) in its report (expected 1):\n{done.stdout}{done.stderr}"
        )
    line = found[0]
    kind = "attached" if line["attached"] is not None else "started"
    requested = min(json.loads(marks.read_text()).values())
    return Run(
        kind=kind,
        name=line["name"],
        request_to_body=float(body.read_text()) - requested,
        reported=float(line[kind]),
        whole=whole,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    if "PYTEST_K3S_IMAGE" not in os.environ:
        from k3s_double.build import ensure_image

        os.environ["PYTEST_K3S_IMAGE"] = ensure_image()
    runs: dict[str, list[Run]] = {"started": [], "attached": []}
    unexpected: list[str] = []
    for number in range(1, options.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="pytest-k3s-reuse-") as tmp:
            directory = Path(tmp)
            (directory / "test_x.py").write_text(SUITE)
            (directory / "conftest.py").write_text(CONFTEST)
            env = {**os.environ, "XDG_CACHE_HOME": str(directory / "cache")}
            try:
                first = run(directory, env)
                second = run(directory, env)
            finally:
                subprocess.run(
                    [sys.executable, "-m", "pytest_k3s", "sweep", "--reusable"],
                    env=env,
                    capture_output=True,
                    check=False,
                )
        for which, got, meant in ((1, first, "started"), (2, second, "attached")):
            runs[got.kind].append(got)
            if got.kind != meant:
                unexpected.append(
                    f"round {number}, run {which}: {got.kind} {got.name}, "
                    f"expected it to have {meant}"
                )
        if second.kind == "attached" and second.name != first.name:
            unexpected.append(
                f"round {number}: attached to {second.name}, not {first.name}"
            )

    print(
        f"image {os.environ['PYTEST_K3S_IMAGE']}, {options.rounds} round(s), "
        "medians in seconds; image cache: private per round, empty"
    )
    print(f"{'':22}{'request to body':>16}{'plugin says':>13}{'whole run':>11}")

    def median(kind: str, field: str) -> float:
        return statistics.median(float(getattr(r, field)) for r in runs[kind])

    fields = ("request_to_body", "reported", "whole")
    for kind, label in (("started", "fresh start (kept)"), ("attached", "attach")):
        if not runs[kind]:
            print(f"{label:<22}{'no run did this':>16}")
            continue
        values = [median(kind, field) for field in fields]
        print(
            f"{label + f' n={len(runs[kind])}':<22}{values[0]:16.2f}"
            f"{values[1]:13.1f}{values[2]:11.2f}"
        )
    met = "no attach measured"
    if runs["started"] and runs["attached"]:
        ratios = [median("attached", f) / median("started", f) for f in fields]
        print(
            f"{'attach / fresh start':<22}{ratios[0]:15.2f}x{ratios[1]:12.2f}x"
            f"{ratios[2]:10.2f}x"
        )
        attach = median("attached", "request_to_body")
        met = "met" if attach <= 0.5 else "not met"
    print(f"target: attach, request to body, 0.5 s or less: {met}")
    for line in unexpected:
        print(f"UNEXPECTED: {line}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
