"""Unit tests of the node half's pure parts: flags, tokens, SANs, image archives."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any
from typing import cast

import pytest

from k3s_double.node import ctr
from k3s_double.node import flags
from k3s_double.node.identity import parse_label
from k3s_double.node.identity import parse_taint
from k3s_double.node.pki import Token
from k3s_double.node.pki import ca_hash
from k3s_double.node.pki import serving_sans
from k3s_double.node.runtime import cgroup_mounts
from k3s_double.node.runtime import parse_faults


def parse_server(*args: str, **env: str) -> flags.Options:
    return flags.parse(list(args), flags.SERVER_FLAGS, env)


def test_value_forms_aliases_and_repeats() -> None:
    opts = parse_server(
        "--token=abc",
        "-o",
        "/out/kc.yaml",
        "--tls-san",
        "a.example",
        "-tls-san=b.example",
        "--disable=traefik,servicelb",
        "--disable",
        "metrics-server",
        "--cluster-init",
        "--https-listen-port",
        "7443",
        "positional",
    )
    assert opts.text("token") == "abc"
    assert opts.text("write-kubeconfig") == "/out/kc.yaml"
    assert opts.items("tls-san") == ["a.example", "b.example"]
    assert opts.split("disable") == ["traefik", "servicelb", "metrics-server"]
    assert opts.flag("cluster-init")
    assert opts.number("https-listen-port") == 7443
    assert opts.positional == ["positional"]


def test_env_applies_only_to_unset_flags() -> None:
    env = {
        "K3S_TOKEN": "from-env",
        "K3S_URL": "https://s:6443",
        "K3S_CLUSTER_INIT": "1",
    }
    opts = parse_server("--token", "from-flag", **env)
    assert opts.text("token") == "from-flag"
    assert opts.text("server") == "https://s:6443"
    assert opts.flag("cluster-init")
    defaults = parse_server()
    assert defaults.number("https-listen-port") == 6443
    assert defaults.text("data-dir") == "/var/lib/rancher/k3s"
    assert not defaults.flag("cluster-init")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-such-flag"], "flag provided but not defined: -no-such-flag"),
        (["--token"], "flag needs an argument: -token"),
        (["--https-listen-port=x"], 'invalid value "x" for flag -https-listen-port'),
        (["--cluster-init=maybe"], 'invalid boolean value "maybe"'),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    with pytest.raises(flags.UsageError, match=message):
        parse_server(*args)


def test_agent_rejects_server_only_flags() -> None:
    with pytest.raises(flags.UsageError, match="-cluster-init"):
        flags.parse(["--cluster-init"], flags.AGENT_FLAGS, {})


def test_labels_and_taints() -> None:
    assert parse_label("tier=front") == ("tier", "front")
    assert parse_taint("dedicated=gpu:NoSchedule") == {
        "key": "dedicated",
        "value": "gpu",
        "effect": "NoSchedule",
    }
    assert parse_taint("spot:PreferNoSchedule") == {
        "key": "spot",
        "effect": "PreferNoSchedule",
    }
    with pytest.raises(ValueError, match="invalid taint"):
        parse_taint("dedicated=gpu")
    with pytest.raises(ValueError, match="invalid node label"):
        parse_label("no-value")


def test_tokens() -> None:
    ca = b"-----BEGIN CERTIFICATE-----\nxyz\n-----END CERTIFICATE-----\n"
    plain = Token.parse("secret")
    assert (plain.ca_hash, plain.password) == ("", "secret")
    full = plain.full(ca)
    assert full == f"K10{ca_hash(ca)}::server:secret"
    parsed = Token.parse(full)
    assert (parsed.ca_hash, parsed.username, parsed.password) == (
        ca_hash(ca),
        "server",
        "secret",
    )


def test_serving_sans_are_k3s_list_without_duplicates() -> None:
    sans = serving_sans("node-a", ["172.18.0.2"], ["127.0.0.1", "api.example"])
    assert sans == [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.43.0.1",
        "127.0.0.1",
        "api.example",
        "::1",
        "node-a",
        "172.18.0.2",
    ]


def _tar(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def test_image_archives() -> None:
    manifest = [
        {
            "Config": "c.json",
            "RepoTags": ["busybox:1.36", "ghcr.io/o/app"],
            "Layers": ["l"],
        }
    ]
    images = ctr.read_archive(
        _tar({"manifest.json": json.dumps(manifest).encode(), "l": b"x" * 10})
    )
    assert [i.name for i in images] == [
        "docker.io/library/busybox:1.36",
        "ghcr.io/o/app:latest",
    ]
    with pytest.raises(ctr.ImageFormatError, match="unrecognized image format"):
        ctr.read_archive(_tar({"hello.txt": b"hi"}))
    with pytest.raises(ctr.ImageFormatError, match="invalid tar header"):
        ctr.read_archive(io.BytesIO(b"not a tar at all" * 64))


def test_faults_combine_and_bad_ones_are_refused() -> None:
    assert parse_faults("") == {}
    assert parse_faults("join-crash:2, kubeconfig-late:1.5,cgroup-v2") == {
        "join-crash": "2",
        "kubeconfig-late": "1.5",
        "cgroup-v2": "",
    }
    for bad in ("explode", "slow", "slow:soon", "crash:1"):
        with pytest.raises(ValueError):
            parse_faults(bad)


def test_read_only_cgroup_mounts_are_found() -> None:
    # /proc/self/mountinfo of a non-privileged container on cgroup v1, then v2.
    v1 = (
        "158 154 0:67 / /sys ro,nosuid - sysfs sysfs ro\n"
        "159 158 0:68 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n"
        "160 159 0:29 / /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu\n"
        "161 159 0:30 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n"
    )
    assert cgroup_mounts(v1) == [
        ("/sys/fs/cgroup/cpu", "cgroup", True),
        ("/sys/fs/cgroup/memory", "cgroup", False),
    ]
    v2 = "30 25 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    assert cgroup_mounts(v2) == [("/sys/fs/cgroup", "cgroup2", True)]


def test_node_monitor_grace_period_reads_go_durations() -> None:
    from k3s_double.node.server import node_monitor_grace

    # kube-controller-manager's default since Kubernetes 1.32 (the double
    # claims v1.35): 50s, raised from 40s by kubernetes/kubernetes PR #126287.
    assert node_monitor_grace([]) == 50.0
    assert node_monitor_grace(["node-monitor-grace-period=10s"]) == 10
    assert node_monitor_grace(["--node-monitor-grace-period=1m30s"]) == 90
    assert node_monitor_grace(["node-monitor-grace-period=500ms"]) == 0.5
    assert node_monitor_grace(["v=2", "node-monitor-grace-period=2m"]) == 120
    for bad in ("10", "ten", "10 s", "1x"):
        with pytest.raises(ValueError, match="time: invalid duration"):
            node_monitor_grace([f"node-monitor-grace-period={bad}"])


class _InProcessUpstream:
    """The kubelet's HTTPS client, answered by an in-process ``KubeAPI``.

    After each call it notes the Node's Ready status as the API holds it.
    """

    def __init__(self, api: Any, node: str) -> None:
        self.api, self.node = api, node
        self.seen: list[tuple[str, str]] = []

    def call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        answer = self.api.handle(
            method, path, lowered, body, user=f"system:node:{self.node}"
        )
        found = self.api.find("Node", "", self.node) or {}
        ready = [
            c["status"]
            for c in found.get("status", {}).get("conditions", [])
            if c["type"] == "Ready"
        ]
        self.seen.append((method, ready[0] if ready else ""))
        return answer.status, answer.body


def test_a_node_is_not_ready_until_its_kubelet_reports() -> None:
    """Registered NotReady (KubeletNotReady), Ready only after a status update."""
    from k3s_double.apiserver.server import KubeAPI
    from k3s_double.node.identity import Node
    from k3s_double.node.kubelet import Kubelet
    from k3s_double.node.runtime import Log
    from k3s_double.node.runtime import Runtime
    from k3s_double.tests.conftest import wait_for

    api = KubeAPI()
    upstream = _InProcessUpstream(api, "n1")
    rt = Runtime(Log(), "")
    kubelet = Kubelet(rt, Node("n1", "n1", "172.18.0.5"), cast(Any, upstream), [])
    try:
        kubelet.start()
        wait_for(lambda: ("PATCH", "True") in upstream.seen, 5)
    finally:
        rt.stop.set()
        api.stop()
    registered = upstream.seen.index(("POST", "False"))
    first_ready = upstream.seen.index(("PATCH", "True"))
    assert registered < first_ready
    assert all(ready != "True" for _, ready in upstream.seen[:first_ready])
