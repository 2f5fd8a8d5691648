"""Readiness waits, with a fake engine: no Docker, no sleeping to speak of."""

from __future__ import annotations

from typing import Any

from pytest_k3s.engine.node_container import Node
from pytest_k3s.engine.protocol import LogCursor
from pytest_k3s.lifecycle.readiness import INIT_READY_LOG
from pytest_k3s.lifecycle.readiness import READY_LOG
from pytest_k3s.lifecycle.readiness import Readiness
from tests.fake_engine import FakeEngine


class BurstyLogs(FakeEngine):
    """A node that logs its ready lines in one burst of 500 lines."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = [
            [
                "containerd is now running",
                "k3s is up and running",
                *(
                    f'I0101 shared_informer.go:320] "Caches are synced" {i}'
                    for i in range(500)
                ),
            ]
        ]

    def new_log_lines(self, container_id: str, cursor: LogCursor) -> list[str]:
        fresh = self.batches.pop(0) if self.batches else []
        cursor.lines = (cursor.lines + fresh)[-cursor.keep :]
        return fresh

    def state(self, container_id: str) -> dict[str, Any]:
        return {"Status": "running"}

    def logs(self, container_id: str, *, tail: int | None = None) -> str:
        return ""


def test_a_ready_line_seen_once_is_remembered_after_a_burst() -> None:
    node = Node("k3s-x-server-0", "server", "id0")
    ready = Readiness(BurstyLogs(), "k3s-x", 2.0, [node])
    ready.wait_for_log(node, INIT_READY_LOG)
    # The ready line came in the same burst and scrolled out of the buffer.
    assert not any(
        READY_LOG["server"] in line for line in ready._cursors[node.name].lines
    )
    ready.wait_for_log(node, READY_LOG["server"])
