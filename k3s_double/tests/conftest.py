"""Fixtures serving a ``KubeAPI`` over plain HTTP on 127.0.0.1, without Docker."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from k3s_double.apiserver.httpd import send_response
from k3s_double.apiserver.server import KubeAPI
from k3s_double.controllers import Controllers
from k3s_double.node.ctr import Containerd
from k3s_double.node.nodeinfo import node_object
from k3s_double.node.pulls import ImagePuller


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: KubeAPI

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.api.handle(
            self.command,
            self.path,
            headers,
            body,
            user="system:admin",
            groups=("system:masters",),  # the admin kubeconfig's certificate
        )
        send_response(self, response)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


#: Colon-separated kubectl binaries the kubectl tests run with.
KUBECTLS_ENV = "PYTEST_K3S_TEST_KUBECTLS"
#: Where a development machine keeps a current kubectl and helm (CI names
#: its kubectls in ``PYTEST_K3S_TEST_KUBECTLS`` and puts helm on ``PATH``).
TOOLS = "/tmp/tools"
CURRENT_KUBECTL = f"{TOOLS}/kubectl"


def kubectls() -> list[str]:
    """The kubectls to test with: ``PYTEST_K3S_TEST_KUBECTLS``, else those found.

    Without the variable: ``kubectl`` on ``PATH`` and :data:`CURRENT_KUBECTL`
    when it is there (each binary once). A named binary that is missing fails
    its tests rather than being skipped.
    """
    named = os.environ.get(KUBECTLS_ENV, "")
    if named:
        return [path for path in named.split(":") if path]
    unique: dict[str, str] = {}
    for path in (shutil.which("kubectl"), CURRENT_KUBECTL):
        if path and os.access(path, os.X_OK):
            unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


def helm_binary() -> str | None:
    """helm on ``PATH``, else the one in :data:`TOOLS`, else None."""
    found = shutil.which("helm")
    if found:
        return found
    fallback = f"{TOOLS}/helm"
    return fallback if os.access(fallback, os.X_OK) else None


#: A Node with this label has no kubelet pulling its pods' images.
NO_KUBELET = "k3s-double.test/no-kubelet"


class InProcessKubelets:
    """Every node's kubelet image pulls, in process, as ``Kubelet`` runs them.

    The nodes the tests register have no node process behind them; this
    thread gives each (but those labelled :data:`NO_KUBELET`) a containerd
    store under ``root`` and an :class:`ImagePuller` against ``kube``.
    """

    def __init__(self, kube: KubeAPI, root: Path) -> None:
        self.kube = kube
        self.root = root
        self.pullers: dict[str, ImagePuller] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def containerd(self, node: str) -> Containerd:
        return self.pullers[node].containerd

    def _puller(self, node: str) -> ImagePuller:
        def pods() -> list[dict[str, Any]]:
            return [
                p for p in self.kube.objects("Pod") if p["spec"].get("nodeName") == node
            ]

        def report(images: list[dict[str, Any]]) -> bool:
            def change(obj: dict[str, Any]) -> None:
                obj.setdefault("status", {})["images"] = images

            return self.kube.mutate("Node", "", node, change) is not None

        return ImagePuller(Containerd(str(self.root / node)), pods, report)

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            for obj in self.kube.objects("Node"):
                name = obj["metadata"]["name"]
                if NO_KUBELET in (obj["metadata"].get("labels") or {}):
                    continue
                if name not in self.pullers:
                    self.pullers[name] = self._puller(name)
                self.pullers[name].sync()


@pytest.fixture
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPI]:
    kube = KubeAPI(git_version="v1.35.5+k3s1")
    kubelets = InProcessKubelets(kube, tmp_path_factory.mktemp("nodes"))
    kube.kubelets = kubelets  # type: ignore[attr-defined]
    yield kube
    kubelets.stop.set()
    kubelets.thread.join(5)
    kube.stop()


def serve(kube: KubeAPI) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = type("Handler", (_Handler,), {"api": kube})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def url(api: KubeAPI) -> Iterator[str]:
    server, address = serve(api)
    yield address
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(url: str) -> Iterator[k8s.ApiClient]:
    configuration = k8s.Configuration(host=url)
    with k8s.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
def core(client: k8s.ApiClient) -> Any:
    return k8s.CoreV1Api(client)


@pytest.fixture
def apps(client: k8s.ApiClient) -> Any:
    return k8s.AppsV1Api(client)


@pytest.fixture
def kubeconfig(url: str, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default", "cluster": {"server": url}}],
        "users": [{"name": "default", "user": {}}],
        "contexts": [
            {"name": "default", "context": {"cluster": "default", "user": "default"}}
        ],
        "current-context": "default",
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def control_loop(api: KubeAPI) -> Controllers:
    """The controllers, not yet running (``node`` starts them)."""
    return Controllers(api.storage)


@pytest.fixture
def node(api: KubeAPI, core: Any, control_loop: Controllers) -> str:
    """Register a Ready server node and start the controllers."""
    body = node_object(
        "k3d-test-server-0",
        internal_ip="172.18.0.2",
        labels={"node-role.kubernetes.io/control-plane": "true"},
        ready=True,  # as after its kubelet's first status report
    )
    created = core.create_node(body)
    assert created.status.node_info.kubelet_version == "v1.35.5+k3s1"
    api.on_stop(control_loop.stop)
    control_loop.start()
    wait_for(lambda: api.find("ServiceAccount", "default", "default"))
    return "k3d-test-server-0"


def wait_for(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        time.sleep(interval)
