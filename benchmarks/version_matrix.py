"""One run over two k3s versions (``--k3s-versions``) versus one run per version.

What kopf, lightkube and others do today is a CI job per version: each pays
pytest's and the plugin's start-up, collection and its xdist workers' start.
This runs the same suite both ways, side by side, on the k3s node double
built as two releases (:func:`k3s_double.build.ensure_release_image`), with
``-n 2``, and prints the whole-run wall times and their ratio. The image
cache is private and warm in both (one warm-up run first). Run from the
repository root::

    python -m benchmarks.version_matrix [--rounds 3] [--tests 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from k3s_double.build import RELEASES_REPOSITORY
from k3s_double.build import ensure_image
from k3s_double.build import ensure_release_image


VERSIONS = ("v1.33.5+k3s1", "v1.34.2+k3s1")

TEST = """
from kubernetes.client import CoreV1Api

def test_{index}(k3s_cluster):
    assert CoreV1Api(k3s_cluster.api_client).list_node().items
"""


def _run(suite: Path, env: dict[str, str], versions: tuple[str, ...]) -> float:
    command = [sys.executable, "-m", "pytest", str(suite), "-q", "-n", "2"]
    command += ["-p", "no:randomly", "-p", "no:cacheprovider"]
    command += [f"--k3s-repository={RELEASES_REPOSITORY}"]
    command += [f"--k3s-versions={','.join(versions)}"]
    began = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"pytest failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    """Measure both ways, ``--rounds`` times each, and print medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tests", type=int, default=6)
    options = parser.parse_args()
    double = ensure_image()
    for version in VERSIONS:
        ensure_release_image(double, version)
    with tempfile.TemporaryDirectory(prefix="bench-matrix-") as tmp:
        suite = Path(tmp) / "test_suite.py"
        suite.write_text("".join(TEST.format(index=i) for i in range(options.tests)))
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        _run(suite, env, VERSIONS)  # warm-up: fills the private image cache
        matrix, separate = [], []
        for _ in range(options.rounds):
            matrix.append(_run(suite, env, VERSIONS))
            separate.append(sum(_run(suite, env, (v,)) for v in VERSIONS))
    one, two = statistics.median(matrix), statistics.median(separate)
    print(
        f"{options.tests} tests x {len(VERSIONS)} versions, -n 2, medians of "
        f"{options.rounds}"
    )
    print(f"  one run, --k3s-versions:  {one:6.1f} s   ({matrix})")
    print(f"  one run per version:      {two:6.1f} s   ({separate})")
    print(f"  ratio (one run / per version): {one / two:.2f}")


if __name__ == "__main__":
    main()
