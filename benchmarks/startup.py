"""Time to a usable client for 1+0, 1+2 and 3+1 clusters, and where the time goes.

Run from the repository root::

    python -m benchmarks.startup [--image IMAGE] [--rounds N]
        [--image-cache seeded|empty|off] [--load-balancer-image IMAGE]

3+1 is measured twice: with its load balancer (the default for more than one
server) and without, so the balancer's cost shows as a ratio. Without
``--load-balancer-image`` it uses ``PYTEST_K3S_LOAD_BALANCER_IMAGE``, or
builds the test image from Debian's haproxy.

Without ``--image`` it uses ``PYTEST_K3S_IMAGE``, or builds the k3s node
double. All topologies are measured in one run, round-robin, so the ratios
compare like with like. "waiting" is time spent polling the nodes (log lines,
/readyz, Ready nodes, ServiceAccount, CoreDNS); "own" is everything else:
pytest-k3s itself and the Docker calls it makes.

The system image cache never is this user's: what earlier runs left there
would decide what the nodes pull. ``--image-cache`` says which state every
measured cluster sees, the same in every round:

- ``seeded`` (the default, what a user's runs see after their first): a
  private cache directory for this run, filled by one unmeasured 1+0 start
  and stop before the rounds;
- ``empty`` (a user's first run): a new private directory per cluster, so
  its nodes pull every system image and its stop saves them;
- ``off``: no cache, the nodes pull and the stop saves nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from kubernetes.client import CoreV1Api

from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster


#: (servers, agents, load balancer): None is the default (with > 1 server).
TOPOLOGIES = ((1, 0, None), (1, 2, None), (3, 1, None), (3, 1, False))
CACHE_MODES = ("seeded", "empty", "off")


@dataclass
class Samples:
    """Measurements of one topology over the rounds."""

    usable: list[float] = field(default_factory=list)
    waiting: list[float] = field(default_factory=list)
    own: list[float] = field(default_factory=list)
    stop: list[float] = field(default_factory=list)


def measure(spec: ClusterSpec, samples: Samples) -> None:
    """Start, use and stop one cluster, recording the times."""
    began = time.monotonic()
    cluster = K3sCluster.start(spec)
    try:
        nodes = CoreV1Api(cluster.api_client).list_node().items
        usable = time.monotonic() - began
        assert len(nodes) == spec.servers + spec.agents
    finally:
        stopping = time.monotonic()
        cluster.stop()
        samples.stop.append(time.monotonic() - stopping)
    samples.usable.append(usable)
    samples.waiting.append(cluster.timings.waiting)
    samples.own.append(usable - cluster.timings.waiting)


@contextmanager
def image_cache(mode: str, seeded: str | None) -> Iterator[bool | str]:
    """The ``image_cache`` of one measured cluster in ``mode``."""
    if mode == "off":
        yield False
    elif mode == "seeded":
        assert seeded is not None
        yield seeded
    else:
        with tempfile.TemporaryDirectory(prefix="pytest-k3s-bench-cache-") as empty:
            yield empty


def archives(directory: str) -> tuple[int, float]:
    """How many image archives a cache directory holds, and their megabytes."""
    found = list(Path(directory).rglob("*.tar"))
    return len(found), sum(p.stat().st_size for p in found) / 1e6


def main() -> None:
    """Run the benchmark and print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=os.environ.get("PYTEST_K3S_IMAGE"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-cache", choices=CACHE_MODES, default="seeded")
    parser.add_argument(
        "--load-balancer-image",
        default=os.environ.get("PYTEST_K3S_LOAD_BALANCER_IMAGE"),
    )
    options = parser.parse_args()
    image = options.image
    if not image:
        from k3s_double.build import ensure_image

        image = ensure_image()
    balancer = options.load_balancer_image
    if not balancer:
        from k3s_double.haproxy_image import ensure_load_balancer_image

        balancer = ensure_load_balancer_image()

    def spec(
        servers: int, agents: int, cache: bool | str, lb: bool | None = None
    ) -> ClusterSpec:
        return ClusterSpec(
            image=image,
            servers=servers,
            agents=agents,
            timeout=300,
            image_cache=cache,
            load_balancer=lb,
            load_balancer_image=balancer,
        )

    mode = options.image_cache
    results = {topology: Samples() for topology in TOPOLOGIES}
    with tempfile.TemporaryDirectory(prefix="pytest-k3s-bench-cache-") as private:
        if mode == "seeded":
            K3sCluster.start(spec(1, 0, private)).stop()  # its stop fills the cache
            count, megabytes = archives(private)
            if not count:
                raise SystemExit(f"the unmeasured start saved no image in {private}")
            how = (
                f"seeded: private, {count} archive(s), {megabytes:.1f} MB, filled "
                "by an unmeasured 1+0 start and stop before round 1"
            )
        elif mode == "empty":
            how = "empty: a new private directory for each cluster (pulls, saves)"
        else:
            how = "off (nodes pull every system image, stops save none)"
        for _ in range(options.rounds):
            for (servers, agents, lb), samples in results.items():
                with image_cache(mode, private) as cache:
                    measure(spec(servers, agents, cache, lb), samples)
        if mode == "seeded" and archives(private)[0] != count:
            how += (
                f"; the measured clusters saved {archives(private)[0] - count} "
                "more, so some were not fully seeded"
            )

    median = statistics.median
    print(
        f"image {image}, load balancer {balancer}, {options.rounds} round(s), "
        "medians in seconds"
    )
    print(f"image cache: {how}")
    print(
        f"{'topology':>12} {'usable':>8} {'waiting':>8} {'own':>8} {'own %':>6} "
        f"{'stop':>6}"
    )
    for (servers, agents, lb), s in results.items():
        usable = median(s.usable)
        name = f"{servers}+{agents}" + (" no LB" if lb is False else "")
        print(
            f"{name:<12} {usable:8.2f} {median(s.waiting):8.2f} "
            f"{median(s.own):8.2f} {100 * median(s.own) / usable:5.0f}% "
            f"{median(s.stop):6.2f}"
        )
    base = median(results[1, 0, None].usable)
    for topology in ((1, 2, None), (3, 1, None)):
        ratio = median(results[topology].usable) / base
        print(
            f"ratio {topology[0]}+{topology[1]} / 1+0 time to usable client: "
            f"{ratio:.2f}x"
        )
    with_lb = median(results[3, 1, None].usable)
    without = median(results[3, 1, False].usable)
    print(
        f"ratio 3+1 with its load balancer / without, time to usable client: "
        f"{with_lb / without:.2f}x (target: at most 1.10x)"
    )


if __name__ == "__main__":
    main()
