"""Reading a container's log as it grows, with Docker's and Podman's timestamps.

Docker stamps each line to the nanosecond; Podman 4's Docker-compatible API
to the second, so hundreds of lines share a stamp. A read that starts again
at the last second must skip exactly the lines already taken: a k3s node
logs ``k3s is up and running`` in the same second as 300 other lines.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_k3s.engine.docker_containers import DockerContainers
from pytest_k3s.engine.protocol import LogCursor


class GrowingLog:
    """The part of the Docker API that ``new_log_lines`` asks: ``logs``."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, str, str]] = []  # (second, stamp, text)

    def write(self, second: int, text: str, *, nanos: int | None = None) -> None:
        clock = f"2026-12-06T09:{second // 60:02d}:{second % 60:02d}"
        stamp = f"{clock}Z" if nanos is None else f"{clock}.{nanos:09d}Z"
        self.entries.append((second + 9 * 3600, stamp, text))

    def logs(self, container: str, **options: Any) -> bytes:
        assert options["timestamps"] is True
        since = options.get("since") or 0
        base = 1796515200  # 2026-12-06T00:00:00Z
        lines = [
            f"{stamp} {text}\n"
            for second, stamp, text in self.entries
            if base + second >= since
        ]
        return "".join(lines).encode()


def reader(log: GrowingLog) -> DockerContainers:
    containers = DockerContainers()
    containers.api = log  # type: ignore[assignment]
    return containers


@pytest.mark.parametrize("precision", ["second", "nanosecond"])
def test_every_line_is_read_once_however_fine_the_stamps(precision: str) -> None:
    log = GrowingLog()
    containers, cursor = reader(log), LogCursor()

    def write(second: int, text: str, index: int) -> None:
        log.write(second, text, nanos=None if precision == "second" else index)

    for index in range(300):
        write(5, f"burst-{index}", index)
    first = containers.new_log_lines("c", cursor)
    assert first == [f"burst-{i}" for i in range(300)]
    write(5, "k3s is up and running", 300)  # the same second as the burst
    write(5, "Wrote kubeconfig", 301)
    assert containers.new_log_lines("c", cursor) == [
        "k3s is up and running",
        "Wrote kubeconfig",
    ]
    assert containers.new_log_lines("c", cursor) == []
    write(6, "next second", 0)
    assert containers.new_log_lines("c", cursor) == ["next second"]
    assert cursor.lines[-3:] == [
        "k3s is up and running",
        "Wrote kubeconfig",
        "next second",
    ]
