"""Pulling a workload image on every node, without and with the registry mirror.

An "upstream" registry (:mod:`k3s_double.upstream`, standing for Docker
Hub) holds a fresh test image (``sleep`` and a layer of ``--layer-mib``
random bytes) and counts the blob fetches it answers. Each phase starts
``--clusters`` clusters of the node double (1 server + ``--agents``
agents, whose containerd pulls for real) and then, one cluster after
another, runs a Deployment of that image with a replica on every node,
timed from the apply to every replica Ready. Without the mirror every node
fetches every blob from the upstream; with it (``RegistryMirror``, started
fresh on a volume by the first cluster) the upstream should be asked once
per blob, the first cluster paying for the mirror's own fetch (Distribution
2.8 fetches a blob twice the first time, to keep and to stream it, and once
more for each node that asks meanwhile). The upstream is a container on the
same engine, so the times show what the mirror costs or saves locally, not
what a pull from Docker Hub costs; the counts are the point. Run from the
repository root::

    python -m benchmarks.registry_mirror [--clusters 2] [--agents 2]

Its mirror is the upstream's alone (other mirrors on the engine stay). It
removes everything it made (its clusters, the upstream, that mirror), also
on an error or Ctrl-C (SIGTERM too).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import time
from collections import Counter
from collections.abc import Iterator
from types import FrameType

import docker

from k3s_double import upstream as upstream_registry
from k3s_double.build import ensure_image
from k3s_double.registry_image import ensure_registry_image
from k3s_double.upstream import Upstream
from k3s_double.upstream import run_everywhere
from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s import RegistryMirror
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.lifecycle import mirror


def phase(
    engine: DockerEngine,
    upstream: Upstream,
    spec: ClusterSpec,
    clusters: int,
) -> list[tuple[float, Counter[str]]]:
    """For each cluster: seconds from apply to Ready, and the blobs fetched."""
    results = []
    with contextlib.ExitStack() as stack:
        started = []
        for _ in range(clusters):
            cluster = stack.enter_context(K3sCluster.start(spec, engine=engine))
            upstream.join(cluster.network)
            started.append(cluster)
        for cluster in started:
            before = upstream.fetches()
            began = time.monotonic()
            nodes = run_everywhere(cluster, upstream.image, timeout=300)
            seconds = time.monotonic() - began
            if nodes != sorted(node.name for node in cluster.nodes):
                raise SystemExit(f"{cluster.name}: pods not one a node: {nodes}")
            results.append((seconds, upstream.fetches() - before))
    return results


@contextlib.contextmanager
def interrupted_by_sigterm() -> Iterator[None]:
    """SIGTERM as Ctrl-C, so the clean-up runs for both."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> int:
    """Measure both phases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=2)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--layer-mib", type=int, default=8)
    options = parser.parse_args()
    double = ensure_image()
    registry_image = ensure_registry_image()
    engine = DockerEngine.connect()
    client = docker.from_env()
    mirror.remove(engine, [upstream_registry.REGISTRY])  # a stale one of ours
    spec = ClusterSpec(
        image=double,
        agents=options.agents,
        registries=upstream_registry.REGISTRIES,
        image_cache=False,
    )
    with_mirror = ClusterSpec(
        image=double,
        agents=options.agents,
        registries=upstream_registry.REGISTRIES,
        image_cache=False,
        registry_mirror=RegistryMirror(
            image=registry_image, upstreams=(upstream_registry.MIRRORED,)
        ),
    )
    upstream = None
    try:
        with interrupted_by_sigterm():
            upstream = Upstream.start(
                client, layer_bytes=options.layer_mib * 1024 * 1024
            )
            blobs = upstream.blobs
            without = phase(engine, upstream, spec, options.clusters)
            # The mirror's registry panics at start if its upstream is not
            # reachable: the upstream joins its network before it starts.
            upstream.join_mirror(mirror.ensure_network(engine))
            through = phase(engine, upstream, with_mirror, options.clusters)
    finally:
        if upstream is not None:
            upstream.remove()
        mirror.remove(engine, [upstream_registry.REGISTRY])
        engine.close()
        client.close()

    nodes = 1 + options.agents
    print(
        f"{options.clusters} clusters x {nodes} nodes (1 server + {options.agents} "
        f"agents), {double}; image of {len(blobs)} blobs (config, sleep, "
        f"{options.layer_mib} MiB layer); per cluster: apply to Ready, upstream "
        "blob GETs (per blob)"
    )
    heads = "".join(f"{f'cluster {i + 1}':>18}" for i in range(options.clusters))
    print(f"{'':<15}{heads}{'total':>8}")
    totals = []
    for name, results in (("without mirror", without), ("with mirror", through)):
        cells = "".join(
            f"{f'{s:.2f} s  ' + '+'.join(str(f[b]) for b in blobs):>18}"
            for s, f in results
        )
        totals.append(sum(sum(f.values()) for _, f in results))
        print(f"{name:<15}{cells}{totals[-1]:>8}")
    print(
        f"registry mirror: upstream blob requests {totals[0]} without, "
        f"{totals[1]} with ({options.clusters} clusters x {nodes} nodes)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
