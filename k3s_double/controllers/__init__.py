"""Controllers that make the stored objects come alive, in the spirit of KWOK.

One daemon thread runs every controller's ``reconcile()`` a few times a
second, in a fixed order: owners before the pods they create, the scheduler
before the kubelet. Each controller family has its own module behind the one
:class:`~.base.Reconciler` base:

- :mod:`.base`: the base class and what every controller shares (object
  accessors, create/delete/status writes, owned objects, events);
- :mod:`.nodes`: node lifecycle (heartbeats, Ready=Unknown, unreachable
  taints) and the pod lifecycle a kubelet drives (pods start, become Ready,
  finish, go away);
- :mod:`.crds`: CustomResourceDefinitions (names accepted, established,
  their custom resources deleted with them);
- :mod:`.namespaces`: ``kube-root-ca.crt``, the ``default`` ServiceAccount,
  and emptying Terminating namespaces;
- :mod:`.garbage`: the garbage collector (orphans, foreground deletion);
- :mod:`.workloads`: ReplicaSets and Deployments (rolling updates);
- :mod:`.jobs`: Jobs, including the Helm install Jobs of a fresh server;
- :mod:`.scheduling`: the scheduler and its fit predicates;
- :mod:`.servicelb`: k3s' servicelb for LoadBalancer services.
"""

from __future__ import annotations

import sys
import threading
import traceback
from typing import TYPE_CHECKING

from .base import Reconciler
from .base import Settings
from .crds import CustomResourceDefinitions
from .garbage import GarbageCollector
from .jobs import Jobs
from .namespaces import Namespaces
from .nodes import NodeLifecycle
from .nodes import PodLifecycle
from .scheduling import Scheduler
from .servicelb import ServiceLB
from .workloads import Deployments
from .workloads import ReplicaSets


if TYPE_CHECKING:
    from k3s_double.apiserver.server import KubeAPI
    from k3s_double.apiserver.storage import Storage

TICK = 0.1

#: The order of one pass: owners before what they create, so a new
#: Deployment has its pods scheduled and started within a few passes.
ORDER: tuple[type[Reconciler], ...] = (
    NodeLifecycle,
    CustomResourceDefinitions,
    Namespaces,
    GarbageCollector,
    ReplicaSets,
    Deployments,
    Jobs,
    Scheduler,
    PodLifecycle,
    ServiceLB,
)


class Controllers:
    """The background reconcile loop over all controllers."""

    def __init__(self, storage: Storage, settings: Settings | None = None) -> None:
        self.storage = storage
        self.settings = settings or Settings()
        self.reconcilers = [controller(storage, self.settings) for controller in ORDER]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the loop thread."""
        self._thread = threading.Thread(
            target=self._run, name="k3s-controllers", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop thread and wait briefly for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            for reconciler in self.reconcilers:
                try:
                    reconciler.reconcile()
                except Exception:  # one failing reconciler must not stop the others
                    traceback.print_exc(file=sys.stderr)


def start_controllers(api: KubeAPI, settings: Settings | None = None) -> Controllers:
    """Run the controllers on ``api``'s storage until ``api.stop()``."""
    controllers = Controllers(api.storage, settings)
    api.on_stop(controllers.stop)
    controllers.start()
    return controllers
