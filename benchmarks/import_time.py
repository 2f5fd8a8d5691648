"""What the plugin costs a pytest run that uses no cluster: import, and the whole run.

Two measurements, each over ``--rounds`` fresh interpreters, medians:

- the import alone: a fresh interpreter imports pytest first (the plugin is
  always loaded after it) and then times ``import pytest_k3s.plugin``; the
  same interpreter also times ``from pytest_k3s import K3sCluster`` (docker,
  kubernetes, ...) for comparison;
- the whole run: ``python -m pytest -p no:cacheprovider`` on a directory
  with one trivial test and no k3s fixture, with the plugin (entry point
  ``k3s``) loaded and with ``-p no:k3s``, the two alternating round by round.
  The difference is all the plugin adds to such a run: its import, its
  options, ``pytest_configure``, the report header (whose line on how
  cluster APIs are reached imports the plugin's Docker engine module, and
  with it the Docker SDK, and in a container also asks the engine), and its
  session hooks.

Run from the repository root::

    python -m benchmarks.import_time [--rounds 15]

The target is 10 ms or less for the plugin's import, with none of docker,
kubernetes, filelock, yaml or concurrent.futures imported by it; the whole
run's figures are reported beside it, with the heavy modules that the
plugin-enabled run has and the other does not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


HEAVY = ("docker", "kubernetes", "filelock", "yaml", "concurrent.futures")

PROBE = f"""
import json, sys, time
import pytest
began = time.perf_counter()
import pytest_k3s.plugin
plugin = time.perf_counter() - began
heavy = [m for m in {HEAVY!r} if m in sys.modules]
began = time.perf_counter()
from pytest_k3s import K3sCluster
full = time.perf_counter() - began
print(json.dumps({{"plugin": plugin, "full": full, "heavy": heavy}}))
"""

TRIVIAL = """
def test_trivial():
    assert True
"""

#: Records which heavy modules the run had loaded by its end.
CONFTEST = f"""
import json, os, sys


def pytest_unconfigure(config):
    with open(os.environ["BENCH_MODULES"], "w") as out:
        json.dump([m for m in {HEAVY!r} if m in sys.modules], out)
"""


def median_ms(samples: list[float]) -> str:
    """The median, min and max of ``samples`` (seconds) in milliseconds."""
    return (
        f"median {statistics.median(samples) * 1000:6.1f} ms "
        f"(min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f})"
    )


def import_only(
    rounds: int, env: dict[str, str]
) -> tuple[list[float], list[float], list[str]]:
    """The plugin's import, then K3sCluster's (seconds), and the heavy modules."""
    plugin: list[float] = []
    full: list[float] = []
    heavy: set[str] = set()
    subprocess.run(
        [sys.executable, "-c", PROBE], env=env, check=True, stdout=subprocess.DEVNULL
    )
    for _ in range(rounds):
        output = subprocess.run(
            [sys.executable, "-c", PROBE],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
        sample = json.loads(output)
        plugin.append(sample["plugin"])
        full.append(sample["full"])
        heavy.update(sample["heavy"])
    return plugin, full, sorted(heavy)


def session(
    directory: Path, env: dict[str, str], plugin: bool
) -> tuple[float, list[str], list[str]]:
    """Seconds for one pytest run on ``directory``, its heavy modules, k3s header."""
    modules = directory / "modules.json"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    if not plugin:
        command += ["-p", "no:k3s"]
    began = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=directory,
        env={**env, "BENCH_MODULES": str(modules)},
        capture_output=True,
        text=True,
        check=False,
    )
    spent = time.perf_counter() - began
    if done.returncode != 0 or "1 passed" not in done.stdout:
        raise SystemExit(
            f"pytest exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    header = [line for line in done.stdout.splitlines() if line.startswith("k3s")]
    if plugin != bool(header):
        raise SystemExit(
            f"the plugin was {'not ' if plugin else ''}loaded, expected otherwise:\n"
            f"{done.stdout}"
        )
    found: list[str] = json.loads(modules.read_text())
    return spent, found, header


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    options = parser.parse_args()
    # An installed package has its bytecode (pip compiles it): let the first
    # run write it, and measure imports that read it, as users' runs do.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    plugin, full, heavy = import_only(options.rounds, env)

    timed: dict[bool, list[float]] = {True: [], False: []}
    loaded: dict[bool, set[str]] = {True: set(), False: set()}
    with tempfile.TemporaryDirectory(prefix="pytest-k3s-import-") as tmp:
        directory = Path(tmp)
        (directory / "pytest.ini").write_text("[pytest]\n")
        (directory / "conftest.py").write_text(CONFTEST)
        (directory / "test_trivial.py").write_text(TRIVIAL)
        # Unmeasured: bytecode, disk cache; and what the header says here.
        header = session(directory, env, True)[2]
        session(directory, env, False)
        for number in range(options.rounds):
            order = (True, False) if number % 2 == 0 else (False, True)
            for enabled in order:
                spent, modules, _ = session(directory, env, enabled)
                timed[enabled].append(spent)
                loaded[enabled].update(modules)

    with_plugin = statistics.median(timed[True])
    without = statistics.median(timed[False])
    print(f"{options.rounds} rounds each, fresh interpreters")
    print(f"import pytest_k3s.plugin alone:          {median_ms(plugin)}")
    print(
        f"then K3sCluster (docker, kubernetes...): {median_ms(full)}, "
        f"{statistics.median(full) / statistics.median(plugin):.0f}x the plugin's"
    )
    print(f"pytest run, 1 trivial test, plugin on:   {median_ms(timed[True])}")
    print(f"pytest run, 1 trivial test, -p no:k3s:   {median_ms(timed[False])}")
    print(
        f"what the plugin adds to such a run:      "
        f"{(with_plugin - without) * 1000:6.1f} ms (difference of the medians), "
        f"{with_plugin / without:.2f}x"
    )
    print(f"the plugin's report header here: {' | '.join(header)}")
    print(f"heavy modules imported by the plugin's import: {heavy or 'none'}")
    added = sorted(loaded[True] - loaded[False])
    print(f"heavy modules the plugin adds to such a run: {added or 'none'}")
    print(
        "target: plugin import 10 ms or less: "
        + ("met" if statistics.median(plugin) <= 0.010 else "not met")
    )
    return 0 if not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
