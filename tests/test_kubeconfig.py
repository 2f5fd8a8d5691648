from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from pytest_k3s import K3sError
from pytest_k3s.kube import kubeconfig


K3S_KUBECONFIG = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
"""


def test_rewrite_points_at_the_published_port_and_renames() -> None:
    config = kubeconfig.rewrite(
        kubeconfig.parse(K3S_KUBECONFIG),
        server="https://127.0.0.1:41234",
        name="k3s-ab12",
    )
    assert config["clusters"] == [
        {
            "cluster": {
                "certificate-authority-data": "Q0E=",
                "server": "https://127.0.0.1:41234",
            },
            "name": "k3s-ab12",
        }
    ]
    assert config["contexts"] == [
        {
            "name": "k3s-ab12",
            "context": {"cluster": "k3s-ab12", "user": "admin@k3s-ab12"},
        }
    ]
    assert config["users"][0]["name"] == "admin@k3s-ab12"
    assert config["users"][0]["user"]["client-key-data"] == "S0VZ"
    assert config["current-context"] == "k3s-ab12"


def test_rewrite_relies_on_no_entry_name() -> None:
    named_after_node = (
        K3S_KUBECONFIG.replace("name: default", "name: k3s-x-server-0")
        .replace("cluster: default", "cluster: k3s-x-server-0")
        .replace("user: default", "user: k3s-x-server-0")
        .replace("current-context: default", "current-context: k3s-x-server-0")
    )
    assert "default" not in named_after_node
    config = kubeconfig.rewrite(
        kubeconfig.parse(named_after_node), server="https://h:1", name="k3s-x"
    )
    assert config["users"][0]["user"]["client-certificate-data"] == "Q0VSVA=="
    assert config["clusters"][0]["cluster"]["certificate-authority-data"] == "Q0E="


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            (
                "    client-key-data: S0VZ\n",
                "    client-key-data: S0VZ\n    exec: {command: sh}\n",
            ),
            "carries more than a CA and a client certificate \\(exec\\)",
        ),
        (
            (
                "    client-key-data: S0VZ\n",
                "    client-key-data: S0VZ\n    auth-provider: {name: x}\n",
            ),
            "\\(auth-provider\\)",
        ),
        (
            (
                "    client-key-data: S0VZ\n",
                "    client-key-data: S0VZ\n    token: abc\n",
            ),
            "\\(token\\)",
        ),
        (
            (
                "    server: https",
                "    insecure-skip-tls-verify: true\n    server: https",
            ),
            "insecure-skip-tls-verify",
        ),
        (("    client-key-data: S0VZ\n", ""), "has no client-key-data"),
        (("    certificate-authority-data: Q0E=\n", ""), "has no certificate-auth"),
    ],
)
def test_rewrite_refuses_anything_but_ca_and_client_certificate(
    change: tuple[str, str], message: str
) -> None:
    text = K3S_KUBECONFIG.replace(*change)
    assert text != K3S_KUBECONFIG
    with pytest.raises(K3sError, match=message):
        kubeconfig.rewrite(kubeconfig.parse(text), server="https://h:1", name="x")


def test_rewrite_leaves_the_original_alone() -> None:
    original = kubeconfig.parse(K3S_KUBECONFIG)
    kubeconfig.rewrite(original, server="https://h:1", name="x")
    assert original["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "https://127.0.0.1:6443"),
        ("docker.example", "https://docker.example:6443"),
        ("::1", "https://[::1]:6443"),
    ],
)
def test_server_url_brackets_ipv6(host: str, url: str) -> None:
    assert kubeconfig.server_url(host, 6443) == url


@pytest.mark.parametrize(
    "text", ["", "[1, 2", "clusters: []\ncontexts: []\nusers: []\n"]
)
def test_parse_rejects_what_is_not_a_usable_kubeconfig(text: str) -> None:
    with pytest.raises(K3sError, match="kubeconfig"):
        kubeconfig.parse(text)


def test_write_is_private_and_round_trips(tmp_path: Path) -> None:
    config = kubeconfig.parse(K3S_KUBECONFIG)
    path = kubeconfig.write(config, tmp_path / "sub" / "k.yaml")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(path.read_text()) == config
    assert [p.name for p in path.parent.iterdir()] == ["k.yaml"], "no temp files left"


USER_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster: {server: "https://prod.example:6443", certificate-authority: ca.crt}
- name: dev
  cluster: {server: "https://dev.example:6443"}
users:
- name: admin
  user: {client-certificate: certs/admin.crt, client-key: /abs/admin.key}
contexts:
- name: prod
  context: {cluster: prod, user: admin}
- name: dev
  context: {cluster: dev, user: admin}
current-context: prod
"""


def test_a_context_is_copied_alone_with_its_files_made_absolute(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(USER_KUBECONFIG)
    config, name = kubeconfig.read_context(path, None)
    assert name == "prod"
    assert [c["name"] for c in config["clusters"]] == ["prod"]
    assert config["clusters"][0]["cluster"]["certificate-authority"] == str(
        tmp_path / "ca.crt"
    )
    user = config["users"][0]["user"]
    assert user["client-certificate"] == str(tmp_path / "certs/admin.crt")
    assert user["client-key"] == "/abs/admin.key"
    _, other = kubeconfig.read_context(path, "dev")
    assert other == "dev"


@pytest.mark.parametrize(
    ("text", "context", "message"),
    [
        (None, None, "cannot read the kubeconfig"),
        ("- a list", None, "is not a kubeconfig"),
        ("apiVersion: v1\nclusters: []\n", None, "has no current-context"),
        (
            USER_KUBECONFIG,
            "staging",
            "has no context 'staging' \\(it has: prod, dev\\)",
        ),
        (
            USER_KUBECONFIG.replace(
                "user: admin}\n- name: dev", "user: ghost}\n- name: dev"
            ),
            None,
            r"has no user 'ghost' \(it has: admin\)",
        ),
    ],
)
def test_an_unusable_context_is_refused_saying_why(
    tmp_path: Path, text: str | None, context: str | None, message: str
) -> None:
    path = tmp_path / "config"
    if text is not None:
        path.write_text(text)
    with pytest.raises(K3sError, match=message):
        kubeconfig.read_context(path, context)


def test_the_internal_kubeconfig_sits_next_to_the_cluster_s_own(tmp_path: Path) -> None:
    own = kubeconfig.write(
        kubeconfig.rewrite(
            kubeconfig.parse(K3S_KUBECONFIG), server="https://127.0.0.1:1", name="k"
        ),
        tmp_path / "k3s-ab12.kubeconfig.yaml",
    )
    internal = kubeconfig.write_internal(
        own, server="https://k3s-ab12-server-0:6443", name="k3s-ab12"
    )
    assert internal == tmp_path / "k3s-ab12.internal-kubeconfig.yaml"
    assert internal == kubeconfig.internal_path(own)
    assert not internal.match("*.kubeconfig.yaml"), "never taken for a cluster's own"
    assert stat.S_IMODE(internal.stat().st_mode) == 0o600
    config = kubeconfig.parse(internal.read_bytes())
    assert config["clusters"][0]["cluster"] == {
        "server": "https://k3s-ab12-server-0:6443",
        "certificate-authority-data": "Q0E=",
    }
    assert config["users"][0]["user"]["client-key-data"] == "S0VZ"
    assert config["current-context"] == "k3s-ab12"
    before = internal.stat().st_ino
    kubeconfig.write_internal(
        own, server="https://k3s-ab12-server-0:6443", name="k3s-ab12"
    )
    assert internal.stat().st_ino == before, "unchanged: not rewritten (mounted)"
    kubeconfig.write_internal(own, server="https://k3s-ab12-serverlb:6443", name="k")
    assert "k3s-ab12-serverlb" in internal.read_text()


def test_an_internal_kubeconfig_needs_the_cluster_s_own(tmp_path: Path) -> None:
    with pytest.raises(K3sError, match=r"cannot read the kubeconfig .*gone"):
        kubeconfig.write_internal(
            tmp_path / "gone.kubeconfig.yaml", server="https://x:6443", name="x"
        )
