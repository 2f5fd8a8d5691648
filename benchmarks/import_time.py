"""What loading the plugin costs every pytest run: import time of ``pytest_k3s.plugin``.

Each sample is a fresh interpreter that imports pytest first (the plugin is
always loaded after it) and then times ``import pytest_k3s.plugin``; the
same interpreter also times ``import pytest_k3s`` with everything public
(``K3sCluster`` included) for comparison. Run from the repository root::

    python -m benchmarks.import_time [--rounds 15]

The target is 10 ms or less for the plugin, with none of docker,
kubernetes, filelock, yaml or concurrent.futures imported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


PROBE = """
import json, sys, time
import pytest
began = time.perf_counter()
import pytest_k3s.plugin
plugin = time.perf_counter() - began
heavy = [m for m in ("docker", "kubernetes", "filelock", "yaml", "concurrent.futures")
         if m in sys.modules]
began = time.perf_counter()
from pytest_k3s import K3sCluster
full = time.perf_counter() - began
print(json.dumps({"plugin": plugin, "full": full, "heavy": heavy}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    options = parser.parse_args()
    plugin: list[float] = []
    full: list[float] = []
    heavy: set[str] = set()
    # An installed package has its bytecode (pip compiles it): let the first
    # run write it, and measure imports that read it, as users' runs do.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(
        [sys.executable, "-c", PROBE], env=env, check=True, stdout=subprocess.DEVNULL
    )
    for _ in range(options.rounds):
        output = subprocess.run(
            [sys.executable, "-c", PROBE],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
        sample = json.loads(output)
        plugin.append(sample["plugin"] * 1000)
        full.append(sample["full"] * 1000)
        heavy.update(sample["heavy"])
    median_plugin = statistics.median(plugin)
    median_full = statistics.median(full)
    print(
        f"import pytest_k3s.plugin: median {median_plugin:.1f} ms "
        f"(min {min(plugin):.1f}, max {max(plugin):.1f}) over {options.rounds}"
    )
    print(
        f"then K3sCluster (docker, kubernetes, ...): median {median_full:.1f} ms, "
        f"{median_full / median_plugin:.0f}x the plugin's own"
    )
    print(f"heavy modules imported by the plugin: {sorted(heavy) or 'none'}")
    return 0 if not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
