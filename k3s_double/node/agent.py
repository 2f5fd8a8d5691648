"""``k3s agent``: join through ``K3S_URL``, then containerd and kubelet."""

from __future__ import annotations

import os

from k3s_double.apiserver.httpd import Upstream
from k3s_double.apiserver.httpd import client_context
from k3s_double.constants import K3S_VERSION

from . import ctr
from . import flags
from . import registries
from .files import token_secret
from .files import write_private
from .identity import make_node
from .join import JoinError
from .join import client_ca
from .join import kubelet_cert
from .join import split_url
from .kubelet import Kubelet
from .pki import Token
from .runtime import COMMIT
from .runtime import Runtime


def run_agent(rt: Runtime, opts: flags.Options) -> None:
    """``k3s agent``: join through ``K3S_URL``, then containerd and kubelet."""
    log = rt.log
    data_dir = opts.text("data-dir")
    url = opts.text("server")
    token = Token.parse(token_secret(opts, "token", "token-file"))
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
    write_private(os.path.join(agent_dir, "server-ca.crt"), ca, 0o644)
    files = pair.save(agent_dir, "client-kubelet")
    client = rt.retry(
        lambda: client_ca(url, token, ca),
        f"Failed to validate connection to cluster at {url}",
    )
    write_private(os.path.join(agent_dir, "client-ca.crt"), client, 0o644)
    containerd = start_containerd(rt, opts)
    Kubelet(
        rt,
        node,
        Upstream(host, port, client_context(ca, *files)),
        opts.items("kubelet-arg"),
        containerd,
        opts.text("pause-image"),
        client_ca=client,
        data_dir=data_dir,
    ).start()


def start_containerd(rt: Runtime, opts: flags.Options) -> ctr.Containerd:
    """Start the node's containerd double and import ``agent/images``.

    Its registries are ``--private-registry``'s file, read once, here, as
    k3s reads it to write containerd's ``hosts.toml``; YAML k3s cannot read
    is fatal.
    """
    data_dir = opts.text("data-dir")
    path = opts.text("private-registry")
    if os.path.exists(path):
        rt.log.info(f"Using private registry config file at {path}")
    try:
        config = registries.load(
            path,
            no_default_endpoint=opts.flag("disable-default-registry-endpoint"),
        )
    except registries.RegistriesError as exc:
        rt.log.fatal(str(exc))
    containerd = ctr.Containerd(data_dir, registries=config)
    rt.log.info(f"Logging containerd to {data_dir}/agent/containerd/containerd.log")
    rt.log.info(
        "Running containerd -c "
        f"{data_dir}/agent/etc/containerd/config.toml -a {ctr.SOCKET} "
        f"--state /run/k3s/containerd --root {data_dir}/agent/containerd"
    )
    containerd.start()
    containerd.preload(
        os.path.join(data_dir, "agent/images"), rt.log.info, rt.log.error
    )
    rt.log.ready("containerd is now running")
    return containerd
