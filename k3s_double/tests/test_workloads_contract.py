"""Pods that really run in the double's nodes, through the real Docker engine.

A server and an agent of the built image; the pods go to the agent, so the
server's API reaches the agent's kubelet over the cluster network for
``pods/log``, ``pods/exec`` and ``pods/portforward``, with the official
client and with the machine's kubectl.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.stream import portforward
from kubernetes.stream import stream

from .conftest import TOOLS
from .conftest import helm_binary
from .test_node_contract import TOKEN
from .test_node_contract import Cluster
from .test_node_contract import api_client
from .test_node_contract import kubeconfig_for
from .test_node_contract import new_cluster
from .test_node_contract import wait_for_log
from .test_node_contract import wait_until


pytestmark = pytest.mark.docker

WEB = "echo hello-log; exec python3 -m http.server 8080"


@pytest.fixture(scope="module")
def cluster(docker_client: docker.DockerClient, double_image: str) -> Iterator[Cluster]:
    """A server and an agent; the agent runs the tests' pods."""
    with new_cluster(docker_client, double_image) as c:
        server = c.run(
            "server", ["server", "--tls-san", "127.0.0.1"], {"K3S_TOKEN": TOKEN},
            publish=True,
        )  # fmt: skip
        c.run(
            "agent", ["agent"],
            {"K3S_TOKEN": TOKEN, "K3S_URL": f"https://{server.name}:6443"},
        )  # fmt: skip
        wait_for_log(server, "k3s is up and running")
        wait_for_log(c.agents[0], "Successfully registered node")
        c.api = api_client(kubeconfig_for(server))
        yield c


@pytest.fixture(scope="module")
def core(cluster: Cluster) -> Any:
    return k8s.CoreV1Api(cluster.client)


def _pod(cluster: Cluster, name: str, script: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeName": cluster.agents[0].name,
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.12-slim",
                    "command": ["sh", "-c", script],
                }
            ],
            **spec,
        },
    }


def _processes(pattern: str) -> list[str]:
    """A command that fails unless a process of the node matches ``pattern``."""
    # The node's userland has no ps: read /proc.
    script = (
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; "
        f"done | grep -v grep | grep -q '{pattern}'"
    )
    return ["sh", "-c", script]


def _running(core: Any, name: str) -> Any:
    pod = core.read_namespaced_pod(name, "default")
    statuses = pod.status.container_statuses or []
    if pod.status.phase == "Running" and statuses and statuses[0].ready:
        return pod
    return None


@pytest.fixture(scope="module")
def web(cluster: Cluster, core: Any) -> str:
    core.create_namespaced_pod("default", _pod(cluster, "web", WEB))
    wait_until(lambda: _running(core, "web"), 60, "pod web Running")
    return "web"


def test_a_pod_runs_in_its_node_and_its_log_comes_from_there(
    cluster: Cluster, core: Any, web: str
) -> None:
    log = wait_until(
        lambda: core.read_namespaced_pod_log(web, "default"), 20, "log of web"
    )
    assert log.splitlines()[0] == "hello-log"
    pod = core.read_namespaced_pod(web, "default")
    assert pod.status.pod_ip == pod.status.host_ip
    # The process runs in the agent's container, and its CRI log is there.
    agent = cluster.agents[0]
    found = agent.exec_run(_processes("http.server 8080"))
    assert found.exit_code == 0, found.output
    uid = pod.metadata.uid
    cri = agent.exec_run(["cat", f"/var/log/pods/default_web_{uid}/main/0.log"])
    first = cri.output.decode().splitlines()[0]
    stamp, stream_, tag, text = first.split(" ", 3)
    assert (stream_, tag, text) == ("stdout", "F", "hello-log")
    assert stamp.endswith("Z")
    stamped = core.read_namespaced_pod_log(web, "default", timestamps=True)
    assert stamped.splitlines()[0].endswith("Z hello-log")


def test_exec_gives_stdout_stderr_and_the_exit_code(core: Any, web: str) -> None:
    resp = stream(
        core.connect_get_namespaced_pod_exec, web, "default",
        command=["sh", "-c", "echo out; echo err >&2; exit 3"],
        stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False,
    )  # fmt: skip
    resp.run_forever(timeout=20)
    assert resp.read_stdout() == "out\n"
    assert resp.read_stderr() == "err\n"
    assert resp.returncode == 3


def _http_get(sock: socket.socket) -> bytes:
    sock.setblocking(True)
    sock.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
    reply = b""
    while data := sock.recv(65536):
        reply += data
    sock.close()
    return reply


def test_port_forward_reaches_the_pods_real_listener(core: Any, web: str) -> None:
    for _ in range(3):  # one websocket per connection, one after another
        forward = portforward(
            core.connect_get_namespaced_pod_portforward, web, "default", ports="8080"
        )
        reply = _http_get(forward.socket(8080))
        assert reply.startswith(b"HTTP/1.0 200"), reply[:200]
        assert b"Directory listing" in reply
        assert forward.error(8080) is None


def test_a_crashing_container_restarts_and_shows_its_previous_log(
    cluster: Cluster, core: Any
) -> None:
    core.create_namespaced_pod(
        "default", _pod(cluster, "crash", "echo attempt-$(date +%s%N); exit 4")
    )

    def restarted() -> Any:
        statuses = core.read_namespaced_pod("crash", "default").status
        found = statuses.container_statuses or []
        return found and found[0].restart_count >= 1 and found[0]

    container = wait_until(restarted, 30, "a restart of crash")
    assert container.last_state.terminated.exit_code == 4
    previous = core.read_namespaced_pod_log("crash", "default", previous=True)
    assert previous.startswith("attempt-")
    with pytest.raises(k8s.ApiException) as caught:
        core.read_namespaced_pod_log("web", "default", previous=True)
    assert caught.value.status == 400
    assert json.loads(str(caught.value.body))["message"] == (
        'previous terminated container "main" in pod "web" not found'
    )


def test_a_deleted_pod_takes_its_process_with_it(cluster: Cluster, core: Any) -> None:
    core.create_namespaced_pod(
        "default", _pod(cluster, "doomed", "exec python3 -m http.server 8099")
    )
    wait_until(lambda: _running(core, "doomed"), 60, "pod doomed Running")
    agent = cluster.agents[0]
    probe = _processes("http.server 8099")
    assert agent.exec_run(probe).exit_code == 0
    core.delete_namespaced_pod("doomed", "default")

    def gone() -> bool:
        names = [p.metadata.name for p in core.list_namespaced_pod("default").items]
        return "doomed" not in names

    wait_until(gone, 30, "pod doomed removed")
    assert agent.exec_run(probe).exit_code != 0


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
def test_kubectl_logs_exec_and_port_forward(
    cluster: Cluster, web: str, tmp_path: Path
) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump(kubeconfig_for(cluster.servers[0])))
    base = ["kubectl", "--kubeconfig", str(config)]
    logs = subprocess.run(
        [*base, "logs", web], capture_output=True, text=True, timeout=30, check=False
    )
    assert logs.stdout.splitlines()[0] == "hello-log", logs.stderr
    done = subprocess.run(
        [*base, "exec", web, "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (3, "out\n")
    assert done.stderr.startswith("err\n")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        local = free.getsockname()[1]
    forward = subprocess.Popen(
        [*base, "port-forward", f"pod/{web}", f"{local}:8080"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{local}/", timeout=5
                ) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline or forward.poll() is not None:
                    raise
                time.sleep(0.3)
    finally:
        forward.terminate()
        out, err = forward.communicate(timeout=10)
    assert f"Forwarding from 127.0.0.1:{local} -> 8080" in out, err


def _finished(core: Any, name: str) -> Any:
    pod = core.read_namespaced_pod(name, "default")
    return pod if pod.status.phase in ("Succeeded", "Failed") else None


def _run_to_completion(
    cluster: Cluster, core: Any, name: str, script: str, node: str = ""
) -> Any:
    """A bare pod (``restartPolicy: Never``) of ``script``, once it has finished."""
    pod = _pod(cluster, name, script, restartPolicy="Never")
    pod["spec"]["containers"][0]["image"] = "busybox:1.36"
    if node:
        pod["spec"]["nodeName"] = node
    core.create_namespaced_pod("default", pod)
    return wait_until(lambda: _finished(core, name), 60, f"pod {name} finished")


def test_a_bare_pod_that_really_runs_completes_with_its_exit_code(
    cluster: Cluster, core: Any
) -> None:
    done = _run_to_completion(cluster, core, "once-ok", "echo did-run; exit 0")
    (status,) = done.status.container_statuses
    assert done.status.phase == "Succeeded"
    assert status.state.terminated.exit_code == 0
    assert status.state.terminated.reason == "Completed"
    assert core.read_namespaced_pod_log("once-ok", "default") == "did-run\n"
    # busybox' wget is the node's wget: it really runs, and really fails here.
    failed = _run_to_completion(
        cluster, core, "once-bad", "wget -q -T 2 -O- http://127.0.0.1:9/"
    )
    (status,) = failed.status.container_statuses
    assert failed.status.phase == "Failed"
    assert status.state.terminated.exit_code == 4  # wget: network failure
    assert status.state.terminated.reason == "Error"


def _service(name: str, selector: dict[str, str], target: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": selector,
            "ports": [{"name": "front", "port": 80, "targetPort": target}],
        },
    }


#: Retries as a client of a Service does: the rules follow it within a second.
FETCH = (
    "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -T 3 -O- http://{url}/ && exit 0; "
    "sleep 1; done; exit 1"
)


def test_a_pod_reaches_a_service_by_name_through_its_cluster_ip(
    cluster: Cluster, core: Any, web: str
) -> None:
    # web listens on 8080 in the agent; the client runs in the server node.
    core.create_namespaced_service("default", _service("front", {"app": web}, 8080))
    server = str(cluster.servers[0].name)
    names = ["front", "front.default", "front.default.svc"]
    names.append("front.default.svc.cluster.local")
    # Each name in its own subshell so one `exit 0` does not end the script.
    script = "cat /etc/resolv.conf && " + " && ".join(
        f"( {FETCH.format(url=name)} )" for name in names
    )
    done = _run_to_completion(cluster, core, "client", script, node=server)
    log = core.read_namespaced_pod_log("client", "default")
    assert done.status.phase == "Succeeded", log
    assert "nameserver 10.43.0.10" in log
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in log
    assert log.count("</html>") == len(names)
    cluster_ip = core.read_namespaced_service("front", "default").spec.cluster_ip
    # The node's own resolver is left alone; the ClusterIP answers there too.
    node = cluster.servers[0]
    assert b"10.43.0.10" not in node.exec_run(["cat", "/etc/resolv.conf"]).output
    direct = node.exec_run(["wget", "-q", "-T", "5", "-O-", f"http://{cluster_ip}/"])
    assert b"Directory listing" in direct.output, direct.output


def test_a_service_of_simulated_pods_or_of_none_does_not_answer(
    cluster: Cluster, core: Any
) -> None:
    # nginx has no command the node can run: the double simulates its pod,
    # and nothing listens behind its IP.
    pod = _pod(cluster, "sim", "unused")
    del pod["spec"]["containers"][0]["command"]
    pod["spec"]["containers"][0]["image"] = "nginx:1.27-alpine"
    core.create_namespaced_pod("default", pod)
    wait_until(lambda: _running(core, "sim"), 60, "pod sim Running")
    core.create_namespaced_service("default", _service("sim", {"app": "sim"}, 80))
    core.create_namespaced_service("default", _service("none", {"app": "none"}, 80))
    for name in ("sim", "none"):
        done = _run_to_completion(
            cluster, core, f"to-{name}", "wget -q -T 3 -O- http://" + name
        )
        assert done.status.phase == "Failed"
        assert done.status.container_statuses[0].state.terminated.exit_code != 0


def test_helm_test_of_the_example_chart_passes(
    cluster: Cluster, core: Any, tmp_path: Path
) -> None:
    helm = helm_binary()
    if helm is None:
        pytest.skip(f"no helm: none on PATH, none in {TOOLS}")
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump(kubeconfig_for(cluster.servers[0])))
    chart = Path(__file__).resolve().parents[2] / "examples" / "charts" / "hello"
    base = [helm, "--kubeconfig", str(config), "--namespace", "default"]

    def run(*args: str) -> str:
        done = subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=240, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("install", "hi", str(chart), "--set", "replicas=2", "--wait")
    try:
        out = run("test", "hi", "--logs")
        assert "Phase:          Succeeded" in out, out
        assert "hello from hi-" in out, out
    finally:
        run("uninstall", "hi", "--wait")


def test_a_restarted_node_starts_its_pods_processes_again(
    cluster: Cluster, core: Any, web: str
) -> None:
    agent = cluster.agents[0]
    agent.restart(timeout=10)

    def again() -> Any:
        pod = _running(core, web)
        statuses = pod.status.container_statuses if pod else []
        return statuses and statuses[0].restart_count >= 1 and statuses[0]

    container = wait_until(again, 90, "web running again after its node restarted")
    assert container.last_state.terminated.reason == "Unknown"
    assert agent.exec_run(_processes("http.server 8080")).exit_code == 0
    previous = core.read_namespaced_pod_log(web, "default", previous=True)
    assert previous.splitlines()[0] == "hello-log"
