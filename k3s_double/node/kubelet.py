"""The node's kubelet: registers the Node, heartbeats, pulls images, runs pods.

The one ``Kubelet`` of the double: it runs in every node process and talks
to the API over HTTPS, as a real kubelet does. Given the cluster's client CA
(a node process always is), it runs the pods it can as processes
(:mod:`.containers`), serves their logs, exec and port-forward on 10250
(:mod:`.kubeletserver`) and says so on its Node
(:data:`k3s_double.runnable.RUNS_PROCESSES`). Pods that run nothing go
Running by the :class:`~k3s_double.controllers.nodes.PodLifecycle`
controller, as before.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from k3s_double import runnable
from k3s_double.apiserver.httpd import Upstream
from k3s_double.constants import K3S_VERSION

from . import containers
from . import ctr
from . import pulls
from .identity import Node
from .kubeletserver import KUBELET_PORT
from .kubeletserver import KubeletServer
from .kubeletserver import kubelet_context
from .nodeinfo import node_object
from .nodeports import NodePorts
from .runtime import RETRY_SECONDS
from .runtime import Runtime
from .services import ServiceProxy


HEARTBEAT_SECONDS = 5.0
#: Seconds from registration to the first Ready status (a k3s kubelet takes
#: about this long for its first runtime check and PLEG relist).
READY_DELAY = 0.5


class ApiReports:
    """The puller's failures, sent to the API as this node's kubelet."""

    def __init__(self, api: Upstream, node: str) -> None:
        self.api = api
        self.node = node

    def event(
        self, pod: dict[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        """Record an Event about ``pod`` from this kubelet."""
        containers.post_event(
            self.api, pod, self.node, reason, message, warning=warning
        )

    def waiting(
        self, pod: dict[str, Any], container: str, reason: str, message: str
    ) -> None:
        """Patch the pod's current status: ``container`` waits for ``reason``."""
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        try:
            status, data = self.api.call(
                "GET", path, b"", {"Accept": "application/json"}
            )
            if status != 200:
                return
            current = json.loads(data)
            patch = pulls.waiting_status(current, container, reason, message)
            self.api.call(
                "PATCH",
                f"{path}/status",
                json.dumps({"status": patch}).encode(),
                {
                    "Content-Type": "application/merge-patch+json",
                    "Accept": "application/json",
                },
            )
        except OSError:
            return


class Kubelet:
    """Registers the Node, logs what kubelet and flannel log, heartbeats."""

    def __init__(
        self,
        rt: Runtime,
        node: Node,
        api: Upstream,
        kubelet_args: Sequence[str],
        containerd: ctr.Containerd | None = None,
        pause_image: str = pulls.PAUSE_IMAGE,
        *,
        client_ca: bytes = b"",
        data_dir: str = "",
    ) -> None:
        self.rt = rt
        #: The client CA the kubelet port checks callers against; without it
        #: the kubelet runs no pods (the controllers simulate them all).
        self.client_ca = client_ca
        self.data_dir = data_dir
        self.runtime: containers.ContainerRuntime | None = None
        self.node = node
        self.api = api
        self.kubelet_args = list(kubelet_args)
        self.containerd = containerd
        self.pause_image = pause_image

    def start(self, after: threading.Event | None = None) -> None:
        """Run in a daemon thread; register only once ``after`` is set."""
        threading.Thread(
            target=self.rt.guard(lambda: self._run(after)), daemon=True
        ).start()

    def _call(self, method: str, path: str, body: bytes, ctype: str) -> int:
        status, data = self.api.call(
            method, path, body, {"Content-Type": ctype, "Accept": "application/json"}
        )
        if status >= 300 and status != 409:
            self.rt.log("debug", f"{method} {path}: {status} {data[:200]!r}")
        return status

    def _run(self, after: threading.Event | None) -> None:
        import json

        log = self.rt.log
        args = [
            "--address=0.0.0.0",
            "--anonymous-auth=false",
            f"--hostname-override={self.node.name}",
            f"--node-ip={self.node.ip}",
            *(
                ["--node-labels=" + ",".join(self.node.extra_labels)]
                if self.node.extra_labels
                else []
            ),
            *(f"--{a.lstrip('-')}" for a in self.kubelet_args),
        ]
        log.info("Running kubelet " + " ".join(args))
        if self.rt.never_ready:
            return
        if after is not None:
            while not after.wait(1):
                pass
        obj = node_object(
            self.node.name,
            internal_ip=self.node.ip,
            labels=self.node.labels,
            taints=self.node.taints,
            git_version=K3S_VERSION,
        )
        # The kubelet registers with the images containerd already holds, so
        # the control plane never takes a preloaded image for a missing one.
        status_part = obj.get("status")
        if isinstance(status_part, dict):
            status_part["images"] = self._images()
        meta = obj.get("metadata")
        if self.client_ca and isinstance(meta, dict):
            meta.setdefault("annotations", {})[runnable.RUNS_PROCESSES] = "true"
        body = json.dumps(obj).encode()
        log.klog(
            "kubelet_node_status.go:75",
            "Attempting to register node",
            node=self.node.name,
        )
        while True:
            try:
                status = self._call("POST", "/api/v1/nodes", body, "application/json")
            except OSError as exc:
                status = 0
                log.error(f"Unable to register node with API server: {exc}")
            if status in (200, 201, 409):
                break
            self.rt.sleep(RETRY_SECONDS)
        log.klog(
            "kubelet_node_status.go:78",
            "Successfully registered node",
            node=self.node.name,
        )
        log.burst()
        log.klog("kube.go:139", "Waiting 10m0s for node controller to sync")
        while True:
            try:
                if self._call("GET", "/api/v1/nodes", b"", "application/json") == 200:
                    break
            except OSError:
                pass
            self.rt.sleep(RETRY_SECONDS)
        log.klog("kube.go:146", "Node controller sync successful")
        NodePorts(self.rt, self.node.name, self.api).start()
        if self.client_ca:
            # Its pods' processes reach Services by name and ClusterIP.
            ServiceProxy(self.rt, self.node.ip, self.api).start()
            self._start_runtime()
        if self.containerd is not None:
            puller = pulls.ImagePuller(
                self.containerd,
                self._pods,
                self._report_images,
                self.pause_image,
                ApiReports(self.api, self.node.name),
            )
            threading.Thread(
                target=self.rt.guard(lambda: self._pull(puller)), daemon=True
            ).start()
        self._heartbeat()

    def _start_runtime(self) -> None:
        """Run the node's pods and serve the kubelet port."""
        from .pki import new_ca
        from .pki import serving_cert

        containerd = self.containerd
        runtime = containers.ContainerRuntime(
            self.api,
            self.node.name,
            self.node.ip,
            containerd.has if containerd is not None else (lambda _: True),
            pod_dns=True,
        )
        self.runtime = runtime
        # k3s' kubelet serves a certificate of its own CA; kube-apiserver
        # does not verify it (k3s sets no --kubelet-certificate-authority).
        pair = serving_cert(
            new_ca(f"k3s-kubelet-serving-ca@{self.node.name}"),
            [self.node.ip, self.node.name, "127.0.0.1", "localhost"],
        )
        files = pair.save(
            os.path.join(self.data_dir or "/tmp", "agent"), "serving-kubelet"
        )
        try:
            server = KubeletServer(
                KUBELET_PORT,
                kubelet_context(*files, self.client_ca),
                runtime,
                self.rt.log,
            )
        except OSError as exc:
            self.rt.log.error(f"Failed to listen on the kubelet port: {exc}")
        else:
            server.start()
            self.rt.log.klog(
                "server.go:163", "Starting to listen", address="0.0.0.0",
                port=str(KUBELET_PORT),
            )  # fmt: skip

        def sync() -> None:
            while True:
                pods = self._pods()
                if pods is not None:
                    runtime.sync(pods)
                self.rt.sleep(containers.SYNC_SECONDS)

        threading.Thread(target=self.rt.guard(sync), daemon=True).start()

    def _images(self) -> list[dict[str, Any]]:
        return pulls.node_images(self.containerd)

    def _pods(self) -> list[dict[str, Any]] | None:
        import json
        import urllib.parse

        selector = urllib.parse.quote(f"spec.nodeName={self.node.name}")
        try:
            status, data = self.api.call(
                "GET",
                f"/api/v1/pods?fieldSelector={selector}",
                b"",
                {"Accept": "application/json"},
            )
        except OSError:
            return None
        if status != 200:
            return None
        items: list[dict[str, Any]] = json.loads(data).get("items") or []
        return items

    def _report_images(self, images: list[dict[str, Any]]) -> bool:
        import json

        body = json.dumps({"status": {"images": images}}).encode()
        path = f"/api/v1/nodes/{self.node.name}/status"
        try:
            status = self._call(
                "PATCH", path, body, "application/strategic-merge-patch+json"
            )
        except OSError:
            return False
        return status < 300

    def _pull(self, puller: pulls.ImagePuller) -> None:
        """Pull what the node's pods need, in a loop of its own."""
        while True:
            puller.sync()
            self.rt.sleep(pulls.POLL_SECONDS)

    def _heartbeat(self) -> None:
        """Report Ready once the runtime checks pass, then heartbeat.

        The Node was registered NotReady; the first status update, after
        :data:`READY_DELAY` (the kubelet's first runtime status check and
        PLEG relist), turns it Ready; later ones come every
        :data:`HEARTBEAT_SECONDS`.
        """
        import json

        path = f"/api/v1/nodes/{self.node.name}/status"
        delay, first = READY_DELAY, True
        while True:
            self.rt.sleep(delay)
            delay = HEARTBEAT_SECONDS
            now = datetime.datetime.now(datetime.timezone.utc)
            stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
            ready: dict[str, str] = {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": stamp,
            }
            if first:
                ready["lastTransitionTime"] = stamp
            patch = {
                "status": {
                    "conditions": [ready],
                    # What the node's containerd holds, as a kubelet reports
                    # it: the API then knows which images a node has.
                    "images": self._images(),
                }
            }
            try:
                status = self._call(
                    "PATCH",
                    path,
                    json.dumps(patch).encode(),
                    "application/strategic-merge-patch+json",
                )
            except OSError as exc:
                self.rt.log.error(f"Error updating node status, will retry: {exc}")
                status = 0
            if status >= 300 or status == 0:
                if status:
                    self.rt.log.error(
                        f"Error updating node status, will retry: status {status}"
                    )
                if first:
                    delay = READY_DELAY
            else:
                first = False
