"""``/bin/k3s``: the k3s CLI entry (``main``) of the node double.

``k3s server [flags]`` and ``k3s agent [flags]`` behave, seen from outside the
container, like k3s: the same flags and env vars (see :mod:`.flags`), the same
files (CA and certificates under ``<data-dir>/server/tls``, the join token in
``server/token``, a kubeconfig at ``/etc/rancher/k3s/k3s.yaml`` and at
``--write-kubeconfig``), HTTPS on ``--https-listen-port`` (6443) in front of
the in-memory Kubernetes API (``api.KubeAPI``), the token join of
:mod:`.join`, a registered, heartbeating Node per k3s node, a containerd
socket for ``ctr`` (:mod:`.ctr`), and logrus-format log lines on stderr at
the moments k3s logs them::

    server: Starting k3s ... / Running kube-apiserver ... / Wrote kubeconfig ...
            / containerd is now running / Running kubelet ... / k3s is up and
            running (once the API answers /readyz) / "Successfully registered
            node" / Node controller sync successful
    agent:  Starting k3s agent ... / containerd is now running / Running
            kubelet ... / "Successfully registered node" / Node controller
            sync successful

The kubelet and flannel lines are klog lines, as in k3s. A joining server
(``--server``/``K3S_URL`` on ``k3s server``) takes the cluster CAs through the
join protocol, issues its own serving certificate and forwards every API
request to the server it joined, so all servers answer with the same state.

Like k3s it is strict: without CAP_SYS_ADMIN and CAP_NET_ADMIN in the
effective capability set it logs a fatal line and exits 1; an unknown flag is
an error on stderr and exit status 1; a wrong token never joins (the node logs
why and retries for ever). SIGTERM and SIGINT stop it promptly (it runs as
PID 1).

Fault injection for our own tests, through the container's environment:

``K3S_DOUBLE_FAULT=crash``
    log ``Starting k3s ...``, then a ``level=fatal`` line, exit 1 about a
    second after start.
``K3S_DOUBLE_FAULT=never-ready``
    run (files, listener, containerd), but never become ready: no ``k3s is up
    and running``, ``/readyz`` answers 500 and every API call 503, and no node
    registers (on agents too).
``K3S_DOUBLE_FAULT=slow:<seconds>``
    start that many seconds later (nothing is logged before).
``K3S_DOUBLE_FAULT=join-crash:<n>``
    a joining server exits fatally, as etcd's "too many learner members"
    makes real k3s do, on its first ``n`` starts (counted in its data dir,
    which survives Docker's restarts), then joins.
``K3S_DOUBLE_FAULT=kubeconfig-late:<seconds>``
    write ``--write-kubeconfig`` that long after ``k3s is up and running``,
    as a slow host's k3s does.
``K3S_DOUBLE_FAULT=cgroup-v2``
    apply cgroup v2's rules on a cgroup v1 host (not being PID 1 is fatal).

Faults combine, separated by commas. Without any, the node still does what
real k3s does that a plugin must cope with: right after each ready line it
logs a burst of :data:`BURST_LINES` klog lines (so a ready line scrolls out
of any short log buffer); the kubelet exits fatally when the cgroup
hierarchy is read-only (as Docker mounts it in a container that is not
privileged); and on cgroup v2 it exits fatally when k3s is not PID 1 (a
daemon's ``"init": true``), as the kubelet fails then.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from k3s_double.constants import K3S_VERSION

from . import children
from . import ctr
from . import flags
from .agent import run_agent
from .runtime import CAP_NET_ADMIN
from .runtime import CAP_SYS_ADMIN
from .runtime import COMMIT
from .runtime import FAULT_ENV
from .runtime import PLAIN_FAULTS
from .runtime import VALUED_FAULTS
from .runtime import Log
from .runtime import Runtime
from .runtime import check_cgroups
from .runtime import effective_capabilities
from .server import run_server


_USAGE = """NAME:
   k3s {cmd} - {what}

USAGE:
   k3s {cmd} [OPTIONS]

OPTIONS:
{options}
"""


def _usage(cmd: str, table: Sequence[flags.Flag]) -> str:
    lines = []
    for flag in table:
        names = ", ".join(("--" if len(n) > 1 else "-") + n for n in flag.names)
        env = f" [$${flag.env}]".replace("$$", "$") if flag.env else ""
        lines.append(f"   {names}{env}")
    what = "Run management server" if cmd == "server" else "Run node agent"
    return _USAGE.format(cmd=cmd, what=what, options="\n".join(lines))


def _config_path(args: Sequence[str]) -> tuple[str, bool]:
    for i, arg in enumerate(args):
        for name in ("--config", "-config", "-c", "--c"):
            if arg == name and i + 1 < len(args):
                return args[i + 1], True
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1], True
    env = os.environ.get("K3S_CONFIG_FILE", "")
    if env:
        return env, True
    return "/etc/rancher/k3s/config.yaml", False


def _reap_children() -> None:
    # As PID 1 we inherit orphans of `docker exec` sessions; reap them, but
    # not the pods' and execs' processes, whose exit statuses we need.
    children.reap_orphans()


def main(argv: Sequence[str]) -> int:
    """Run ``k3s`` (or ``ctr``, by program name) and return the exit status."""
    program = os.path.basename(argv[0]) if argv else "k3s"
    args = list(argv[1:])
    if program == "ctr":
        return ctr.main(argv)
    if args and args[0] == "ctr":
        return ctr.main(["ctr", *args[1:]])
    if args and args[0] in ("server", "agent"):
        command, args = args[0], args[1:]
    elif not args or args[0].startswith("-"):
        command = "agent"
    else:
        sys.stderr.write(f"No help topic for '{args[0]}'\n")
        Log()("fatal", f"unknown command {args[0]!r}")
        return 1
    table = flags.for_release(
        flags.SERVER_FLAGS if command == "server" else flags.AGENT_FLAGS, K3S_VERSION
    )
    try:
        config_path, required = _config_path(args)
        config_args: list[str] = []
        warnings: list[str] = []
        if required or os.path.exists(config_path):
            try:
                config_args, warnings = flags.config_file_args(config_path, table)
            except OSError as exc:
                raise flags.UsageError(f"failed to read config file: {exc}") from None
        opts = flags.parse(config_args + args, table)
    except flags.UsageError as exc:
        if str(exc) == "help requested":
            sys.stdout.write(_usage(command, table))
            return 0
        sys.stderr.write(f"Incorrect Usage: {exc}\n\n{_usage(command, table)}")
        Log()("fatal", str(exc))
        return 1
    log = Log(debug=opts.flag("debug"))
    for warning in warnings:
        log("warning", warning)
    fault = os.environ.get(FAULT_ENV, "").strip()
    try:
        rt = Runtime(log, fault)
    except ValueError as exc:
        log.fatal(
            f"invalid {FAULT_ENV}={fault!r} ({exc}): want a comma-separated list "
            f"of {', '.join(PLAIN_FAULTS)} or {':<n>, '.join(VALUED_FAULTS)}:<n>"
        )

    def stop(signum: int, frame: Any) -> None:
        rt.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)

    def body() -> None:
        rt.sleep(rt.seconds("slow"))
        caps = effective_capabilities()
        missing = [
            name
            for bit, name in (
                (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
                (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
            )
            if not caps >> bit & 1
        ]
        if missing:
            log.fatal(
                "Error: failed to start k3s: missing capabilities "
                + ", ".join(missing)
                + " (k3s needs a privileged container)"
            )
        check_cgroups(rt)
        if "crash" in rt.faults:
            log.info(f"Starting k3s {K3S_VERSION} ({COMMIT})")
            rt.sleep(1)
            log.fatal(
                "starting kubernetes: preparing server: "
                "injected crash (K3S_DOUBLE_FAULT=crash)"
            )
        if command == "server":
            run_server(rt, opts)
        else:
            run_agent(rt, opts)

    worker = threading.Thread(target=rt.guard(body), daemon=True)
    worker.start()
    while not rt.stop.wait(1):
        _reap_children()
    log.info("Received signal, shutting down k3s")
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
