"""Fresh start versus attaching to a reusable cluster (``--k3s-reuse``).

Each round runs the same one-test suite twice with ``--k3s-reuse`` in a
fresh reuse directory: the first run starts the cluster (kept for reuse),
the second attaches to it. Both times are what the plugin reports, from the
fixture's request to a usable cluster. Run from the repository root::

    python -m benchmarks.reuse [--rounds 5]

The target is attaching in 0.5 s or less.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


#: Like a real test module, it imports the client library at collection, so
#: that import (0.2-0.8 s, whichever way the cluster comes) is not counted.
SUITE = """
from kubernetes.client import CoreV1Api


def test_x(k3s_client):
    assert CoreV1Api(k3s_client).list_node().items
"""


def run(directory: Path, env: dict[str, str]) -> float:
    output = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "--k3s-reuse"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"(?:started in|attached in) ([\d.]+)s", output)
    if found is None:
        raise SystemExit(f"no timing in the output:\n{output}")
    return float(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    if "PYTEST_K3S_IMAGE" not in os.environ:
        from k3s_double.build import ensure_image

        os.environ["PYTEST_K3S_IMAGE"] = ensure_image()
    fresh: list[float] = []
    attach: list[float] = []
    for _ in range(options.rounds):
        with tempfile.TemporaryDirectory(prefix="pytest-k3s-reuse-") as tmp:
            directory = Path(tmp)
            (directory / "test_x.py").write_text(SUITE)
            env = {**os.environ, "XDG_CACHE_HOME": str(directory / "cache")}
            try:
                fresh.append(run(directory, env))
                attach.append(run(directory, env))
            finally:
                subprocess.run(
                    [sys.executable, "-m", "pytest_k3s", "sweep", "--reusable"],
                    env=env,
                    capture_output=True,
                    check=False,
                )
    start, reuse = statistics.median(fresh), statistics.median(attach)
    print(f"image {os.environ['PYTEST_K3S_IMAGE']}, {options.rounds} rounds (median)")
    print(f"fresh start: {start:.2f} s")
    print(f"attach:      {reuse:.2f} s ({reuse / start:.2f}x of a fresh start)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
