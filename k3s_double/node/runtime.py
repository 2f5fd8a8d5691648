"""The node process: its logrus/klog log, stop event, injected faults, cgroups.

What every part of ``k3s server`` and ``k3s agent`` shares: :class:`Log`
(the lines the plugin waits for, in k3s' formats), :class:`Runtime` (the
stop event, ``K3S_DOUBLE_FAULT``, retries) and the checks k3s makes before
it starts (capabilities, cgroups).
"""

from __future__ import annotations

import datetime
import os
import sys
import threading
from collections.abc import Callable
from typing import Any
from typing import NoReturn

from .join import JoinError


COMMIT = "6e3e6d4a"


CAP_NET_ADMIN = 12


CAP_SYS_ADMIN = 21


RETRY_SECONDS = 2.0


FAULT_ENV = "K3S_DOUBLE_FAULT"


#: Faults with a value (``name:value``) and without.
VALUED_FAULTS = ("slow", "join-crash", "kubeconfig-late")


PLAIN_FAULTS = ("crash", "never-ready", "cgroup-v2")


#: klog lines logged right after each ready line (real k3s logs in bursts).
BURST_LINES = 300


CGROUP_ROOT = "/sys/fs/cgroup"


def _needs_quotes(text: str) -> bool:
    return not text or any(not (c.isalnum() or c in "-._/@^+") for c in text)


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class Log:
    """Writes logrus text lines (and the kubelet's klog lines) to stderr."""

    def __init__(self, debug: bool = False) -> None:
        self.debug_enabled = debug
        self._lock = threading.Lock()

    def _write(self, line: str) -> None:
        with self._lock:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def __call__(self, level: str, msg: str, **fields: str) -> None:
        """Write one logrus line at ``level`` (debug only when enabled)."""
        if level == "debug" and not self.debug_enabled:
            return
        now = datetime.datetime.now(datetime.timezone.utc)
        parts = [f'time="{now.strftime("%Y-%m-%dT%H:%M:%SZ")}"', f"level={level}"]
        parts.append("msg=" + (_quote(msg) if _needs_quotes(msg) else msg))
        for key, value in fields.items():
            parts.append(f"{key}=" + (_quote(value) if _needs_quotes(value) else value))
        self._write(" ".join(parts))

    def info(self, msg: str, **fields: str) -> None:
        """Write one info line."""
        self("info", msg, **fields)

    def error(self, msg: str, **fields: str) -> None:
        """Write one error line."""
        self("error", msg, **fields)

    def klog(self, source: str, msg: str, **fields: str) -> None:
        """A klog info line, e.g. the kubelet's ``"Successfully registered node"``."""
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp = now.strftime("I%m%d %H:%M:%S.%f")
        kv = "".join(f" {k}={_quote(v)}" for k, v in fields.items())
        text = _quote(msg) + kv if fields else msg
        self._write(f"{stamp} {os.getpid():7d} {source}] {text}")

    def burst(self, count: int = BURST_LINES) -> None:
        """Log ``count`` klog lines at once, as k3s does after it comes up."""
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp = now.strftime("I%m%d %H:%M:%S.%f")
        pid = os.getpid()
        lines = [
            f'{stamp} {pid:7d} shared_informer.go:320] "Caches are synced" '
            f'controller="burst-{i}"'
            for i in range(count)
        ]
        self._write("\n".join(lines))

    def ready(self, msg: str) -> None:
        """Log a line the plugin waits for, followed by a burst."""
        self.info(msg)
        self.burst()

    def fatal(self, msg: str) -> NoReturn:
        """Log ``level=fatal`` and exit 1 at once, from any thread."""
        self("fatal", msg)
        os._exit(1)


def effective_capabilities() -> int:
    """The effective capability mask of this process (``CapEff``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


class Runtime:
    """Process-wide state: the log, the stop event and the fault in force."""

    def __init__(self, log: Log, fault: str) -> None:
        self.log = log
        self.fault = fault
        self.faults = parse_faults(fault)
        self.stop = threading.Event()

    @property
    def never_ready(self) -> bool:
        """Whether the injected fault keeps the node from ever being ready."""
        return "never-ready" in self.faults

    def seconds(self, fault: str) -> float:
        """The seconds a valued fault names (0 when not injected)."""
        return float(self.faults.get(fault) or 0)

    def sleep(self, seconds: float) -> None:
        """Wait, but end the process promptly when it is asked to stop."""
        if self.stop.wait(seconds):
            raise SystemExit(0)

    def guard(self, target: Callable[[], None]) -> Callable[[], None]:
        """Wrap a thread's body: a stop ends it quietly, an error is fatal."""

        def run() -> None:
            try:
                target()
            except SystemExit:
                return
            except Exception as exc:  # k3s dies on an unexpected error, loudly
                self.log.fatal(f"{type(exc).__name__}: {exc}")

        return run

    def retry(self, what: Callable[[], Any], failure: str) -> Any:
        """Call ``what`` until it succeeds; log each failure as k3s would."""
        while True:
            try:
                return what()
            except JoinError as exc:
                self.log.error(f"{failure}: {exc}")
            self.sleep(RETRY_SECONDS)


def parse_faults(text: str) -> dict[str, str]:
    """``crash`` or ``slow:3,join-crash:2`` as {name: value}; ValueError if bad."""
    faults: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition(":")
        if name in VALUED_FAULTS and sep:
            float(value)  # raises ValueError for a bad number
        elif name not in PLAIN_FAULTS or sep:
            raise ValueError(f"unknown fault {item!r}")
        faults[name] = value
    return faults


def cgroup_mounts(mountinfo: str) -> list[tuple[str, str, bool]]:
    """(mount point, file system type, read-only) of each cgroup mount."""
    found = []
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        parts, tail = fields.split(), rest.split()
        if len(parts) < 6 or not tail or not tail[0].startswith("cgroup"):
            continue
        read_only = "ro" in parts[5].split(",") or "ro" in tail[-1].split(",")
        found.append((parts[4], tail[0], read_only))
    return found


def check_cgroups(rt: Runtime) -> None:
    """Exit as the kubelet does when it cannot run: cgroups read-only, not PID 1.

    The kubelet creates ``kubepods`` in every hierarchy; on a read-only
    mount that is fatal. On cgroup v2, k3s moves itself out of the root
    cgroup only when it is PID 1; otherwise the kubelet cannot enable the
    controllers it needs.
    """
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as source:
            mounts = cgroup_mounts(source.read())
    except OSError:
        mounts = []
    for point, _, read_only in mounts:
        if read_only:
            rt.log.fatal(
                "failed to run Kubelet: failed to create kubelet: mkdir "
                f"{point}/kubepods: read-only file system"
            )
    v2 = any(kind == "cgroup2" and point == CGROUP_ROOT for point, kind, _ in mounts)
    if (v2 or "cgroup-v2" in rt.faults) and os.getpid() != 1:
        rt.log.fatal(
            'failed to run Kubelet: cannot enter cgroupv2 "/sys/fs/cgroup/kubepods"'
            " with domain controllers -- it is in an invalid state (k3s is not "
            f"PID 1 but PID {os.getpid()}: an init process runs in the container)"
        )
