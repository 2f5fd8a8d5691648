"""The files k3s writes: private files, the admin kubeconfig, tokens read from flags."""

from __future__ import annotations

import os

from . import flags
from .pki import KeyPair


GLOBAL_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"


def write_private(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` atomically with ``mode`` (0600 unless told)."""
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


def token_secret(opts: flags.Options, name: str, file_flag: str) -> str:
    """The token a flag gives, or else the content of the file its file flag names."""
    token = opts.text(name)
    path = opts.text(file_flag)
    if not token and path:
        with open(path, encoding="utf-8") as source:
            token = source.read().strip()
    return token
