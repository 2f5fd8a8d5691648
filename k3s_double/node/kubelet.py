"""The node's kubelet: registers the Node, heartbeats, pulls images.

The one ``Kubelet`` of the double: it runs in every node process and talks
to the API over HTTPS, as a real kubelet does. (Pods going Running is the
:class:`~k3s_double.controllers.nodes.PodLifecycle` controller's part.)
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Sequence
from typing import Any

from k3s_double.apiserver.httpd import Upstream
from k3s_double.constants import K3S_VERSION

from . import ctr
from . import pulls
from .identity import Node
from .nodeinfo import node_object
from .nodeports import NodePorts
from .runtime import RETRY_SECONDS
from .runtime import Runtime


HEARTBEAT_SECONDS = 5.0
#: Seconds from registration to the first Ready status (a k3s kubelet takes
#: about this long for its first runtime check and PLEG relist).
READY_DELAY = 0.5


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
    ) -> None:
        self.rt = rt
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
        if self.containerd is not None:
            puller = pulls.ImagePuller(
                self.containerd, self._pods, self._report_images, self.pause_image
            )
            threading.Thread(
                target=self.rt.guard(lambda: self._pull(puller)), daemon=True
            ).start()
        self._heartbeat()

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
