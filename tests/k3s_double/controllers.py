"""Controllers that make objects come alive (filled in next)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from .api import KubeAPI


class Controllers:
    """The background reconcile loop."""

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self._stop = threading.Event()

    def start(self) -> None:
        """Start the loop thread."""

    def stop(self) -> None:
        """Stop the loop thread."""
        self._stop.set()
