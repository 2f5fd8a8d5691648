"""``/bin/k3s``: the node half of the k3s node double.

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

import datetime
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import NoReturn

from . import ctr
from . import flags
from . import pulls
from .constants import K3S_VERSION
from .constants import go_arch
from .httpd import APIServer
from .httpd import Backend
from .httpd import Forwarder
from .httpd import Upstream
from .httpd import client_context
from .httpd import serve_in_thread
from .httpd import server_context
from .join import JoinError
from .join import JoinService
from .join import kubelet_cert
from .join import server_bootstrap
from .join import split_url
from .pki import KeyPair
from .pki import Token
from .pki import client_cert
from .pki import new_ca
from .pki import random_secret
from .pki import serving_cert
from .pki import serving_sans


COMMIT = "6e3e6d4a"
GLOBAL_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
HEARTBEAT_SECONDS = 5.0
#: kube-controller-manager's --node-monitor-grace-period default (Kubernetes
#: up to 1.31; 1.32 raised it to 50s): how long a Node may go without a
#: heartbeat before it turns NotReady (Unknown).
NODE_MONITOR_GRACE = 40.0
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def node_monitor_grace(controller_args: list[str]) -> float:
    """The grace period a ``--kube-controller-manager-arg`` sets, in seconds.

    Go's duration syntax (``10s``, ``1m30s``, ``500ms``), as the controller
    manager parses it; anything else is fatal there, and so here: ValueError
    carries the controller manager's message.
    """
    grace = NODE_MONITOR_GRACE
    for arg in controller_args:
        key, _, value = arg.lstrip("-").partition("=")
        if key != "node-monitor-grace-period":
            continue
        parts = _GO_DURATION.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise ValueError(
                f'invalid argument "{value}" for "--node-monitor-grace-period" '
                f'flag: time: invalid duration "{value}"'
            )
        grace = sum(float(n) * _GO_UNITS[u] for n, u in parts)
    return grace


RETRY_SECONDS = 2.0
FAULT_ENV = "K3S_DOUBLE_FAULT"
#: Faults with a value (``name:value``) and without.
VALUED_FAULTS = ("slow", "join-crash", "kubeconfig-late")
PLAIN_FAULTS = ("crash", "never-ready", "cgroup-v2")
#: klog lines logged right after each ready line (real k3s logs in bursts).
BURST_LINES = 300
CGROUP_ROOT = "/sys/fs/cgroup"


# ---------------------------------------------------------------------------
# logging


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


# ---------------------------------------------------------------------------
# the node's identity


def effective_capabilities() -> int:
    """The effective capability mask of this process (``CapEff``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def detect_node_ip() -> str:
    """The address of the default-route interface, as k3s picks the node IP."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("8.8.8.8", 53))
        address: str = probe.getsockname()[0]
        return address
    except OSError:
        return socket.gethostbyname(socket.gethostname())
    finally:
        probe.close()


def parse_taint(text: str) -> dict[str, str]:
    """``key[=value]:Effect`` as kubelet's ``--register-with-taints`` reads it."""
    spec, sep, effect = text.rpartition(":")
    if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(f"invalid taint spec: {text}")
    key, _, value = spec.partition("=")
    if not key:
        raise ValueError(f"invalid taint spec: {text}")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def parse_label(text: str) -> tuple[str, str]:
    """``key=value`` as kubelet's ``--node-labels`` reads it."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"invalid node label: {text}")
    return key, value


@dataclass
class Node:
    """What a k3s node registers: its name, IP, labels and taints."""

    name: str
    hostname: str
    ip: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    extra_labels: list[str] = field(default_factory=list)


def make_node(opts: flags.Options, *, server: bool, etcd: bool) -> Node:
    """The node this process registers, with the labels k3s gives it."""
    hostname = socket.gethostname().lower()
    name = opts.text("node-name") or hostname
    if opts.flag("with-node-id"):
        name = f"{name}-{random_secret()[:8]}"
    node_ips = opts.split("node-ip")
    ip = node_ips[0] if node_ips else detect_node_ip()
    arch = go_arch()
    labels = {
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "k3s",
        "beta.kubernetes.io/instance-type": "k3s",
        "k3s.io/hostname": hostname,
        "k3s.io/internal-ip": ip,
    }
    external = opts.split("node-external-ip")
    if external:
        labels["k3s.io/external-ip"] = external[0]
    if server:
        labels["node-role.kubernetes.io/control-plane"] = "true"
        labels["node-role.kubernetes.io/master"] = "true"
        if etcd:
            labels["node-role.kubernetes.io/etcd"] = "true"
    for text in opts.items("node-label"):
        key, value = parse_label(text)
        labels[key] = value
    taints = [parse_taint(text) for text in opts.items("node-taint")]
    return Node(name, hostname, ip, labels, taints, opts.items("node-label"))


# ---------------------------------------------------------------------------
# the process


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


def join_crash(rt: Runtime, data_dir: str) -> None:
    """Exit fatally on the first ``join-crash:<n>`` starts of a joining server."""
    limit = int(rt.seconds("join-crash"))
    counter = os.path.join(data_dir, "server/join-crashes")
    try:
        with open(counter, encoding="ascii") as saved:
            crashes = int(saved.read() or 0)
    except (OSError, ValueError):
        crashes = 0
    if crashes >= limit:
        return
    _write_private(counter, str(crashes + 1).encode(), 0o644)
    rt.log.fatal(
        "ETCD join failed: etcdserver: too many learner members in cluster "
        f"(injected, {crashes + 1} of {limit})"
    )


def _write_private(path: str, data: bytes, mode: int = 0o600) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def kubeconfig(server_url: str, ca_pem: bytes, admin: KeyPair, name: str) -> bytes:
    """The admin kubeconfig k3s writes: cluster, user and context named ``name``.

    Newer k3s names them after the node rather than ``default``.
    """
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return (
        "apiVersion: v1\n"
        "clusters:\n"
        "- cluster:\n"
        f"    certificate-authority-data: {b64(ca_pem)}\n"
        f"    server: {server_url}\n"
        f"  name: {name}\n"
        "contexts:\n"
        "- context:\n"
        f"    cluster: {name}\n"
        f"    user: {name}\n"
        f"  name: {name}\n"
        f"current-context: {name}\n"
        "kind: Config\n"
        "preferences: {}\n"
        "users:\n"
        f"- name: {name}\n"
        "  user:\n"
        f"    client-certificate-data: {b64(admin.cert)}\n"
        f"    client-key-data: {b64(admin.key)}\n"
    ).encode()


class Kubelet:
    """Registers the Node, logs what kubelet and flannel log, heartbeats."""

    def __init__(
        self,
        rt: Runtime,
        node: Node,
        api: Upstream,
        kubelet_args: Sequence[str],
        containerd: ctr.Containerd | None = None,
        pause_image: str = pulls.PAUSE_IMAGE,
    ) -> None:
        self.rt = rt
        self.node = node
        self.api = api
        self.kubelet_args = list(kubelet_args)
        self.containerd = containerd
        self.pause_image = pause_image

    def start(self, after: threading.Event | None = None) -> None:
        """Run in a daemon thread; register only once ``after`` is set."""
        threading.Thread(
            target=self.rt.guard(lambda: self._run(after)), daemon=True
        ).start()

    def _call(self, method: str, path: str, body: bytes, ctype: str) -> int:
        status, data = self.api.call(
            method, path, body, {"Content-Type": ctype, "Accept": "application/json"}
        )
        if status >= 300 and status != 409:
            self.rt.log("debug", f"{method} {path}: {status} {data[:200]!r}")
        return status

    def _run(self, after: threading.Event | None) -> None:
        import json

        from .api import node_object

        log = self.rt.log
        args = [
            "--address=0.0.0.0",
            "--anonymous-auth=false",
            f"--hostname-override={self.node.name}",
            f"--node-ip={self.node.ip}",
            *(
                ["--node-labels=" + ",".join(self.node.extra_labels)]
                if self.node.extra_labels
                else []
            ),
            *(f"--{a.lstrip('-')}" for a in self.kubelet_args),
        ]
        log.info("Running kubelet " + " ".join(args))
        if self.rt.never_ready:
            return
        if after is not None:
            while not after.wait(1):
                pass
        obj = node_object(
            self.node.name,
            internal_ip=self.node.ip,
            labels=self.node.labels,
            taints=self.node.taints,
            git_version=K3S_VERSION,
        )
        # The kubelet registers with the images containerd already holds, so
        # the control plane never takes a preloaded image for a missing one.
        status_part = obj.get("status")
        if isinstance(status_part, dict):
            status_part["images"] = self._images()
        body = json.dumps(obj).encode()
        log.klog(
            "kubelet_node_status.go:75",
            "Attempting to register node",
            node=self.node.name,
        )
        while True:
            try:
                status = self._call("POST", "/api/v1/nodes", body, "application/json")
            except OSError as exc:
                status = 0
                log.error(f"Unable to register node with API server: {exc}")
            if status in (200, 201, 409):
                break
            self.rt.sleep(RETRY_SECONDS)
        log.klog(
            "kubelet_node_status.go:78",
            "Successfully registered node",
            node=self.node.name,
        )
        log.burst()
        log.klog("kube.go:139", "Waiting 10m0s for node controller to sync")
        while True:
            try:
                if self._call("GET", "/api/v1/nodes", b"", "application/json") == 200:
                    break
            except OSError:
                pass
            self.rt.sleep(RETRY_SECONDS)
        log.klog("kube.go:146", "Node controller sync successful")
        if self.containerd is not None:
            puller = pulls.ImagePuller(
                self.containerd, self._pods, self._report_images, self.pause_image
            )
            threading.Thread(
                target=self.rt.guard(lambda: self._pull(puller)), daemon=True
            ).start()
        self._heartbeat()

    def _images(self) -> list[dict[str, Any]]:
        return pulls.node_images(self.containerd)

    def _pods(self) -> list[dict[str, Any]] | None:
        import json
        import urllib.parse

        selector = urllib.parse.quote(f"spec.nodeName={self.node.name}")
        try:
            status, data = self.api.call(
                "GET",
                f"/api/v1/pods?fieldSelector={selector}",
                b"",
                {"Accept": "application/json"},
            )
        except OSError:
            return None
        if status != 200:
            return None
        items: list[dict[str, Any]] = json.loads(data).get("items") or []
        return items

    def _report_images(self, images: list[dict[str, Any]]) -> bool:
        import json

        body = json.dumps({"status": {"images": images}}).encode()
        path = f"/api/v1/nodes/{self.node.name}/status"
        try:
            status = self._call(
                "PATCH", path, body, "application/strategic-merge-patch+json"
            )
        except OSError:
            return False
        return status < 300

    def _pull(self, puller: pulls.ImagePuller) -> None:
        """Pull what the node's pods need, in a loop of its own."""
        while True:
            puller.sync()
            self.rt.sleep(pulls.POLL_SECONDS)

    def _heartbeat(self) -> None:
        import json

        path = f"/api/v1/nodes/{self.node.name}/status"
        while True:
            self.rt.sleep(HEARTBEAT_SECONDS)
            now = datetime.datetime.now(datetime.timezone.utc)
            patch = {
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        }
                    ],
                    # What the node's containerd holds, as a kubelet reports
                    # it: the API then knows which images a node has.
                    "images": self._images(),
                }
            }
            try:
                status = self._call(
                    "PATCH",
                    path,
                    json.dumps(patch).encode(),
                    "application/strategic-merge-patch+json",
                )
            except OSError as exc:
                self.rt.log.error(f"Error updating node status, will retry: {exc}")
                continue
            if status >= 300:
                self.rt.log.error(
                    f"Error updating node status, will retry: status {status}"
                )


def _containerd(rt: Runtime, data_dir: str) -> ctr.Containerd:
    containerd = ctr.Containerd(data_dir)
    rt.log.info(f"Logging containerd to {data_dir}/agent/containerd/containerd.log")
    rt.log.info(
        "Running containerd -c "
        f"{data_dir}/agent/etc/containerd/config.toml -a {ctr.SOCKET} "
        f"--state /run/k3s/containerd --root {data_dir}/agent/containerd"
    )
    containerd.start()
    containerd.preload(os.path.join(data_dir, "agent/images"), rt.log.info)
    rt.log.ready("containerd is now running")
    return containerd


def _token_secret(opts: flags.Options, name: str, file_flag: str) -> str:
    token = opts.text(name)
    path = opts.text(file_flag)
    if not token and path:
        with open(path, encoding="utf-8") as source:
            token = source.read().strip()
    return token


def run_server(rt: Runtime, opts: flags.Options) -> None:
    """``k3s server``: CA, certificates, listener, kubeconfig, node."""
    log = rt.log
    data_dir = opts.text("data-dir")
    tls_dir = os.path.join(data_dir, "server/tls")
    join_url = opts.text("server")
    etcd = opts.flag("cluster-init") or bool(join_url)
    node = make_node(opts, server=True, etcd=etcd)
    log.info(f"Starting k3s {K3S_VERSION} ({COMMIT})")
    token = Token.parse(_token_secret(opts, "token", "token-file"))
    if join_url:
        if not token.password:
            log.fatal(
                "starting kubernetes: preparing server: token is required to join"
            )
        log.info(f"Joining existing cluster at {join_url}")
        join_crash(rt, data_dir)
        server_ca, client_ca = rt.retry(
            lambda: server_bootstrap(join_url, token),
            f"Failed to validate connection to cluster at {join_url}",
        )
        server_ca.save(tls_dir, "server-ca")
        client_ca.save(tls_dir, "client-ca")
    else:
        loaded_server = KeyPair.load(tls_dir, "server-ca")
        loaded_client = KeyPair.load(tls_dir, "client-ca")
        server_ca = loaded_server or new_ca("k3s-server-ca")
        client_ca = loaded_client or new_ca("k3s-client-ca")
        if loaded_server is None:
            server_ca.save(tls_dir, "server-ca")
            log.info("generated self-signed CA certificate CN=k3s-server-ca")
        if loaded_client is None:
            client_ca.save(tls_dir, "client-ca")
            log.info("generated self-signed CA certificate CN=k3s-client-ca")
    token_file = os.path.join(data_dir, "server/token")
    if not token.password:
        try:
            with open(token_file, encoding="utf-8") as saved:
                token = Token.parse(saved.read())
        except FileNotFoundError:
            token = Token("", "server", random_secret())
    agent_token = Token.parse(_token_secret(opts, "agent-token", "agent-token-file"))
    agent_secret = agent_token.password or token.password

    sans = serving_sans(
        node.name,
        [node.ip],
        opts.split("tls-san"),
        opts.text("cluster-domain"),
        opts.text("advertise-address"),
    )
    serving = serving_cert(server_ca, sans)
    serving_files = serving.save(tls_dir, "serving-kube-apiserver")
    admin = client_cert(client_ca, "system:admin", ["system:masters"])
    admin_files = admin.save(tls_dir, "client-admin")
    supervisor = client_cert(client_ca, "system:k3s-supervisor", ["system:masters"])
    supervisor_files = supervisor.save(tls_dir, "client-supervisor")
    port = opts.number("https-listen-port")
    bind = opts.text("bind-address")
    local_host = bind if bind and bind not in ("0.0.0.0", "::") else "127.0.0.1"

    backend: Backend
    api: Any = None
    if join_url:
        host, join_port = split_url(join_url)
        backend = Forwarder(
            Upstream(host, join_port, client_context(server_ca.cert, *supervisor_files))
        )
    else:
        from .api import KubeAPI

        disabled: set[str] = set(opts.split("disable")) | set(opts.split("no-deploy"))
        try:
            grace = node_monitor_grace(opts.items("kube-controller-manager-arg"))
        except ValueError as exc:
            log.fatal(str(exc))
        api = KubeAPI(
            git_version=K3S_VERSION,
            disable=frozenset(disabled),
            ca_pem=server_ca.cert.decode(),
            node_grace=grace,
        )
        api.start_controllers()
        backend = api

    apiserver_args = [
        f"--advertise-address={opts.text('advertise-address') or node.ip}",
        f"--secure-port={port}",
        "--anonymous-auth=false",
        f"--client-ca-file={tls_dir}/client-ca.crt",
        f"--tls-cert-file={serving_files[0]}",
        *(f"--{a.lstrip('-')}" for a in opts.items("kube-apiserver-arg")),
    ]
    log.info("Running kube-apiserver " + " ".join(apiserver_args))
    service = JoinService(
        server_ca, client_ca, token.password, agent_secret, ready=not rt.never_ready
    )
    try:
        listener = APIServer(
            port,
            server_context(*serving_files, client_ca.cert),
            backend,
            service,
            log=log,
            ready=lambda: not rt.never_ready,
        )
    except OSError as exc:
        log.fatal(f"starting kubernetes: listen tcp :{port}: {exc}")
    serve_in_thread(listener)
    for component, extra in (
        ("kube-scheduler", "kube-scheduler-arg"),
        ("kube-controller-manager", "kube-controller-manager-arg"),
        ("cloud-controller-manager", "kube-cloud-controller-manager-arg"),
    ):
        args = " ".join(f"--{a.lstrip('-')}" for a in opts.items(extra))
        kubeconfig_flag = f"--kubeconfig={data_dir}/server/cred/{component}.kubeconfig"
        log.info(f"Running {component} {kubeconfig_flag} {args}".rstrip())

    full = token.full(server_ca.cert)
    _write_private(token_file, full.encode() + b"\n")
    _write_private(os.path.join(data_dir, "server/node-token"), full.encode() + b"\n")
    agent_full = (
        agent_token.full(server_ca.cert, "node") if agent_token.password else full
    )
    _write_private(
        os.path.join(data_dir, "server/agent-token"), agent_full.encode() + b"\n"
    )
    log.info(f"Server node token is available at {token_file}")
    log.info(
        f"To join server node to cluster: k3s server -s https://{node.ip}:{port} "
        "-t ${SERVER_NODE_TOKEN}"
    )
    log.info(f"Agent node token is available at {data_dir}/server/agent-token")
    log.info(
        f"To join agent node to cluster: k3s agent -s https://{node.ip}:{port} "
        "-t ${AGENT_NODE_TOKEN}"
    )

    mode_text = opts.text("write-kubeconfig-mode")
    mode = 0o600
    if mode_text:
        try:
            mode = int(mode_text, 8)
        except ValueError:
            log.error(
                f"failed to parse write-kubeconfig-mode {mode_text!r}, using 0600"
            )
    config = kubeconfig(
        f"https://{local_host}:{port}", server_ca.cert, admin, node.name
    )
    late = rt.seconds("kubeconfig-late")
    written = [GLOBAL_KUBECONFIG, opts.text("write-kubeconfig")]
    for path in dict.fromkeys(written[:1] if late else written):
        if path:
            _write_private(path, config, mode)
            log.info(f"Wrote kubeconfig {path}")
    log.info("Run: k3s kubectl")

    ready = threading.Event()
    if late and opts.text("write-kubeconfig"):

        def write_late() -> None:
            while not ready.wait(1):
                pass
            rt.sleep(late)
            _write_private(opts.text("write-kubeconfig"), config, mode)
            log.info(f"Wrote kubeconfig {opts.text('write-kubeconfig')}")

        threading.Thread(target=rt.guard(write_late), daemon=True).start()
    admin_api = Upstream(local_host, port, client_context(server_ca.cert, *admin_files))
    threading.Thread(
        target=rt.guard(lambda: _wait_until_up(rt, admin_api, ready)), daemon=True
    ).start()
    if opts.flag("disable-agent"):
        return
    containerd = _containerd(rt, data_dir)
    kubelet_pair = client_cert(client_ca, f"system:node:{node.name}", ["system:nodes"])
    kubelet_files = kubelet_pair.save(os.path.join(data_dir, "agent"), "client-kubelet")
    Kubelet(
        rt,
        node,
        Upstream(local_host, port, client_context(server_ca.cert, *kubelet_files)),
        opts.items("kubelet-arg"),
        containerd,
        opts.text("pause-image"),
    ).start(after=ready)


def _wait_until_up(rt: Runtime, api: Upstream, ready: threading.Event) -> None:
    if rt.never_ready:
        return
    while True:
        try:
            status, _ = api.call("GET", "/readyz")
        except OSError:
            status = 0
        if status == 200:
            break
        rt.sleep(0.5)
    rt.log.ready("k3s is up and running")
    ready.set()


def run_agent(rt: Runtime, opts: flags.Options) -> None:
    """``k3s agent``: join through ``K3S_URL``, then containerd and kubelet."""
    log = rt.log
    data_dir = opts.text("data-dir")
    url = opts.text("server")
    token = Token.parse(_token_secret(opts, "token", "token-file"))
    if not url:
        log.fatal("--server is required")
    if not token.password:
        log.fatal("--token is required")
    try:
        host, port = split_url(url)
    except JoinError as exc:
        log.fatal(str(exc))
    node = make_node(opts, server=False, etcd=False)
    log.info(f"Starting k3s agent {K3S_VERSION} ({COMMIT})")
    log.info(f"Adding server to load balancer k3s-agent-load-balancer: {host}:{port}")
    ca, pair = rt.retry(
        lambda: kubelet_cert(url, token, node.name),
        f"Failed to validate connection to cluster at {url}",
    )
    agent_dir = os.path.join(data_dir, "agent")
    _write_private(os.path.join(agent_dir, "server-ca.crt"), ca, 0o644)
    files = pair.save(agent_dir, "client-kubelet")
    containerd = _containerd(rt, data_dir)
    Kubelet(
        rt,
        node,
        Upstream(host, port, client_context(ca, *files)),
        opts.items("kubelet-arg"),
        containerd,
        opts.text("pause-image"),
    ).start()


# ---------------------------------------------------------------------------
# entry point

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
    # As PID 1 we inherit orphans of `docker exec` sessions; reap them.
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


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
    table = flags.SERVER_FLAGS if command == "server" else flags.AGENT_FLAGS
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
