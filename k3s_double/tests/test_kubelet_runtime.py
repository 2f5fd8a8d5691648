"""The kubelet that runs pods as processes, in process (no Docker).

The pieces on their own (websocket frames, the CRI log format, the restart
back-off, which commands run), then the whole chain: the API over HTTP, a
Node whose kubelet runs processes here on 127.0.0.1 (its port 10250 on an
ephemeral port), and the official client's ``pods/log``, ``stream`` and
``portforward`` against it.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.stream import portforward
from kubernetes.stream import stream

from k3s_double import runnable
from k3s_double.apiserver.kubelets import KubeletClient
from k3s_double.apiserver.kubelets import client_context
from k3s_double.apiserver.server import KubeAPI
from k3s_double.node import children
from k3s_double.node import crilog
from k3s_double.node import websocket
from k3s_double.node.containers import ContainerRuntime
from k3s_double.node.containers import expand
from k3s_double.node.kubeletserver import KubeletServer
from k3s_double.node.kubeletserver import kubelet_context
from k3s_double.node.nodeinfo import node_object
from k3s_double.node.pki import client_cert
from k3s_double.node.pki import new_ca
from k3s_double.node.pki import serving_cert

from .conftest import wait_for


# -- pieces ---------------------------------------------------------------


def test_a_masked_client_frame_reads_back_unmasked() -> None:
    payload = bytes([websocket.STDIN]) + b"hello" * 100
    frame = websocket.encode_frame(
        websocket.OP_BINARY, payload, mask=b"\x01\x02\x03\x04"
    )
    assert frame[1] & 0x80  # masked
    assert frame[1] & 0x7F == 126  # 16-bit length
    assert websocket.read_frame(io.BytesIO(frame)) == (
        True,
        websocket.OP_BINARY,
        payload,
    )


def test_a_fragmented_message_and_a_ping_between_make_one_message() -> None:
    mask = b"\x09\x08\x07\x06"
    first = websocket.encode_frame(websocket.OP_BINARY, b"\x00ab", mask=mask)
    first = bytes([first[0] & 0x7F]) + first[1:]  # not final
    ping = websocket.encode_frame(websocket.OP_PING, b"p", mask=mask)
    last = websocket.encode_frame(websocket.OP_CONT, b"cd", mask=mask)
    out = io.BytesIO()
    conn = websocket.Connection(io.BytesIO(first + ping + last), out, websocket.V4)
    assert conn.receive() == b"\x00abcd"
    assert websocket.read_frame(io.BytesIO(out.getvalue())) == (
        True,
        websocket.OP_PONG,
        b"p",
    )
    assert conn.receive() is None


def test_the_client_order_picks_the_protocol_and_the_accept_key_is_rfc6455s() -> None:
    headers = {"sec-websocket-protocol": "v5.channel.k8s.io,v4.channel.k8s.io"}
    assert websocket.choose(headers, websocket.EXEC_PROTOCOLS) == websocket.V5
    assert websocket.choose(headers, websocket.PORTFORWARD_PROTOCOLS) == websocket.V4
    with pytest.raises(websocket.ProtocolError, match="unable to negotiate"):
        websocket.choose({"sec-websocket-protocol": "base64.channel.k8s.io"}, ("x",))
    # RFC 6455, section 1.3.
    assert (
        websocket.accept_key("dGhlIHNhbXBsZSBub25jZQ==")
        == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    )


def test_cri_log_lines_carry_rfc3339nano_stream_and_tag(tmp_path: Path) -> None:
    assert crilog.rfc3339nano(1700000000.5) == "2023-11-14T22:13:20.5Z"
    assert crilog.rfc3339nano(1700000000.0) == "2023-11-14T22:13:20Z"
    assert crilog.nine_digits("2023-11-14T22:13:20.5Z") == (
        "2023-11-14T22:13:20.500000000Z"
    )
    path = crilog.log_path(
        crilog.pod_log_dir("ns", "web", "u-1", str(tmp_path)), "c", 0
    )
    assert path == str(tmp_path / "ns_web_u-1" / "c" / "0.log")
    writer = crilog.LogWriter(path)
    writer.pump("stdout", io.BytesIO(b"one\ntwo\n" + b"x" * (crilog.MAX_LINE + 3)))
    writer.line("stderr", b"oops")
    writer.close()
    lines = Path(path).read_bytes().splitlines()
    stamp, stream_, tag, text = lines[0].split(b" ", 3)
    assert (stream_, tag, text) == (b"stdout", b"F", b"one")
    assert crilog.parse_stamp(stamp.decode()) == pytest.approx(time.time(), abs=5)
    assert [line.split(b" ")[2] for line in lines] == [b"F", b"F", b"P", b"P", b"F"]
    everything = b"".join(crilog.read_log(path, crilog.LogOptions()))
    assert everything.startswith(b"one\ntwo\nxxx")
    assert everything.endswith(b"xxx" + b"oops\n")
    tail = b"".join(crilog.read_log(path, crilog.LogOptions(tail=1, timestamps=True)))
    assert tail.endswith(b"Z oops\n")
    assert len(tail.split(b" ")[0]) == 30
    future = crilog.LogOptions(since=time.time() + 60)
    assert b"".join(crilog.read_log(path, future)) == b""
    limited = crilog.LogOptions(limit_bytes=5)
    assert b"".join(crilog.read_log(path, limited)) == b"one\nt"


def test_a_followed_log_ends_when_the_container_stops(tmp_path: Path) -> None:
    path = str(tmp_path / "0.log")
    writer = crilog.LogWriter(path)
    writer.line("stdout", b"first")
    running = threading.Event()
    running.set()
    got: list[bytes] = []
    follow = crilog.LogOptions(follow=True)
    reader = threading.Thread(
        target=lambda: got.extend(crilog.read_log(path, follow, running.is_set, 0.01))
    )
    reader.start()
    time.sleep(0.2)
    writer.line("stdout", b"second")
    time.sleep(0.2)
    assert got == [b"first\n", b"second\n"]
    writer.line("stdout", b"last")
    running.clear()
    reader.join(5)
    assert not reader.is_alive()
    assert got == [b"first\n", b"second\n", b"last\n"]


def test_the_back_off_doubles_from_one_second_to_its_cap() -> None:
    assert [crilog.backoff(n) for n in range(6)] == [1, 2, 4, 8, 8, 8]


def test_only_a_command_naming_a_node_executable_runs() -> None:
    assert runnable.argv({"command": ["sh", "-c", "true"], "args": ["a"]}) == [
        "sh",
        "-c",
        "true",
        "a",
    ]
    assert runnable.argv({"args": ["sh", "-c", "true"]}) is None  # no entrypoint
    assert runnable.argv({"command": ["nginx"]}) is None
    assert runnable.argv({"command": [sys.executable]}) == [sys.executable]
    assert (
        runnable.argv({"command": ["sh"], "env": [{"name": "PATH", "value": "/x"}]})
        is None
    )
    assert expand("$(A)-$$(A)-$(B)", {"A": "1"}) == "1-$(A)-$(B)"


# -- the whole chain --------------------------------------------------------


class _LocalApi:
    """``Upstream.call`` straight into a ``KubeAPI``, as the node's kubelet."""

    def __init__(self, kube: KubeAPI) -> None:
        self.kube = kube

    def call(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        reply = self.kube.handle(method, target, lowered, body, user="system:node:n")
        return reply.status, reply.body


NODE = "runner-0"


@pytest.fixture
def runner(api: KubeAPI, core: Any, node: str, tmp_path: Path) -> Iterator[str]:
    """A Node whose kubelet runs its pods here, reachable on an ephemeral port."""
    client_ca = new_ca("client-ca")
    files = serving_cert(new_ca("kubelet"), ["127.0.0.1"]).save(
        str(tmp_path), "serving"
    )
    runtime = ContainerRuntime(
        _LocalApi(api), NODE, "127.0.0.1", lambda _: True, str(tmp_path / "pods")
    )
    server = KubeletServer(
        0, kubelet_context(*files, client_ca.cert), runtime, lambda *_: None,
        host="127.0.0.1",
    )  # fmt: skip
    server.start()
    apiserver = client_cert(client_ca, "kube-apiserver", ["system:masters"])
    api.router.kubelets = KubeletClient(
        client_context(*apiserver.save(str(tmp_path), "apiserver"))
    )
    body: dict[str, Any] = node_object(
        NODE, internal_ip="127.0.0.1", labels={}, ready=True
    )
    body["metadata"]["annotations"] = {runnable.RUNS_PROCESSES: "true"}
    body["metadata"]["labels"]["role"] = "runner"
    body["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] = (
        server.server_address[1]
    )
    core.create_node(body)
    stop = threading.Event()

    def sync() -> None:
        while not stop.wait(0.1):
            pods = [p for p in api.objects("Pod") if p["spec"].get("nodeName") == NODE]
            runtime.sync(pods)

    thread = threading.Thread(target=sync, daemon=True)
    thread.start()
    yield NODE
    stop.set()
    thread.join(5)
    runtime.stop_all()
    server.shutdown()
    server.server_close()


def _get_through(core: Any, port: int) -> bytes:
    forward = portforward(
        core.connect_get_namespaced_pod_portforward, "web", "default", ports=str(port)
    )
    sock = forward.socket(port)
    sock.setblocking(True)
    sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    reply = b""
    while data := sock.recv(65536):
        reply += data
    sock.close()
    return reply


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"role": "runner"},
            "containers": [{"name": "main", "image": "busybox:1", "command": command}],
            **spec,
        },
    }


def _phase(core: Any, name: str) -> str:
    return str(core.read_namespaced_pod(name, "default").status.phase)


def test_a_pod_runs_as_a_process_with_its_log_exec_and_port_forward(
    core: Any, runner: str, url: str
) -> None:
    port = _free_port()
    server = f"{sys.executable} -m http.server {port} --bind 127.0.0.1"
    script = f"echo hello-log; echo to-err >&2; exec {server}"
    pod = _pod("web", ["sh", "-c", script])
    pod["spec"]["containers"][0]["env"] = [{"name": "GREETING", "value": "hi"}]
    pod["spec"]["containers"][0]["workingDir"] = "/tmp"
    core.create_namespaced_pod("default", pod)
    wait_for(lambda: _phase(core, "web") == "Running", 15)
    wait_for(lambda: "hello-log" in core.read_namespaced_pod_log("web", "default"))
    status = core.read_namespaced_pod("web", "default").status
    assert status.container_statuses[0].ready is True
    assert status.container_statuses[0].state.running is not None
    assert status.pod_ip == "127.0.0.1"
    log = core.read_namespaced_pod_log("web", "default", timestamps=True)
    # stdout and stderr are two pipes: either line may come first.
    first = next(line for line in log.splitlines() if "hello-log" in line)
    assert first.endswith("Z hello-log")
    assert len(first.split(" ")[0]) == 30
    assert "to-err" in log
    # exec: stdout, stderr and the exit code, through the official client.
    resp = stream(
        core.connect_get_namespaced_pod_exec, "web", "default",
        command=["sh", "-c", "echo out; echo err >&2; echo $GREETING; pwd; exit 3"],
        stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False,
    )  # fmt: skip
    resp.run_forever(timeout=10)
    assert resp.read_stdout().split() == ["out", "hi", "/tmp"]
    assert resp.read_stderr() == "err\n"
    assert resp.returncode == 3
    ok = stream(
        core.connect_get_namespaced_pod_exec, "web", "default",
        command=["true"], stderr=True, stdout=True,
    )  # fmt: skip
    assert ok == ""
    # port-forward: the bytes come from the process's real listener.
    forward = portforward(
        core.connect_get_namespaced_pod_portforward, "web", "default", ports=str(port)
    )
    sock = forward.socket(port)
    sock.setblocking(True)
    sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    reply = b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        reply += data
    sock.close()
    assert reply.startswith(b"HTTP/1.0 200")
    assert forward.error(port) is None

    # Many at once: one websocket (and one TCP connection) each. The official
    # client swaps its ApiClient's request method for a websocket call, so
    # each thread needs an ApiClient of its own.
    def fetch(_: int) -> bytes:
        with k8s.ApiClient(k8s.Configuration(host=url)) as own:
            return _get_through(k8s.CoreV1Api(own), port)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(fetch, range(40)))
    assert all(r.startswith(b"HTTP/1.0 200") for r in replies)
    # Deleted, the pod's process gets SIGTERM and is gone.
    core.delete_namespaced_pod("web", "default", grace_period_seconds=5)
    wait_for(
        lambda: (
            not [
                p
                for p in core.list_namespaced_pod("default").items
                if p.metadata.name == "web"
            ]
        ),
        15,
    )
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_a_crashing_container_restarts_with_back_off_and_keeps_its_previous_log(
    core: Any, runner: str
) -> None:
    core.create_namespaced_pod(
        "default",
        _pod("crash", ["sh", "-c", "echo run-$(date +%s%N); echo bye >&2; exit 7"]),
    )

    def restarted() -> Any:
        status = core.read_namespaced_pod("crash", "default").status
        statuses = status.container_statuses or []
        return statuses and statuses[0].restart_count >= 1 and statuses[0]

    container = wait_for(restarted, 15)
    assert container.last_state.terminated.exit_code == 7
    assert container.last_state.terminated.reason == "Error"
    previous = core.read_namespaced_pod_log("crash", "default", previous=True)
    # stdout and stderr are two pipes: their lines may interleave either way.
    lines = sorted(previous.splitlines())
    assert lines[0] == "bye"
    assert lines[1].startswith("run-")
    assert _phase(core, "crash") == "Running"
    waiting = wait_for(
        lambda: (
            core.read_namespaced_pod("crash", "default")
            .status.container_statuses[0]
            .state.waiting
        ),
        10,
    )
    assert waiting.reason == "CrashLoopBackOff"
    assert "back-off" in waiting.message
    reasons = [
        e.reason
        for e in core.list_namespaced_event("default").items
        if e.involved_object.name == "crash"
    ]
    assert "BackOff" in reasons


def test_previous_without_a_restart_and_a_pod_of_several_containers_are_refused(
    core: Any, runner: str
) -> None:
    pod = _pod("two", ["sleep", "30"])
    pod["spec"]["containers"].append(
        {"name": "side", "image": "busybox:1", "command": ["sleep", "30"]}
    )
    core.create_namespaced_pod("default", pod)
    wait_for(lambda: _phase(core, "two") == "Running", 15)
    with pytest.raises(k8s.ApiException) as caught:
        core.read_namespaced_pod_log("two", "default")
    assert caught.value.status == 400
    assert json.loads(str(caught.value.body))["message"] == (
        "a container name must be specified for pod two, choose one of: [main side]"
    )
    wait_for(
        lambda: core.read_namespaced_pod_log("two", "default", container="side") == ""
    )
    with pytest.raises(k8s.ApiException) as caught:
        core.read_namespaced_pod_log("two", "default", container="side", previous=True)
    assert caught.value.status == 400
    assert json.loads(str(caught.value.body))["message"] == (
        'previous terminated container "side" in pod "two" not found'
    )


def test_a_job_like_pod_succeeds_on_exit_zero_and_fails_on_another(
    core: Any, runner: str
) -> None:
    core.create_namespaced_pod(
        "default", _pod("ok", ["sh", "-c", "echo done"], restartPolicy="Never")
    )
    core.create_namespaced_pod(
        "default", _pod("bad", ["sh", "-c", "exit 2"], restartPolicy="Never")
    )
    wait_for(lambda: _phase(core, "ok") == "Succeeded", 15)
    wait_for(lambda: _phase(core, "bad") == "Failed", 15)
    terminated = (
        core.read_namespaced_pod("bad", "default")
        .status.container_statuses[0]
        .state.terminated
    )
    assert (terminated.exit_code, terminated.reason) == (2, "Error")
    assert core.read_namespaced_pod_log("ok", "default") == "done\n"


def test_a_pod_that_runs_nothing_is_simulated_and_cannot_be_exec_ed(
    core: Any, runner: str
) -> None:
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "idle"},
            "spec": {
                "nodeSelector": {"role": "runner"},
                "containers": [{"name": "main", "image": "nginx:1.27"}],
            },
        },
    )
    wait_for(lambda: _phase(core, "idle") == "Running", 15)
    with pytest.raises(k8s.ApiException) as caught:
        stream(
            core.connect_get_namespaced_pod_exec, "idle", "default",
            command=["true"], stderr=True, stdout=True,
        )  # fmt: skip
    # The websocket client reports the refused handshake, with the Status.
    assert "Handshake status 400" in str(caught.value)
    assert "pod idle runs no process" in str(caught.value)


def test_the_kubelet_port_refuses_callers_without_a_client_certificate(
    api: KubeAPI, runner: str
) -> None:
    node = api.find("Node", "", runner)
    assert node is not None
    port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    # TLS 1.3 reports the refused certificate at the first read.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _ask_without_certificate(port)


def _ask_without_certificate(port: int) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port)) as raw:
        tls = context.wrap_socket(raw)
        tls.sendall(b"GET /containerLogs/a/b/c HTTP/1.1\r\nHost: x\r\n\r\n")
        if not tls.recv(100):
            raise ConnectionError("closed without an answer")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
def test_kubectl_logs_and_exec(core: Any, runner: str, kubeconfig: Path) -> None:
    core.create_namespaced_pod(
        "default", _pod("k", ["sh", "-c", "echo from-k; exec sleep 60"])
    )
    wait_for(lambda: _phase(core, "k") == "Running", 15)
    base = ["kubectl", "--kubeconfig", str(kubeconfig)]
    logs = wait_for(
        lambda: (
            subprocess.run(
                [*base, "logs", "k"], capture_output=True, text=True, check=False
            ).stdout
        ),
        10,
    )
    assert logs == "from-k\n"
    done = subprocess.run(
        [*base, "exec", "k", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (
        3, "out\n", "err\ncommand terminated with exit code 3\n"
    )  # fmt: skip
    fed = subprocess.run(
        [*base, "exec", "-i", "k", "--", "cat"],
        input="through stdin\n", capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert (fed.returncode, fed.stdout) == (0, "through stdin\n"), fed.stderr


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
def test_kubectl_port_forward(core: Any, runner: str, kubeconfig: Path) -> None:
    port = _free_port()
    server = f"{sys.executable} -m http.server {port} --bind 127.0.0.1"
    core.create_namespaced_pod("default", _pod("pf", ["sh", "-c", f"exec {server}"]))
    wait_for(lambda: _phase(core, "pf") == "Running", 15)
    local = _free_port()
    forward = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(kubeconfig), "port-forward", "pod/pf",
         f"{local}:{port}", "-v=6"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline, bodies = time.monotonic() + 15, None
    while bodies is None and time.monotonic() < deadline and forward.poll() is None:
        time.sleep(0.3)
        bodies = _get_all(f"http://127.0.0.1:{local}/", 5)
    forward.terminate()
    out, err = forward.communicate(timeout=10)
    assert bodies is not None, err
    assert all(b"Directory listing" in body for body in bodies), err
    assert f"Forwarding from 127.0.0.1:{local} -> {port}" in out, err


def _get_all(url: str, count: int) -> list[bytes] | None:
    try:
        bodies = []
        for _ in range(count):
            with urllib.request.urlopen(url, timeout=5) as reply:
                bodies.append(reply.read())
    except OSError:
        return None
    return bodies


def test_reaping_orphans_leaves_the_nodes_own_children_their_exit_status() -> None:
    own = children.popen(["sh", "-c", "exit 3"])
    stray = subprocess.Popen(["sh", "-c", "exit 5"])  # as an orphan would be
    time.sleep(0.3)
    children.reap_orphans()
    assert children.wait(own) == 3
    with pytest.raises(ChildProcessError):
        os.waitpid(stray.pid, os.WNOHANG)  # already reaped


def test_a_followed_log_streams_until_the_container_exits(
    core: Any, runner: str
) -> None:
    script = "echo first; sleep 1; echo second; sleep 1; echo third"
    core.create_namespaced_pod(
        "default", _pod("talker", ["sh", "-c", script], restartPolicy="Never")
    )
    wait_for(lambda: _phase(core, "talker") == "Running", 15)
    wait_for(lambda: core.read_namespaced_pod_log("talker", "default"), 10)
    started = time.monotonic()
    reply = core.read_namespaced_pod_log(
        "talker", "default", follow=True, _preload_content=False
    )
    chunks = [chunk for chunk in reply.stream(16) if chunk]
    assert b"".join(chunks) == b"first\nsecond\nthird\n"
    assert time.monotonic() - started >= 1  # it waited for the later lines
    assert core.read_namespaced_pod_log("talker", "default", tail_lines=1) == "third\n"
    assert core.read_namespaced_pod_log("talker", "default", since_seconds=3600)


def test_a_forward_to_a_port_nobody_listens_on_says_so_on_its_error_channel(
    core: Any, runner: str
) -> None:
    core.create_namespaced_pod("default", _pod("quiet", ["sleep", "30"]))
    wait_for(lambda: _phase(core, "quiet") == "Running", 15)
    port = _free_port()
    forward = portforward(
        core.connect_get_namespaced_pod_portforward, "quiet", "default",
        ports=str(port),
    )  # fmt: skip
    sock = forward.socket(port)
    sock.setblocking(True)
    assert sock.recv(10) == b""  # closed, not hanging
    error = wait_for(lambda: forward.error(port), 5)
    assert f"error forwarding port {port} to pod quiet" in error
    assert "connection refused" in error.lower()


def test_a_pod_that_runs_nothing_keeps_its_canned_log_and_says_so(
    api: KubeAPI, core: Any, runner: str
) -> None:
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "still"},
            "spec": {
                "nodeSelector": {"role": "runner"},
                "containers": [{"name": "main", "image": "nginx:1.27"}],
            },
        },
    )
    wait_for(lambda: _phase(core, "still") == "Running", 15)
    assert "nginx:1.27" in core.read_namespaced_pod_log("still", "default")
    messages = [
        e["message"]
        for e in api.objects("Event", "default")
        if e["involvedObject"]["name"] == "still" and e["reason"] == "DoubleSimulated"
    ]
    assert any(m.startswith("container not run") for m in messages), messages
    assert any(m.startswith("log lines are canned") for m in messages), messages
