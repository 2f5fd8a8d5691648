"""Inside containers: their files, logs and commands (part of the Docker engine).

:class:`DockerContainers` is the part of
:class:`~pytest_k3s.engine.docker_engine.DockerEngine` that reads a file out of a
container, follows its log with a cursor (so a readiness wait reads each line
once) and runs a command in it, feeding it standard input (``ctr images
import -``) or taking its standard output (``ctr images export -``).
"""

from __future__ import annotations

import io
import socket
import tarfile
import time
from collections.abc import Sequence
from typing import IO
from typing import Any

import docker
import docker.errors
from docker.utils.socket import frames_iter

from pytest_k3s.engine.protocol import LogCursor
from pytest_k3s.errors import K3sError


def _timestamp(stamp: str) -> tuple[int, int]:
    """Turn Docker's RFC 3339 log timestamp into (epoch seconds, nanoseconds)."""
    import calendar

    date, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(date, "%Y-%m-%dT%H:%M:%S"))
    return seconds, int((fraction or "0").ljust(9, "0")[:9])


class DockerContainers:
    """Files, logs and commands of the engine's containers."""

    api: docker.APIClient

    def read_file(self, container_id: str, path: str) -> bytes:
        """Return the contents of ``path`` inside the container.

        :raises FileNotFoundError: there is no such file
        """
        try:
            stream, _ = self.api.get_archive(container_id, path)
        except docker.errors.NotFound as exc:
            if "no such container" in str(exc).lower():  # Podman: lower case
                raise
            raise FileNotFoundError(f"{path} in container {container_id[:12]}") from exc
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.next()
            extracted = archive.extractfile(member) if member else None
            if extracted is None:
                raise K3sError(f"{path} in container {container_id[:12]} is no file")
            return extracted.read()

    def new_log_lines(self, container_id: str, cursor: LogCursor) -> list[str]:
        """Return the log lines written since ``cursor`` and advance it."""
        raw = self.api.logs(
            container_id,
            stdout=True,
            stderr=True,
            timestamps=True,
            since=cursor.since or None,
        )
        fresh: list[str] = []
        repeated = 0  # lines stamped cursor.last met in this read
        for line in raw.decode("utf-8", "replace").splitlines():
            stamp, _, text = line.partition(" ")
            try:
                moment = _timestamp(stamp)
            except ValueError:
                continue
            if moment < cursor.last:
                continue
            if moment == cursor.last:
                repeated += 1
                if repeated <= cursor.at_last:
                    continue  # taken by an earlier read
                cursor.at_last += 1
            else:
                cursor.last, cursor.at_last, repeated = moment, 1, 1
            fresh.append(text)
        cursor.since = cursor.last[0]
        cursor.lines = (cursor.lines + fresh)[-cursor.keep :]
        return fresh

    def logs(self, container_id: str, *, tail: int | None = None) -> str:
        """Return the container's log (stdout and stderr interleaved)."""
        raw: bytes = self.api.logs(
            container_id, stdout=True, stderr=True, tail="all" if tail is None else tail
        )
        return raw.decode("utf-8", "replace")

    def exec(
        self,
        container_id: str,
        command: Sequence[str],
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
    ) -> tuple[int, str]:
        """Run ``command`` in the container, feeding it ``stdin``.

        Returns the exit code and the combined output; with ``stdout``, the
        standard output goes there as it comes (``ctr images export -``) and
        only the standard error is returned.
        """
        exec_id = self.api.exec_create(
            container_id, list(command), stdin=stdin is not None, privileged=False
        )["Id"]
        if stdout is not None:
            errors = []
            for out, err in self.api.exec_start(exec_id, stream=True, demux=True):
                if out:
                    stdout.write(out)
                if err:
                    errors.append(err)
            output = b"".join(errors)
        elif stdin is None:
            output = self.api.exec_start(exec_id)
        else:
            sock: Any = self.api.exec_start(exec_id, socket=True)
            # The SDK hands back a file-like wrapper; writing needs the socket.
            raw = getattr(sock, "_sock", sock)
            try:
                while chunk := stdin.read(1 << 20):
                    raw.sendall(chunk)
                raw.shutdown(socket.SHUT_WR)
                frames = frames_iter(sock, tty=False)  # type: ignore[no-untyped-call]
                output = b"".join(data for _, data in frames)
            finally:
                sock.close()
        code = self.api.exec_inspect(exec_id)["ExitCode"]
        text = bytes(output).decode("utf-8", "replace")
        return int(code if code is not None else -1), text
