"""The ``k3s server`` / ``k3s agent`` command line, parsed the way k3s does.

k3s uses urfave/cli v1 on top of Go's ``flag`` package, which means: a flag
may start with one or two dashes, takes its value as ``--flag=value`` or
``--flag value`` (booleans only as ``--flag`` or ``--flag=false``), may be
repeated when it is a slice flag, may appear after positional arguments
(urfave reorders them), and ``--`` ends the flags. An unknown flag is an error
that names the flag with a single dash, as Go does. Flags that are not given
fall back to their environment variable, then to their default.

The flag tables list the flags of current k3s releases (``pkg/cli/cmds``);
the double ignores most of them, but accepts them all, because a test harness
that passes a real k3s flag must not fail here when it would work there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

from k3s_double.constants import GO_FALSE
from k3s_double.constants import GO_TRUE
from k3s_double.releases import has_default_endpoint_flag


STRING = "string"
INT = "int"
BOOL = "bool"
BOOL_TRUE = "boolT"
SLICE = "slice"
DURATION = "duration"


@dataclass(frozen=True)
class Flag:
    """One flag: its names (long first), its kind, env var and default."""

    names: tuple[str, ...]
    kind: str
    env: str = ""
    default: str = ""

    @property
    def name(self) -> str:
        """The flag's canonical (first) spelling."""
        return self.names[0]


def _f(spec: str, kind: str = STRING, env: str = "", default: str = "") -> Flag:
    return Flag(tuple(spec.split(",")), kind, env, default)


_COMMON = [
    _f("config,c", env="K3S_CONFIG_FILE", default="/etc/rancher/k3s/config.yaml"),
    _f("debug", BOOL, "K3S_DEBUG"),
    _f("v", INT, default="0"),
    _f("vmodule"),
    _f("log,l"),
    _f("alsologtostderr", BOOL),
    _f("token,t", env="K3S_TOKEN"),
    _f("token-file", env="K3S_TOKEN_FILE"),
    _f("server,s", env="K3S_URL"),
    _f("data-dir,d", default="/var/lib/rancher/k3s"),
    _f("node-name", env="K3S_NODE_NAME"),
    _f("with-node-id", BOOL),
    _f("node-label", SLICE),
    _f("node-taint", SLICE),
    _f("image-credential-provider-bin-dir"),
    _f("image-credential-provider-config"),
    _f("docker", BOOL),
    _f("container-runtime-endpoint"),
    _f("default-runtime"),
    _f("image-service-endpoint"),
    _f("disable-default-registry-endpoint", BOOL),
    _f("nonroot-devices", BOOL),
    _f("pause-image", default="rancher/mirrored-pause:3.6"),
    _f("snapshotter", default="overlayfs"),
    _f("private-registry", default="/etc/rancher/k3s/registries.yaml"),
    _f("system-default-registry", env="K3S_SYSTEM_DEFAULT_REGISTRY"),
    _f("airgap-extra-registry", SLICE),
    _f("node-ip,i", SLICE),
    _f("node-external-ip", SLICE),
    _f("node-internal-dns", SLICE),
    _f("node-external-dns", SLICE),
    _f("resolv-conf", env="K3S_RESOLV_CONF"),
    _f("flannel-iface"),
    _f("flannel-conf"),
    _f("flannel-cni-conf"),
    _f("vpn-auth", env="K3S_VPN_AUTH"),
    _f("vpn-auth-file", env="K3S_VPN_AUTH_FILE"),
    _f("kubelet-arg", SLICE),
    _f("kube-proxy-arg", SLICE),
    _f("protect-kernel-defaults", BOOL),
    _f("selinux", BOOL, "K3S_SELINUX"),
    _f("lb-server-port", INT, "K3S_LB_SERVER_PORT", "6444"),
    _f("rootless", BOOL),
    _f("prefer-bundled-bin", BOOL),
    _f("disable-selinux", BOOL_TRUE),
    _f("no-flannel", BOOL),
    _f("cluster-secret", env="K3S_CLUSTER_SECRET"),
]

_SERVER_ONLY = [
    _f("bind-address"),
    _f("https-listen-port", INT, default="6443"),
    _f("supervisor-port", INT),
    _f("apiserver-port", INT),
    _f("apiserver-bind-address"),
    _f("advertise-address"),
    _f("advertise-port", INT),
    _f("tls-san", SLICE),
    _f("tls-san-security", BOOL_TRUE),
    _f("cluster-cidr", SLICE),
    _f("service-cidr", SLICE),
    _f("service-node-port-range", default="30000-32767"),
    _f("cluster-dns", SLICE),
    _f("cluster-domain", default="cluster.local"),
    _f("flannel-backend", default="vxlan"),
    _f("flannel-ipv6-masq", BOOL),
    _f("flannel-external-ip", BOOL),
    _f("egress-selector-mode", default="agent"),
    _f("servicelb-namespace", default="kube-system"),
    _f("write-kubeconfig,o", env="K3S_KUBECONFIG_OUTPUT"),
    _f("write-kubeconfig-mode", env="K3S_KUBECONFIG_MODE"),
    _f("write-kubeconfig-group", env="K3S_KUBECONFIG_GROUP"),
    _f("helm-job-image"),
    _f("agent-token", env="K3S_AGENT_TOKEN"),
    _f("agent-token-file", env="K3S_AGENT_TOKEN_FILE"),
    _f("cluster-init", BOOL, "K3S_CLUSTER_INIT"),
    _f("cluster-reset", BOOL, "K3S_CLUSTER_RESET"),
    _f("cluster-reset-restore-path"),
    _f("kube-apiserver-arg", SLICE),
    _f("etcd-arg", SLICE),
    _f("kube-controller-manager-arg", SLICE),
    _f("kube-scheduler-arg", SLICE),
    _f("kube-cloud-controller-manager-arg", SLICE),
    _f("kube-controller-arg", SLICE),
    _f("kube-cloud-controller-arg", SLICE),
    _f("datastore-endpoint", env="K3S_DATASTORE_ENDPOINT"),
    _f("datastore-cafile", env="K3S_DATASTORE_CAFILE"),
    _f("datastore-certfile", env="K3S_DATASTORE_CERTFILE"),
    _f("datastore-keyfile", env="K3S_DATASTORE_KEYFILE"),
    _f("kine-tls", BOOL),
    _f("etcd-expose-metrics", BOOL),
    _f("etcd-disable-snapshots", BOOL),
    _f("etcd-snapshot-name", default="etcd-snapshot"),
    _f("etcd-snapshot-schedule-cron", default="0 */12 * * *"),
    _f("etcd-snapshot-retention", INT, default="5"),
    _f("etcd-snapshot-dir"),
    _f("etcd-snapshot-compress", BOOL),
    _f("etcd-s3", BOOL),
    _f("etcd-s3-endpoint", default="s3.amazonaws.com"),
    _f("etcd-s3-endpoint-ca"),
    _f("etcd-s3-skip-ssl-verify", BOOL),
    _f("etcd-s3-access-key", env="AWS_ACCESS_KEY_ID"),
    _f("etcd-s3-secret-key", env="AWS_SECRET_ACCESS_KEY"),
    _f("etcd-s3-session-token", env="AWS_SESSION_TOKEN"),
    _f("etcd-s3-bucket"),
    _f("etcd-s3-bucket-lookup-type"),
    _f("etcd-s3-region", default="us-east-1"),
    _f("etcd-s3-folder"),
    _f("etcd-s3-retention", INT),
    _f("etcd-s3-proxy"),
    _f("etcd-s3-config-secret"),
    _f("etcd-s3-insecure", BOOL),
    _f("etcd-s3-timeout", DURATION, default="5m0s"),
    _f("default-local-storage-path"),
    _f("disable", SLICE),
    _f("disable-scheduler", BOOL),
    _f("disable-cloud-controller", BOOL),
    _f("disable-kube-proxy", BOOL),
    _f("disable-network-policy", BOOL),
    _f("disable-helm-controller", BOOL),
    _f("disable-apiserver", BOOL),
    _f("disable-controller-manager", BOOL),
    _f("disable-etcd", BOOL),
    _f("disable-agent", BOOL),
    _f("embedded-registry", BOOL),
    _f("supervisor-metrics", BOOL),
    _f("secrets-encryption", BOOL),
    _f("secrets-encryption-provider", default="aescbc"),
    _f("enable-pprof", BOOL),
    _f("no-deploy", SLICE),
]

SERVER_FLAGS: tuple[Flag, ...] = tuple(_COMMON + _SERVER_ONLY)
AGENT_FLAGS: tuple[Flag, ...] = tuple(_COMMON)


def for_release(table: Sequence[Flag], version: str) -> list[Flag]:
    """The flags of ``table`` that k3s release ``version`` knows."""
    if has_default_endpoint_flag(version):
        return list(table)
    return [f for f in table if f.name != "disable-default-registry-endpoint"]


class UsageError(Exception):
    """A command line k3s refuses ("Incorrect Usage: ...")."""


@dataclass
class Options:
    """Parsed flag values by long name, plus which were set explicitly."""

    values: dict[str, str | list[str]] = field(default_factory=dict)
    explicit: set[str] = field(default_factory=set)
    positional: list[str] = field(default_factory=list)

    def text(self, name: str) -> str:
        """A string (or int, or duration) flag's value."""
        value = self.values[name]
        assert isinstance(value, str)
        return value

    def number(self, name: str) -> int:
        """An int flag's value."""
        return int(self.text(name) or "0", 0)

    def flag(self, name: str) -> bool:
        """A bool flag's value."""
        return self.text(name) == "true"

    def items(self, name: str) -> list[str]:
        """A slice flag's values, one per occurrence."""
        value = self.values[name]
        assert isinstance(value, list)
        return value

    def split(self, name: str) -> list[str]:
        """A slice flag's values with comma-separated items split apart."""
        return [item.strip() for v in self.items(name) for item in v.split(",") if item]


def _parse_bool(text: str, what: str) -> str:
    if text in GO_TRUE:
        return "true"
    if text in GO_FALSE:
        return "false"
    raise UsageError(f'invalid boolean value "{text}" for {what}: parse error')


def _check_value(flag: Flag, value: str) -> str:
    if flag.kind == INT:
        try:
            int(value, 0)
        except ValueError:
            raise UsageError(
                f'invalid value "{value}" for flag -{flag.name}: parse error'
            ) from None
    return value


def parse(
    args: Sequence[str],
    table: Sequence[Flag],
    env: Mapping[str, str] | None = None,
) -> Options:
    """Parse ``args`` (after the subcommand) against ``table`` and ``env``."""
    env = os.environ if env is None else env
    by_name = {name: flag for flag in table for name in flag.names}
    opts = Options()
    for flag in table:
        if flag.kind == SLICE:
            opts.values[flag.name] = []
        elif flag.kind == BOOL:
            opts.values[flag.name] = "false"
        elif flag.kind == BOOL_TRUE:
            opts.values[flag.name] = "true"
        else:
            opts.values[flag.name] = flag.default
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            opts.positional.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            opts.positional.append(arg)
            continue
        body = arg[2:] if arg.startswith("--") else arg[1:]
        if not body or body.startswith("-") or body.startswith("="):
            raise UsageError(f"bad flag syntax: {arg}")
        name, has_value, value = body.partition("=")
        if name in ("h", "help"):
            raise UsageError("help requested")
        found = by_name.get(name)
        if found is None:
            raise UsageError(f"flag provided but not defined: -{name}")
        flag = found
        if flag.kind in (BOOL, BOOL_TRUE):
            result = _parse_bool(value, f"-{name}") if has_value else "true"
        else:
            if not has_value:
                if i >= len(args):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = args[i]
                i += 1
            result = _check_value(flag, value)
        if flag.kind == SLICE:
            values = opts.values[flag.name]
            assert isinstance(values, list)
            values.append(result)
        else:
            opts.values[flag.name] = result
        opts.explicit.add(flag.name)
    for flag in table:
        if flag.name in opts.explicit or not flag.env:
            continue
        raw = env.get(flag.env, "")
        if not raw:
            continue
        if flag.kind in (BOOL, BOOL_TRUE):
            opts.values[flag.name] = _parse_bool(raw, f"env var {flag.env}")
        elif flag.kind == SLICE:
            opts.values[flag.name] = [raw]
        else:
            opts.values[flag.name] = _check_value(flag, raw)
        opts.explicit.add(flag.name)
    return opts


def config_file_args(path: str, table: Sequence[Flag]) -> tuple[list[str], list[str]]:
    """Turn a k3s ``config.yaml`` into flags, as k3s does before parsing.

    Returns the arguments and warnings for keys that name no flag (k3s warns
    and skips those).
    """
    import yaml

    with open(path, encoding="utf-8") as stream:
        data = yaml.safe_load(stream) or {}
    if not isinstance(data, dict):
        raise UsageError(f"failed to parse config file {path}: not a mapping")
    names = {name for flag in table for name in flag.names}
    args: list[str] = []
    warnings: list[str] = []
    for key, value in data.items():
        name = str(key).rstrip("+")
        if name not in names:
            warnings.append(f"Unknown flag --{name} found in config.yaml, skipping")
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, bool):
                item = "true" if item else "false"
            args.append(f"--{name}={item}")
    return args, warnings
