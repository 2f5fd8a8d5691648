"""``KubeAPI``: the stateful, in-memory Kubernetes API of the k3s node double.

The node half of the double terminates TLS, authenticates, and passes each
request to ``KubeAPI.handle``. A request then goes through, in order:

- :mod:`.routing`: the path and method pick an endpoint; bodies and patches
  are decoded;
- :mod:`.storage`: reads and writes with the API server's semantics
  (optimistic concurrency, deletion, propagation), calling
- :mod:`.admission` and :mod:`.validation` on the way in;
- :mod:`.watch`, for ``?watch=1``: the event stream.

``KubeAPI`` adds what a running server has on top: the objects a fresh k3s
server holds (:mod:`.bootstrap`) and the controllers (:mod:`.controllers`).

Contract with the node half::

    Response(status, body=b"", content_type="application/json", stream=None)
    KubeAPI(*, git_version=K3S_VERSION, disable=frozenset(), ca_pem="")
    KubeAPI.handle(method, target, headers, body, *, user) -> Response
    KubeAPI.start_controllers(); KubeAPI.stop()
    node_object(name, *, internal_ip, labels, taints=(), git_version=...)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .constants import K3S_VERSION
from .nodeinfo import node_object
from .response import Response
from .routing import Router


if TYPE_CHECKING:
    from .controllers import Controllers


__all__ = ["KubeAPI", "Response", "node_object"]


class KubeAPI(Router):
    """A stateful Kubernetes API server without the HTTP layer."""

    def __init__(
        self,
        *,
        git_version: str = K3S_VERSION,
        disable: frozenset[str] = frozenset(),
        ca_pem: str = "",
        node_grace: float = 40.0,
    ) -> None:
        super().__init__(git_version=git_version, disable=disable, ca_pem=ca_pem)
        #: Seconds without a kubelet heartbeat before a Node turns NotReady.
        self.node_grace = node_grace
        self._controllers: Controllers | None = None
        from .bootstrap import bootstrap

        bootstrap(self)

    def start_controllers(self) -> None:
        """Start the background controllers (idempotent)."""
        from .controllers import Controllers

        if self._controllers is None:
            self._controllers = Controllers(self)
            self._controllers.start()

    def stop(self) -> None:
        """Stop the controllers and end every open watch."""
        if self._controllers is not None:
            self._controllers.stop()
        self.store.close_all()
