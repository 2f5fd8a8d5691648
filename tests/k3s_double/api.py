"""INTERFACE STUB -- to be replaced by the real implementation.

The contract between the API half of the double and the node half:

    @dataclass
    class Response:
        status: int
        body: bytes = b""                       # a complete JSON document (or text)
        content_type: str = "application/json"
        stream: Iterator[bytes] | None = None   # watch: one JSON event + b"\\n" per item;
                                                # the HTTP layer sends it chunked and
                                                # closes when the iterator ends

    class KubeAPI:
        def __init__(self, *, git_version: str = "v1.35.5+k3s1") -> None: ...
        def handle(self, method: str, target: str, headers: Mapping[str, str],
                   body: bytes, *, user: str) -> Response:
            '''target is the raw request target: path plus query string.
            headers' keys are lower-case. user is the authenticated user name
            (the HTTP layer authenticates; KubeAPI does not).'''
        def start_controllers(self) -> None: ...   # background daemon threads, idempotent
        def stop(self) -> None: ...

    def node_object(name: str, *, internal_ip: str, labels: Mapping[str, str],
                    taints: Sequence[Mapping[str, str]] = (),
                    git_version: str = "v1.35.5+k3s1") -> dict[str, object]:
        '''A complete v1 Node (status, conditions Ready=True, addresses,
        NodeSystemInfo, capacity/allocatable, daemonEndpoints) that validates
        against the kubernetes client models.  The node half POSTs it to
        /api/v1/nodes and then heartbeats with a strategic-merge PATCH to
        /api/v1/nodes/<name>/status that refreshes the Ready condition's
        lastHeartbeatTime.'''
"""
