"""``k3s server``: PKI, API server, join endpoint, kubeconfig, node.

:func:`run_server` runs these steps in order, each a function of its own.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass

from k3s_double.apiserver.httpd import APIServer
from k3s_double.apiserver.httpd import Upstream
from k3s_double.apiserver.httpd import client_context
from k3s_double.apiserver.httpd import serve_in_thread
from k3s_double.apiserver.httpd import server_context
from k3s_double.apiserver.kubelets import KubeletClient
from k3s_double.apiserver.kubelets import client_context as kubelet_context
from k3s_double.constants import K3S_VERSION
from k3s_double.controllers.base import NODE_MONITOR_GRACE
from k3s_double.controllers.base import Settings

from . import flags
from .agent import start_containerd
from .datastore import Datastore
from .datastore import start_datastore
from .files import GLOBAL_KUBECONFIG
from .files import kubeconfig
from .files import token_secret
from .files import write_private
from .identity import Node
from .identity import make_node
from .join import JoinService
from .join import server_bootstrap
from .kubelet import Kubelet
from .pki import KeyPair
from .pki import Token
from .pki import client_cert
from .pki import new_ca
from .pki import random_secret
from .pki import serving_cert
from .pki import serving_sans
from .runtime import COMMIT
from .runtime import Runtime


#: Seconds from the datastore being in place (loaded, joined) to the API
#: server's storage being ready (the watch cache's first list and the storage
#: post-start hooks): ``/readyz`` answers 500 and resource requests 429
#: ``storage is (re)initializing`` until then, after every start.
STORAGE_START = 0.5
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
    write_private(counter, str(crashes + 1).encode(), 0o644)
    rt.log.fatal(
        "ETCD join failed: etcdserver: too many learner members in cluster "
        f"(injected, {crashes + 1} of {limit})"
    )


@dataclass
class ServerPKI:
    """The cluster CAs, the join tokens and the server's certificates."""

    server_ca: KeyPair
    client_ca: KeyPair
    token: Token
    agent_token: Token
    #: ``(cert, key)`` paths of the serving certificate and client certs.
    serving_files: tuple[str, str]
    admin: KeyPair
    admin_files: tuple[str, str]
    supervisor_files: tuple[str, str]


def run_server(rt: Runtime, opts: flags.Options) -> None:
    """``k3s server``: CA, certificates, listener, kubeconfig, node."""
    data_dir = opts.text("data-dir")
    join_url = opts.text("server")
    node = make_node(
        opts, server=True, etcd=opts.flag("cluster-init") or bool(join_url)
    )
    rt.log.info(f"Starting k3s {K3S_VERSION} ({COMMIT})")
    pki = _pki(rt, opts, node)
    port = opts.number("https-listen-port")
    bind = opts.text("bind-address")
    local_host = bind if bind and bind not in ("0.0.0.0", "::") else "127.0.0.1"
    datastore = _api_backend(rt, opts, node, pki)
    _serve_api(rt, opts, node, pki, datastore)
    _log_control_plane(rt, opts)
    _write_tokens(rt, data_dir, node, pki, port)
    config, mode = _write_kubeconfigs(
        rt, opts, node, pki, f"https://{local_host}:{port}"
    )
    ready = threading.Event()
    _write_kubeconfig_late(rt, opts, config, mode, ready)
    admin_api = Upstream(
        local_host, port, client_context(pki.server_ca.cert, *pki.admin_files)
    )
    threading.Thread(
        target=rt.guard(lambda: _wait_until_up(rt, admin_api, ready)), daemon=True
    ).start()
    if not opts.flag("disable-agent"):
        _start_kubelet(rt, opts, node, pki, local_host, port, ready)


def _pki(rt: Runtime, opts: flags.Options, node: Node) -> ServerPKI:
    """Take the CAs (joined or generated), the tokens, and issue certificates."""
    data_dir = opts.text("data-dir")
    tls_dir = os.path.join(data_dir, "server/tls")
    token = Token.parse(token_secret(opts, "token", "token-file"))
    server_ca, client_ca = _cluster_cas(rt, opts, tls_dir, token)
    if not token.password:
        try:
            with open(
                os.path.join(data_dir, "server/token"), encoding="utf-8"
            ) as saved:
                token = Token.parse(saved.read())
        except FileNotFoundError:
            token = Token("", "server", random_secret())
    sans = serving_sans(
        node.name,
        [node.ip],
        opts.split("tls-san"),
        opts.text("cluster-domain"),
        opts.text("advertise-address"),
    )
    serving = serving_cert(server_ca, sans)
    admin = client_cert(client_ca, "system:admin", ["system:masters"])
    supervisor = client_cert(client_ca, "system:k3s-supervisor", ["system:masters"])
    return ServerPKI(
        server_ca=server_ca,
        client_ca=client_ca,
        token=token,
        agent_token=Token.parse(token_secret(opts, "agent-token", "agent-token-file")),
        serving_files=serving.save(tls_dir, "serving-kube-apiserver"),
        admin=admin,
        admin_files=admin.save(tls_dir, "client-admin"),
        supervisor_files=supervisor.save(tls_dir, "client-supervisor"),
    )


def _cluster_cas(
    rt: Runtime, opts: flags.Options, tls_dir: str, token: Token
) -> tuple[KeyPair, KeyPair]:
    """The server and client CAs: the joined cluster's, saved ones, or new ones."""
    log = rt.log
    join_url = opts.text("server")
    saved = [KeyPair.load(tls_dir, name) for name in ("server-ca", "client-ca")]
    member_file = os.path.join(opts.text("data-dir"), "server/db/etcd/member.json")
    if join_url and os.path.exists(member_file) and saved[0] and saved[1]:
        # A member that joined before bootstraps from its own datastore, as
        # k3s does: the server it joined through may be down now.
        return saved[0], saved[1]
    if join_url:
        if not token.password:
            log.fatal(
                "starting kubernetes: preparing server: token is required to join"
            )
        log.info(f"Joining existing cluster at {join_url}")
        join_crash(rt, opts.text("data-dir"))
        server_ca, client_ca = rt.retry(
            lambda: server_bootstrap(join_url, token),
            f"Failed to validate connection to cluster at {join_url}",
        )
        server_ca.save(tls_dir, "server-ca")
        client_ca.save(tls_dir, "client-ca")
        return server_ca, client_ca
    cas = []
    for name in ("server-ca", "client-ca"):
        loaded = KeyPair.load(tls_dir, name)
        if loaded is None:
            loaded = new_ca(f"k3s-{name}")
            loaded.save(tls_dir, name)
            log.info(f"generated self-signed CA certificate CN=k3s-{name}")
        cas.append(loaded)
    return cas[0], cas[1]


def _api_backend(
    rt: Runtime, opts: flags.Options, node: Node, pki: ServerPKI
) -> Datastore:
    """What answers API requests: this server's own replica of the datastore."""
    try:
        grace = node_monitor_grace(opts.items("kube-controller-manager-arg"))
    except ValueError as exc:
        rt.log.fatal(str(exc))
    return start_datastore(
        rt,
        opts,
        node,
        pki.server_ca,
        pki.supervisor_files,
        pki.token,
        Settings(node_grace=grace),
        STORAGE_START,
    )


def _serve_api(
    rt: Runtime, opts: flags.Options, node: Node, pki: ServerPKI, store: Datastore
) -> None:
    """Listen on the HTTPS port: the API and the join endpoint (``/v1-k3s``)."""
    # kube-apiserver reaches kubelets with a client certificate of its own.
    kubelet_client = client_cert(pki.client_ca, "kube-apiserver", ["system:masters"])
    tls_dir = os.path.join(opts.text("data-dir"), "server/tls")
    store.api.router.kubelets = KubeletClient(
        kubelet_context(*kubelet_client.save(tls_dir, "client-kube-apiserver"))
    )
    port = opts.number("https-listen-port")
    tls_dir = os.path.join(opts.text("data-dir"), "server/tls")
    apiserver_args = [
        f"--advertise-address={opts.text('advertise-address') or node.ip}",
        f"--secure-port={port}",
        "--anonymous-auth=false",
        f"--client-ca-file={tls_dir}/client-ca.crt",
        f"--tls-cert-file={pki.serving_files[0]}",
        *(f"--{a.lstrip('-')}" for a in opts.items("kube-apiserver-arg")),
    ]
    rt.log.info("Running kube-apiserver " + " ".join(apiserver_args))
    agent_secret = pki.agent_token.password or pki.token.password
    service = JoinService(
        pki.server_ca,
        pki.client_ca,
        pki.token.password,
        agent_secret,
        ready=not rt.never_ready,
        db_info=store.db_info,
    )
    try:
        listener = APIServer(
            port,
            server_context(*pki.serving_files, pki.client_ca.cert),
            store.backend,
            service,
            log=rt.log,
            ready=lambda: not (rt.never_ready or store.failed.is_set()),
        )
    except OSError as exc:
        rt.log.fatal(f"starting kubernetes: listen tcp :{port}: {exc}")
    serve_in_thread(listener)


def _log_control_plane(rt: Runtime, opts: flags.Options) -> None:
    """The lines k3s logs as it starts the other control-plane components."""
    data_dir = opts.text("data-dir")
    for component, extra in (
        ("kube-scheduler", "kube-scheduler-arg"),
        ("kube-controller-manager", "kube-controller-manager-arg"),
        ("cloud-controller-manager", "kube-cloud-controller-manager-arg"),
    ):
        args = " ".join(f"--{a.lstrip('-')}" for a in opts.items(extra))
        kubeconfig_flag = f"--kubeconfig={data_dir}/server/cred/{component}.kubeconfig"
        rt.log.info(f"Running {component} {kubeconfig_flag} {args}".rstrip())


def _write_tokens(
    rt: Runtime, data_dir: str, node: Node, pki: ServerPKI, port: int
) -> None:
    """Write ``server/token``, ``node-token`` and ``agent-token``; log how to join."""
    log = rt.log
    token_file = os.path.join(data_dir, "server/token")
    full = pki.token.full(pki.server_ca.cert)
    write_private(token_file, full.encode() + b"\n")
    write_private(os.path.join(data_dir, "server/node-token"), full.encode() + b"\n")
    agent_token = pki.agent_token
    agent_full = (
        agent_token.full(pki.server_ca.cert, "node") if agent_token.password else full
    )
    write_private(
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


def _write_kubeconfigs(
    rt: Runtime, opts: flags.Options, node: Node, pki: ServerPKI, url: str
) -> tuple[bytes, int]:
    """Write the admin kubeconfig(s) now; return its content and file mode."""
    log = rt.log
    mode_text = opts.text("write-kubeconfig-mode")
    mode = 0o600
    if mode_text:
        try:
            mode = int(mode_text, 8)
        except ValueError:
            log.error(
                f"failed to parse write-kubeconfig-mode {mode_text!r}, using 0600"
            )
    config = kubeconfig(url, pki.server_ca.cert, pki.admin, node.name)
    late = rt.seconds("kubeconfig-late")
    written = [GLOBAL_KUBECONFIG, opts.text("write-kubeconfig")]
    for path in dict.fromkeys(written[:1] if late else written):
        if path:
            write_private(path, config, mode)
            log.info(f"Wrote kubeconfig {path}")
    log.info("Run: k3s kubectl")
    return config, mode


def _write_kubeconfig_late(
    rt: Runtime,
    opts: flags.Options,
    config: bytes,
    mode: int,
    ready: threading.Event,
) -> None:
    """``kubeconfig-late``: write ``--write-kubeconfig`` after the ready line."""
    late = rt.seconds("kubeconfig-late")
    path = opts.text("write-kubeconfig")
    if not (late and path):
        return

    def write_late() -> None:
        while not ready.wait(1):
            pass
        rt.sleep(late)
        write_private(path, config, mode)
        rt.log.info(f"Wrote kubeconfig {path}")

    threading.Thread(target=rt.guard(write_late), daemon=True).start()


def _start_kubelet(
    rt: Runtime,
    opts: flags.Options,
    node: Node,
    pki: ServerPKI,
    local_host: str,
    port: int,
    ready: threading.Event,
) -> None:
    """containerd, then the kubelet, which registers once the API is up."""
    data_dir = opts.text("data-dir")
    containerd = start_containerd(rt, opts)
    kubelet_pair = client_cert(
        pki.client_ca, f"system:node:{node.name}", ["system:nodes"]
    )
    kubelet_files = kubelet_pair.save(os.path.join(data_dir, "agent"), "client-kubelet")
    Kubelet(
        rt,
        node,
        Upstream(local_host, port, client_context(pki.server_ca.cert, *kubelet_files)),
        opts.items("kubelet-arg"),
        containerd,
        opts.text("pause-image"),
        client_ca=pki.client_ca.cert,
        data_dir=data_dir,
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
