"""Start and stop with an empty image cache, a seeded one, and none.

Each round, side by side in one run: a cluster with an empty cache directory
(its nodes pull the system images, and its stop saves them), a cluster
seeded from that directory (its nodes import them and pull nothing), and one
with the cache off. "usable" is from the start to CoreDNS and the local-path
provisioner available, which is what pulls hold up; "stop" includes the
save. Run from the repository root::

    python -m benchmarks.image_cache [--rounds 3] [--agents 1]

Against the node double a pull is simulated and short, so the seeded gain
is small here; against real k3s a pull from Docker Hub takes seconds per
image. What this measures truthfully everywhere is our own cost: saving at
the stop, and seeding at the start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster


def once(spec: ClusterSpec) -> tuple[float, float]:
    """Seconds to a usable cluster, and to stop it."""
    began = time.monotonic()
    cluster = K3sCluster.start(spec)
    try:
        for name in ("coredns", "local-path-provisioner"):
            cluster.wait_for(
                "deploy", name, namespace="kube-system", condition="Available"
            )
        usable = time.monotonic() - began
    finally:
        stopping = time.monotonic()
        cluster.stop()
    return usable, time.monotonic() - stopping


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--agents", type=int, default=1)
    options = parser.parse_args()
    if "PYTEST_K3S_IMAGE" not in os.environ:
        from k3s_double.build import ensure_image

        os.environ["PYTEST_K3S_IMAGE"] = ensure_image()
    image = os.environ["PYTEST_K3S_IMAGE"]
    results: dict[str, list[tuple[float, float]]] = {
        kind: [] for kind in ("empty", "seeded", "off")
    }
    size = 0
    for _ in range(options.rounds):
        with tempfile.TemporaryDirectory(prefix="pytest-k3s-cache-") as tmp:
            cached = ClusterSpec(image=image, agents=options.agents, image_cache=tmp)
            results["empty"].append(once(cached))
            size = sum(p.stat().st_size for p in Path(tmp).rglob("*.tar"))
            results["seeded"].append(once(cached))
        off = ClusterSpec(image=image, agents=options.agents, image_cache=False)
        results["off"].append(once(off))

    def median(kind: str, index: int) -> float:
        return statistics.median(r[index] for r in results[kind])

    print(
        f"image {image}, 1 server + {options.agents} agent(s), "
        f"{options.rounds} rounds (median); cache {size / 1e6:.1f} MB"
    )
    for kind in ("empty", "seeded", "off"):
        print(
            f"{kind:>7}: usable {median(kind, 0):.2f} s "
            f"({median(kind, 0) / median('off', 0):.2f}x of off), "
            f"stop {median(kind, 1):.2f} s ({median(kind, 1) / median('off', 1):.2f}x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
