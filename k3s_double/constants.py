"""Values more than one module of the double must agree on.

- ``K3S_VERSION``: the k3s release the double claims to be. It shows in the
  ``/version`` document, the OpenAPI info, each Node's kubelet version and
  ``osImage``, and the ``Starting k3s`` log line, and it decides what differs
  between releases (:mod:`k3s_double.releases`). It is ``DEFAULT_VERSION``,
  the release pytest-k3s' default image (``DEFAULT_VERSION`` in
  ``pytest_k3s.spec``) names and the image's
  ``org.opencontainers.image.version`` label, unless the node's environment
  sets ``K3S_DOUBLE_VERSION`` (a test's knob: an image built ``FROM`` the
  double with that ``ENV`` plays an older k3s).
- ``GO_TRUE`` / ``GO_FALSE``: the spellings Go's ``strconv.ParseBool``
  accepts. k3s parses boolean flags and env vars with it, and the API server
  parses boolean query parameters (``watch``, ``timestamps``) with it.
- :func:`go_arch`: the machine's architecture in Go's ``GOARCH`` spelling.
"""

from __future__ import annotations

import os
import platform

from k3s_double.releases import release


DEFAULT_VERSION = "v1.35.5+k3s1"
K3S_VERSION = os.environ.get("K3S_DOUBLE_VERSION") or DEFAULT_VERSION
release(K3S_VERSION)  # a knob set wrong fails at start, not later

GO_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
GO_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def go_arch() -> str:
    """Return the architecture as Go's ``runtime.GOARCH`` names it.

    k3s reports ``runtime.GOARCH`` (in ``/version``, the node labels and
    NodeSystemInfo, and the ``Starting k3s`` log line), and Go spells every
    architecture in lower case. ``platform.machine()`` is lower case on Linux
    already, but lower-casing first makes that hold wherever the double runs;
    names Go shares with ``uname`` (``s390x``, ``ppc64le``, ``riscv64``) pass
    through.
    """
    machine = platform.machine().lower()
    return _GOARCH.get(machine, machine)
