"""Docker labels: the keys every object we create carries, and their values.

Labels are the source of truth about our objects: a cluster is the set of
containers and networks labelled with its name (pytest-k3s creates no
volume; the anonymous volumes the k3s image declares cannot carry labels and
are removed with their containers), and a run owns what carries its run id
and owner. Which labelled clusters a run's end or a sweep
removes is decided in :mod:`pytest_k3s.run.leftovers`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from pytest_k3s.owner import Owner


PREFIX = "io.pytest-k3s"
CLUSTER = f"{PREFIX}.cluster"
#: On the throwaway container that asks the engine what it can grant (it
#: carries the cluster's labels too, so a sweep or ``rm`` finds it).
PROBE = f"{PREFIX}.probe"
ROLE = f"{PREFIX}.role"
RUN = f"{PREFIX}.run"
SPEC = f"{PREFIX}.spec"
OWNER = f"{PREFIX}.owner"
#: The owner's PID namespace and boot, ``<pidns>/<boot>``. Apart from OWNER,
#: whose ``host/pid/start`` form older releases read (and would misread).
OWNER_NS = f"{PREFIX}.owner-ns"
#: When the cluster was created (seconds since the epoch).
CREATED = f"{PREFIX}.created"
#: "true" on clusters that may outlive their run (--k3s-keep and friends).
KEEP = f"{PREFIX}.keep"
#: Until when a kept cluster is spared by the sweep (seconds since the epoch).
KEEP_UNTIL = f"{PREFIX}.keep-until"
#: "true" on clusters kept between runs for reuse (``--k3s-reuse``): never
#: leftovers, whoever started them (see :mod:`pytest_k3s.reuse`).
REUSE = f"{PREFIX}.reuse"
#: The run's state directory (kubeconfigs), removed with the cluster by a sweep.
STATE_DIR = f"{PREFIX}.state-dir"
#: On nodes: the directory their system images are saved into before the
#: cluster is removed (see :mod:`pytest_k3s.imagecache`).
IMAGE_CACHE = f"{PREFIX}.image-cache"
#: The ROLE of a cluster's load balancer (not a node).
BALANCER_ROLE = "loadbalancer"
#: The ROLE of a cluster's own registry (not a node).
REGISTRY_ROLE = "registry"
#: On the registry mirror's objects: the registry a container mirrors
#: ("" on its network and volumes). They carry CLUSTER too, with the value
#: ``pytest-k3s-mirror``, but are no cluster: they outlive runs, no sweep
#: takes them, and only ``pytest-k3s mirror rm`` removes them.
MIRROR = f"{PREFIX}.mirror"
#: On a mirror container: where its blobs are (a volume or a directory).
MIRROR_STORAGE = f"{PREFIX}.mirror-storage"
#: On containers with a fixed address on the cluster network: that address
#: (an added node takes the next one).
ADDRESS = f"{PREFIX}.address"


def labels_for(
    cluster: str,
    role: str,
    *,
    run: str,
    spec_hash: str,
    owner: Owner,
    created: float | None = None,
    keep_until: float | None = None,
    state_dir: str | None = None,
    reusable: bool = False,
    image_cache: str | None = None,
) -> dict[str, str]:
    """Return the labels of one object of ``cluster`` (role: server, agent, network).

    :param keep_until: mark the cluster as kept until this time (epoch seconds)
    :param state_dir: the directory holding the cluster's kubeconfig, when it
        is a run's state directory that a sweep should remove too
    :param image_cache: the cluster's system image cache directory, if any
    """
    found = {
        CLUSTER: cluster,
        ROLE: role,
        RUN: run,
        SPEC: spec_hash,
        OWNER: str(owner),
        OWNER_NS: owner.namespace,
        CREATED: str(int(time.time() if created is None else created)),
    }
    if keep_until is not None:
        found[KEEP] = "true"
        found[KEEP_UNTIL] = str(int(keep_until))
    if state_dir is not None:
        found[STATE_DIR] = state_dir
    if reusable:
        found[REUSE] = "true"
    if image_cache is not None:
        found[IMAGE_CACHE] = image_cache
    return found


#: Clusters found on an engine: each one's name, with one object's labels.
Found = Mapping[str, Mapping[str, str]]


def owner_of(found: Mapping[str, str]) -> Owner | None:
    """The owner an object's labels name; None when there is none."""
    return Owner.parse(found.get(OWNER, ""), found.get(OWNER_NS))
