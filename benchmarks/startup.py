"""Time to a usable client for 1+0, 1+2 and 3+1 clusters, and where the time goes.

Run from the repository root::

    python -m benchmarks.startup [--image IMAGE] [--rounds N]

Without ``--image`` it uses ``PYTEST_K3S_IMAGE``, or builds the k3s node
double. All topologies are measured in one run, round-robin, so the ratios
compare like with like. "waiting" is time spent polling the nodes (log lines,
/readyz, Ready nodes, ServiceAccount, CoreDNS); "own" is everything else:
pytest-k3s itself and the Docker calls it makes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from dataclasses import field

from kubernetes.client import CoreV1Api

from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster


TOPOLOGIES = ((1, 0), (1, 2), (3, 1))


@dataclass
class Samples:
    """Measurements of one topology over the rounds."""

    usable: list[float] = field(default_factory=list)
    waiting: list[float] = field(default_factory=list)
    own: list[float] = field(default_factory=list)
    stop: list[float] = field(default_factory=list)


def measure(image: str, servers: int, agents: int, samples: Samples) -> None:
    """Start, use and stop one cluster, recording the times."""
    spec = ClusterSpec(image=image, servers=servers, agents=agents, timeout=300)
    began = time.monotonic()
    cluster = K3sCluster.start(spec)
    try:
        nodes = CoreV1Api(cluster.api_client).list_node().items
        usable = time.monotonic() - began
        assert len(nodes) == servers + agents
    finally:
        stopping = time.monotonic()
        cluster.stop()
        samples.stop.append(time.monotonic() - stopping)
    samples.usable.append(usable)
    samples.waiting.append(cluster.timings.waiting)
    samples.own.append(usable - cluster.timings.waiting)


def main() -> None:
    """Run the benchmark and print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=os.environ.get("PYTEST_K3S_IMAGE"))
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    image = options.image
    if not image:
        from k3s_double.build import ensure_image

        image = ensure_image()

    results = {topology: Samples() for topology in TOPOLOGIES}
    for _ in range(options.rounds):
        for (servers, agents), samples in results.items():
            measure(image, servers, agents, samples)

    median = statistics.median
    print(f"image {image}, {options.rounds} round(s), medians in seconds")
    print(
        f"{'topology':>9} {'usable':>8} {'waiting':>8} {'own':>8} {'own %':>6} "
        f"{'stop':>6}"
    )
    for (servers, agents), s in results.items():
        usable = median(s.usable)
        print(
            f"{servers}+{agents:<7} {usable:8.2f} {median(s.waiting):8.2f} "
            f"{median(s.own):8.2f} {100 * median(s.own) / usable:5.0f}% "
            f"{median(s.stop):6.2f}"
        )
    base = median(results[1, 0].usable)
    for topology in ((1, 2), (3, 1)):
        ratio = median(results[topology].usable) / base
        print(
            f"ratio {topology[0]}+{topology[1]} / 1+0 time to usable client: "
            f"{ratio:.2f}x"
        )


if __name__ == "__main__":
    main()
