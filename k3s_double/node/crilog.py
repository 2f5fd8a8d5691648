"""Container logs in CRI's format, and the kubelet's restart back-off.

containerd writes each line a container prints as
``<RFC3339Nano> <stream> <tag> <line>``: ``stream`` is ``stdout`` or
``stderr``, ``tag`` ``F`` for a full line and ``P`` for a part of a longer
one (cri-api ``pkg/apis/runtime/v1``, "CRI container log format"), under
``/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log``. The
kubelet reads them back for ``pods/log``: ``tailLines``, ``sinceSeconds``,
``limitBytes``, ``timestamps`` (printed with nine digits, as
``pkg/kubelet/kuberuntime/logs`` does) and ``follow``.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO


#: The root of the pods' log directories.
LOG_ROOT = "/var/log/pods"
#: Longest line containerd writes at once; longer ones are split, tagged ``P``.
MAX_LINE = 16 * 1024
#: The first restart back-off and its cap, in seconds. The kubelet's are 10 s
#: and 300 s; the double's are short, so that tests see real restarts.
BACKOFF_START = 1.0
BACKOFF_CAP = 8.0


def backoff(failures: int) -> float:
    """Seconds to wait before restart number ``failures`` + 1: 1, 2, 4, 8, 8..."""
    return float(min(BACKOFF_START * 2 ** max(failures, 0), BACKOFF_CAP))


def pod_log_dir(namespace: str, pod: str, uid: str, root: str = LOG_ROOT) -> str:
    """The directory of one pod's logs, as the kubelet names it."""
    return os.path.join(root, f"{namespace}_{pod}_{uid}")


def log_path(directory: str, container: str, restart: int) -> str:
    """The log file of attempt ``restart`` of ``container``."""
    return os.path.join(directory, container, f"{restart}.log")


def rfc3339nano(stamp: float) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: trailing zeros of the fraction cut."""
    whole = datetime.datetime.fromtimestamp(int(stamp), datetime.timezone.utc)
    nanos = round((stamp - int(stamp)) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + datetime.timedelta(seconds=1), nanos - 1_000_000_000
    fraction = f"{nanos:09d}".rstrip("0")
    return (
        whole.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"
    )


def parse_stamp(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time with up to nine digits."""
    body = text.rstrip("Z")
    seconds, _, fraction = body.partition(".")
    whole = datetime.datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc
    )
    return whole.timestamp() + (
        int(fraction.ljust(9, "0")[:9]) / 1e9 if fraction else 0
    )


def nine_digits(text: str) -> str:
    """A stamp as the kubelet prints it with ``timestamps=true``."""
    body = text.rstrip("Z")
    seconds, _, fraction = body.partition(".")
    return f"{seconds}.{fraction.ljust(9, '0')[:9]}Z"


class LogWriter:
    """Writes one container attempt's stdout and stderr into its CRI log."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        self._file = open(path, "ab")  # noqa: SIM115 (closed by close())
        self._lock = threading.Lock()

    def line(self, stream: str, data: bytes, *, partial: bool = False) -> None:
        """Write one line (without its newline) of ``stream``."""
        tag = b"P" if partial else b"F"
        record = b"%s %s %s %s\n" % (
            rfc3339nano(time.time()).encode(),
            stream.encode(),
            tag,
            data,
        )
        with self._lock:
            self._file.write(record)
            self._file.flush()

    def pump(self, stream: str, source: BinaryIO) -> None:
        """Copy ``source`` into the log line by line until it ends."""
        while True:
            data = source.readline(MAX_LINE)
            if not data:
                return
            if data.endswith(b"\n"):
                self.line(stream, data[:-1])
            else:
                self.line(stream, data, partial=True)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._file.close()


@dataclass(frozen=True)
class Record:
    """One parsed line of a CRI log."""

    stamp: str
    stream: str
    partial: bool
    data: bytes

    def render(self, *, timestamps: bool) -> bytes:
        """The record as ``pods/log`` shows it."""
        end = b"" if self.partial else b"\n"
        prefix = (nine_digits(self.stamp) + " ").encode() if timestamps else b""
        return prefix + self.data + end


def parse(line: bytes) -> Record | None:
    """A CRI log line, or None when it is malformed (the kubelet skips those)."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
        return None
    data = parts[3] if len(parts) == 4 else b""
    return Record(parts[0].decode(), parts[1].decode(), parts[2] == b"P", data)


@dataclass(frozen=True)
class LogOptions:
    """What ``pods/log`` asks for."""

    tail: int | None = None
    since: float | None = None
    timestamps: bool = False
    limit_bytes: int | None = None
    follow: bool = False


def read_log(
    path: str,
    options: LogOptions,
    running: Callable[[], bool] = lambda: False,
    poll: float = 0.1,
) -> Iterator[bytes]:
    """The log at ``path`` as ``pods/log`` renders it.

    With ``follow``, lines keep coming until ``running()`` turns false and
    the file has no more.
    """
    try:
        source = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return
    sent = 0
    try:
        records = [r for r in map(parse, source.readlines()) if r is not None]
        if options.since is not None:
            records = [r for r in records if parse_stamp(r.stamp) >= options.since]
        if options.tail is not None:
            records = records[len(records) - options.tail :] if options.tail else []
        pending = b""
        for record in records:
            chunk = record.render(timestamps=options.timestamps)
            chunk, done = _limited(chunk, sent, options.limit_bytes)
            sent += len(chunk)
            yield chunk
            if done:
                return
        while options.follow:
            more = source.readline()
            if not more:
                if not running():
                    more = source.readline()
                    if not more:
                        return
                else:
                    time.sleep(poll)
                    continue
            pending += more
            if not pending.endswith(b"\n"):
                continue
            parsed, pending = parse(pending), b""
            if parsed is None:
                continue
            chunk, done = _limited(
                parsed.render(timestamps=options.timestamps), sent, options.limit_bytes
            )
            sent += len(chunk)
            yield chunk
            if done:
                return
    finally:
        source.close()


def _limited(chunk: bytes, sent: int, limit: int | None) -> tuple[bytes, bool]:
    if limit is None:
        return chunk, False
    room = limit - sent
    if len(chunk) >= room:
        return chunk[: max(room, 0)], True
    return chunk, False
