"""Soak test: many consecutive ``-n 3`` runs with random faults, then count leftovers.

Each round writes a small suite using three topologies (1 server, 1 server +
1 agent, 3 servers) and runs it under xdist with one fault drawn at random:

- ``none``: expect every test to pass;
- ``kill-node``: a test kills a node container of its own module cluster
  mid-test (the module cluster must still be removed cleanly);
- ``sigterm``: the runner sends SIGTERM to pytest once a cluster is up, as a
  CI system cancelling the job does (expect exit code 2);
- ``crash-worker``: a test kills its xdist worker (expect exactly that test
  to fail).

After each round it counts the containers, networks and volumes left on the
engine. It prints one line per round and a summary: rounds, failures that
were not injected, and leftovers. Run it alone on the engine (it counts
every labelled object)::

    python -m benchmarks.soak --rounds 20
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import docker


LABEL = "io.pytest-k3s.cluster"
FAULTS = ("none", "kill-node", "sigterm", "crash-worker")

SUITE = """
import os, pathlib, time
import pytest
from kubernetes.client import CoreV1Api

READY = pathlib.Path(os.environ["SOAK_READY"])


def use(client, namespace):
    READY.write_text("up")
    core = CoreV1Api(client)
    assert core.list_node().items
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "soak"}, "data": {"k": "v"}}
    )
    time.sleep(1)  # room for a signal to arrive mid-test


@pytest.mark.parametrize("i", range(2))
def test_one_server(k3s_client, k3s_namespace, i):
    use(k3s_client, k3s_namespace)


@pytest.mark.k3s(agents=1)
@pytest.mark.parametrize("i", range(2))
def test_with_an_agent(k3s_client, k3s_namespace, i):
    use(k3s_client, k3s_namespace)


@pytest.mark.k3s(servers=3)
@pytest.mark.parametrize("i", range(2))
def test_three_servers(k3s_client, k3s_namespace, i):
    use(k3s_client, k3s_namespace)
"""

FAULTY = """
import os
import docker
import pytest

pytestmark = pytest.mark.k3s(agents=1)
FAULT = os.environ["SOAK_FAULT"]


def test_fault(k3s_module_cluster):
    if FAULT == "crash-worker":
        os._exit(3)
    if FAULT == "kill-node":
        client = docker.from_env()
        try:
            client.containers.get(k3s_module_cluster.agents[0].container_id).kill()
        finally:
            client.close()
"""


def leftovers(client: docker.DockerClient) -> list[str]:
    """Every labelled container and network, and every volume, on the engine."""
    api = client.api
    found = [c["Names"][0] for c in api.containers(all=True, filters={"label": LABEL})]
    found += [n["Name"] for n in api.networks(filters={"label": LABEL})]
    found += [v["Name"] for v in api.volumes().get("Volumes") or []]
    return found


def run_round(directory: Path, fault: str, timeout: float) -> tuple[int, str, float]:
    """Run the suite once with ``fault``; return (exit code, outcome line, seconds)."""
    ready = directory / "ready"
    ready.unlink(missing_ok=True)
    env = {**os.environ, "SOAK_READY": str(ready), "SOAK_FAULT": fault}
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-n", "3", "-p", "no:randomly", "."],
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if fault == "sigterm":
        deadline = time.monotonic() + timeout
        while not ready.exists() and process.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    outcome = next(
        (line.strip("= ") for line in reversed(output.splitlines()) if " in " in line),
        output.strip().splitlines()[-1] if output.strip() else "",
    )
    return process.returncode, outcome, time.monotonic() - began


def expected(fault: str, code: int, outcome: str) -> bool:
    """Whether a round ended as its fault says it must."""
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|error)", outcome)}
    if fault == "sigterm":
        return code == 2
    if fault == "crash-worker":
        return code == 1 and counts.get("failed") == 1 and counts.get("passed") == 6
    return code == 0 and counts.get("passed") == 7


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=600)
    options = parser.parse_args()
    seed = options.seed if options.seed is not None else random.randrange(1 << 30)
    draw = random.Random(seed)
    if "PYTEST_K3S_IMAGE" not in os.environ:
        from k3s_double.build import ensure_image

        os.environ["PYTEST_K3S_IMAGE"] = ensure_image()
    client = docker.from_env()
    before = set(leftovers(client))
    unexpected = 0
    left_total = 0
    seconds: list[float] = []
    print(f"seed {seed}, image {os.environ['PYTEST_K3S_IMAGE']}")
    with tempfile.TemporaryDirectory(prefix="pytest-k3s-soak-") as tmp:
        directory = Path(tmp)
        (directory / "test_suite.py").write_text(textwrap.dedent(SUITE))
        (directory / "test_faulty.py").write_text(textwrap.dedent(FAULTY))
        for number in range(1, options.rounds + 1):
            fault = draw.choice(FAULTS)
            code, outcome, spent = run_round(directory, fault, options.timeout)
            time.sleep(0.5)  # removals the engine finishes asynchronously
            left = sorted(set(leftovers(client)) - before)
            ok = expected(fault, code, outcome)
            unexpected += not ok
            left_total += len(left)
            seconds.append(spent)
            print(
                f"round {number:2}: {fault:12} exit {code} {outcome!r} "
                f"{spent:5.1f}s {'ok' if ok else 'UNEXPECTED'}"
                + (f" LEFT {left}" if left else "")
            )
    client.close()
    print(
        f"rounds {options.rounds}, failures not injected {unexpected}, "
        f"leftovers {left_total}, mean round {sum(seconds) / len(seconds):.1f}s"
    )
    return 1 if unexpected or left_total else 0


if __name__ == "__main__":
    sys.exit(main())
