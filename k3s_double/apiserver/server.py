"""``KubeAPI``: the stateful, in-memory Kubernetes API of the k3s node double.

The node half of the double terminates TLS, authenticates, and passes each
request to ``KubeAPI.handle``. ``KubeAPI`` is composed of, in the order a
request goes through them:

- a :class:`~.routing.Router`: the path and method pick an endpoint; bodies
  and patches are decoded; ``?watch=1`` goes to :mod:`.watch`;
- a :class:`~.storage.Storage`: reads and writes with the API server's
  semantics (optimistic concurrency, admission, validation), with a
  :class:`~.deletion.Deletion` for DELETE, over a
  :class:`~.database.Database` (objects, resourceVersions, watchers).

On creation it holds the objects a fresh k3s server holds
(:mod:`.bootstrap`). The API server knows nothing of controllers or nodes:
whoever starts background work on it (``k3s_double.controllers``) registers
how to stop it with :meth:`KubeAPI.on_stop`.

Contract with the node half::

    KubeAPI(*, git_version=K3S_VERSION, disable=frozenset(), ca_pem="",
            storage_start=0.0,   # seconds until the storage is ready; None:
                                 # the caller sets storage.ready
            populate=True)       # False: no bootstrap objects (call populate())
    KubeAPI.handle(method, target, headers, body, *, user, groups=()) -> Response
    KubeAPI.on_stop(callback); KubeAPI.stop()
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from collections.abc import Mapping

from k3s_double.constants import K3S_VERSION

from . import protobuf
from .bootstrap import bootstrap
from .database import Database
from .kinds import Kind
from .kinds import Obj
from .response import Response
from .routing import Router
from .served import ServedKinds
from .storage import Storage


__all__ = ["KubeAPI", "Response"]


class KubeAPI:
    """A stateful Kubernetes API server without the HTTP layer.

    Besides :meth:`handle` (a request in, a :class:`~.response.Response`
    out), it offers the in-process client calls the controllers and the
    double's tests use; they go to :attr:`storage` unchanged.
    """

    def __init__(
        self,
        *,
        git_version: str = K3S_VERSION,
        disable: frozenset[str] = frozenset(),
        ca_pem: str = "",
        storage_start: float | None = 0.0,
        populate: bool = True,
    ) -> None:
        self.storage = Storage(disable=disable, ca_pem=ca_pem)
        self.router = Router(self.storage, git_version=git_version)
        self._on_stop: list[Callable[[], None]] = []
        if populate:
            self.populate()
        if storage_start is None:
            return
        if storage_start > 0:
            timer = threading.Timer(storage_start, self.storage.ready.set)
            timer.daemon = True
            timer.start()
            self.on_stop(timer.cancel)
        else:
            self.storage.ready.set()

    def handle(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        user: str,
        groups: tuple[str, ...] = (),
    ) -> Response:
        """Answer one request; ``target`` is the raw path plus query string.

        ``user`` and ``groups`` are the caller's authenticated identity.
        Protobuf bodies and answers are translated around the router
        (:func:`.protobuf.serve`), which sees JSON only.
        """

        def route(sent: Mapping[str, str], content: bytes) -> Response:
            return self.router.handle(
                method, target, sent, content, user=user, groups=groups
            )

        return protobuf.serve(method, target, headers, body, route)

    def populate(self) -> None:
        """Create the objects a fresh k3s server holds (:mod:`.bootstrap`)."""
        bootstrap(self.storage)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` first when the API stops (background work ends)."""
        self._on_stop.append(callback)

    def stop(self) -> None:
        """Stop what was registered with :meth:`on_stop`; end every open watch."""
        for callback in self._on_stop:
            callback()
        self.storage.store.close_all()

    # In-process client calls, as the controllers and tests make them.

    @property
    def store(self) -> Database:
        """The database under the storage."""
        return self.storage.store

    @property
    def kinds(self) -> ServedKinds:
        """The kinds this API serves now."""
        return self.storage.kinds

    @property
    def disable(self) -> frozenset[str]:
        """The packaged components ``--disable`` turned off."""
        return self.storage.disable

    def find(self, kind_name: str, namespace: str, name: str) -> Obj | None:
        """One object by kind name, or None."""
        return self.storage.find(kind_name, namespace, name)

    def objects(self, kind_name: str, namespace: str | None = None) -> list[Obj]:
        """All objects of a kind by kind name."""
        return self.storage.objects(kind_name, namespace)

    def create(self, kind: Kind, namespace: str, obj: Obj) -> Obj:
        """Create an object as a POST does."""
        return self.storage.create(kind, namespace, obj)

    def mutate(
        self, kind_name: str, namespace: str, name: str, change: Callable[[Obj], object]
    ) -> Obj | None:
        """Read, change and write one object under the database lock."""
        return self.storage.mutate(kind_name, namespace, name, change)
