"""Kubeconfig hand-over: parse what k3s wrote, point it at the published port, save it.

k3s writes a kubeconfig whose cluster, context and user are all named
``default`` and whose server is ``https://127.0.0.1:6443`` as seen from inside
the node. Tests need the address of the published port instead, and names that
say which cluster they belong to, so that two clusters' files can be merged.
"""

from __future__ import annotations

import os
import tempfile
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


def rewrite(config: Kubeconfig, *, server: str, name: str) -> Kubeconfig:
    """Return a copy of ``config`` that reaches ``server`` under the name ``name``.

    The cluster and context are renamed to ``name`` and the user to
    ``admin@<name>``, and ``current-context`` selects it; everything else
    (certificates, preferences) is kept.
    """
    cluster = dict(config["clusters"][0])
    cluster["name"] = name
    cluster["cluster"] = {**cluster["cluster"], "server": server}
    user = {**config["users"][0], "name": f"admin@{name}"}
    context = {
        "name": name,
        "context": {
            **config["contexts"][0].get("context", {}),
            "cluster": name,
            "user": f"admin@{name}",
        },
    }
    return {
        **config,
        "clusters": [cluster],
        "contexts": [context],
        "users": [user],
        "current-context": name,
    }


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
