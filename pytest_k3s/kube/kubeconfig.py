"""Kubeconfigs: k3s's rewritten for the published port, and a context of a user's.

k3s writes a kubeconfig whose server is ``https://127.0.0.1:6443`` as seen
from inside the node, with entries named ``default`` (older k3s) or after the
node. Tests need the address of the published port instead, names that say
which cluster they belong to (so two clusters' files can be merged), and
nothing but the CA and client certificate that k3s issued. Containers on the
cluster's network get a copy that names the in-network API address instead
(:func:`write_internal`).

An existing cluster (``--k3s-kubeconfig``) is used through one context of
the user's kubeconfig, copied into a private file holding only it
(:func:`read_context`, :func:`private_copy`), trusted as given: managed
clusters need ``exec`` credential plugins.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pytest_k3s.errors import K3sError


Kubeconfig = dict[str, Any]


def parse(text: str | bytes) -> Kubeconfig:
    """Parse a kubeconfig document and check it has what we rely on."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise K3sError(f"the kubeconfig k3s wrote is not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not all(
        isinstance(document.get(key), list) and document[key]
        for key in ("clusters", "contexts", "users")
    ):
        raise K3sError("the kubeconfig k3s wrote has no clusters, contexts or users")
    return document


#: The only credentials we hand over: a CA to check the server, and a client
#: certificate. k3s writes exactly these for its admin user.
CLUSTER_FIELDS = ("certificate-authority-data",)
USER_FIELDS = ("client-certificate-data", "client-key-data")


def rewrite(config: Kubeconfig, *, server: str, name: str) -> Kubeconfig:
    """Return a new kubeconfig that reaches ``server`` under the name ``name``.

    It is built from the CA, client certificate and key of the current
    context alone (whatever the entries are called: newer k3s names them
    after the node), so nothing else in the file we read can act on the test
    machine: an ``exec`` or ``auth-provider`` user would run a command when
    a client is built, and ``insecure-skip-tls-verify`` would drop the server
    check. Such a kubeconfig is refused.

    :raises K3sError: the current context lacks one of the fields, or
        carries another kind of credential
    """
    cluster, user = _current(config)
    extra = sorted(set(user) - set(USER_FIELDS))
    if extra or cluster.get("insecure-skip-tls-verify"):
        unexpected = extra or ["insecure-skip-tls-verify"]
        raise K3sError(
            "the kubeconfig k3s wrote carries more than a CA and a client "
            f"certificate ({', '.join(unexpected)}); refusing to use it. Is the "
            "node image a k3s image?"
        )
    missing = [key for key in CLUSTER_FIELDS if not cluster.get(key)]
    missing += [key for key in USER_FIELDS if not user.get(key)]
    if missing:
        raise K3sError(
            f"the kubeconfig k3s wrote has no {', '.join(missing)}; pytest-k3s "
            "needs the CA and a client certificate"
        )
    user_name = f"admin@{name}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    **{key: cluster[key] for key in CLUSTER_FIELDS},
                },
            }
        ],
        "users": [{"name": user_name, "user": {k: user[k] for k in USER_FIELDS}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user_name}}],
        "current-context": name,
    }


def _current(config: Kubeconfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cluster and user of the current context (else the first ones)."""

    def named(kind: str, name: object) -> dict[str, Any]:
        for entry in config[kind]:
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry
        return config[kind][0] if isinstance(config[kind][0], dict) else {}

    context = named("contexts", config.get("current-context")).get("context") or {}
    cluster = named("clusters", context.get("cluster")).get("cluster") or {}
    user = named("users", context.get("user")).get("user") or {}
    return dict(cluster), dict(user)


def server_url(host: str, port: int) -> str:
    """Return the API URL for ``host`` and ``port``, bracketing IPv6 literals."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"https://{host}:{port}"


def write(config: Kubeconfig, path: Path) -> Path:
    """Write ``config`` to ``path`` atomically with mode 0600 and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            yaml.safe_dump(config, stream, default_flow_style=False, sort_keys=False)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def internal_path(path: Path) -> Path:
    """Where the internal kubeconfig of the kubeconfig ``path`` goes: next to it.

    ``<dir>/<name>.kubeconfig.yaml`` has ``<dir>/<name>.internal-kubeconfig.yaml``
    (a name no ``*.kubeconfig.yaml`` pattern matches, so nothing takes it for
    a cluster's own kubeconfig).
    """
    stem = path.name.removesuffix(".kubeconfig.yaml")
    return path.with_name(f"{stem}.internal-kubeconfig.yaml")


def write_internal(path: Path, *, server: str, name: str) -> Path:
    """Write the kubeconfig ``path`` with ``server`` as its API URL; return its path.

    It goes to :func:`internal_path` (mode 0600), and is rewritten only if
    what it holds differs: a container may have it mounted.

    :raises K3sError: ``path`` cannot be read or is not the kubeconfig of a
        cluster pytest-k3s started
    """
    try:
        config = parse(path.read_bytes())
    except OSError as exc:
        raise K3sError(f"cannot read the kubeconfig {path}: {exc}") from exc
    wanted = rewrite(config, server=server, name=name)
    target = internal_path(path)
    try:
        if parse(target.read_bytes()) == wanted:
            return target
    except (OSError, K3sError):
        pass  # missing or damaged: written below
    return write(wanted, target)


#: Kubeconfig fields naming files, resolved against the kubeconfig's folder
#: (as kubectl does).
_FILE_FIELDS = ("certificate-authority", "client-certificate", "client-key")


def read_context(path: Path, context: str | None) -> tuple[Kubeconfig, str]:
    """Return a kubeconfig holding only ``context`` (default: the current one).

    :raises K3sError: the file cannot be read, or has no such context
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise K3sError(f"cannot read the kubeconfig {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise K3sError(f"{path} is not a kubeconfig")
    name = context or document.get("current-context")
    if not name:
        raise K3sError(f"{path} has no current-context; choose one with --k3s-context")

    def entry(kind: str, wanted: object) -> dict[str, Any]:
        for item in document.get(kind) or []:
            if isinstance(item, dict) and item.get("name") == wanted:
                return item
        known = ", ".join(
            str(i.get("name")) for i in document.get(kind) or [] if isinstance(i, dict)
        )
        raise K3sError(
            f"{path} has no {kind[:-1]} {wanted!r} (it has: {known or 'none'}); "
            "choose another with --k3s-context"
        )

    chosen = entry("contexts", name)
    details = chosen.get("context") or {}
    cluster = entry("clusters", details.get("cluster"))
    user = entry("users", details.get("user"))
    base = path.resolve().parent
    for section in (cluster.get("cluster") or {}, user.get("user") or {}):
        for key in _FILE_FIELDS:
            value = section.get(key)
            if isinstance(value, str) and value and not os.path.isabs(value):
                section[key] = str(base / value)
    only = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [user],
        "contexts": [chosen],
        "current-context": name,
    }
    return only, str(name)


def private_copy(config: Kubeconfig, name: str) -> tuple[Path, Path]:
    """Write ``config`` into a new private directory; return (directory, file)."""
    directory = Path(tempfile.mkdtemp(prefix="pytest-k3s-existing-"))
    try:
        path = write(config, directory / f"{_safe(name)}.kubeconfig.yaml")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory, path


def _safe(name: str) -> str:
    keep: Callable[[str], bool] = lambda c: c.isalnum() or c in "-_."  # noqa: E731
    return "".join(c if keep(c) else "-" for c in name) or "cluster"
