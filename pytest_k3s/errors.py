"""The errors pytest-k3s raises, one hierarchy under :class:`K3sError`.

Every message names the thing that went wrong (the option, the image, the
container) and the next step; errors raised because of another exception chain
it as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Sequence


class K3sError(Exception):
    """Base class of every error raised by pytest-k3s."""


class SpecError(K3sError, ValueError):
    """A cluster specification, option or marker argument is invalid."""


class DockerUnavailableError(K3sError):
    """No Docker engine answers at the address that was tried."""


class ImageUnavailableError(K3sError):
    """The node image is neither present locally nor pullable."""


class VersionUnresolvedError(SpecError):
    """A partial k3s version (``v1.33``, ``stable``) could not be made a full one."""


class NameConflictError(K3sError):
    """A container or network with the cluster's name already exists."""


class ClusterStartError(K3sError):
    """A cluster did not become usable; carries the failing node's last log lines.

    :param message: what went wrong
    :param node: the container name of the node at fault, if one is
    :param logs: that node's last log lines
    """

    def __init__(
        self, message: str, *, node: str | None = None, logs: Sequence[str] = ()
    ) -> None:
        self.node = node
        self.logs = tuple(logs)
        if self.logs:
            tail = "\n".join(f"    {line}" for line in self.logs)
            message = f"{message}\n  last log lines of {node}:\n{tail}"
        super().__init__(message)


class ClusterTimeoutError(ClusterStartError):
    """A readiness layer did not pass before the start-up deadline."""


class ClusterCommandError(K3sError):
    """A command run against the cluster (kubectl, ctr) failed."""


class NoEngineError(K3sError):
    """An operation needs the cluster's containers, and it has none (it is existing)."""


class UnsuitableClusterError(K3sError):
    """An existing cluster cannot give what a test asks for (the test is skipped)."""


class WaitTimeoutError(K3sError):
    """An object did not reach the state waited for in time."""


class BudgetSpent(K3sError):
    """The time collecting a failing test's state may take is over."""


class ApiUnreachable(K3sError):
    """A cluster's API server did not answer at all (no HTTP status).

    Raised from the error of the request (refused, timed out, TLS), which
    is its ``__cause__``.
    """


class StreamError(K3sError):
    """An exec or a port-forward could not be set up or finish; the message says why."""


class RegistryMirrorWarning(UserWarning):
    """The registry mirror could not be used; nodes pull from the registries.

    A warning, not an error: containerd falls back to the registry itself,
    so the mirror costs speed, never a test.
    """
