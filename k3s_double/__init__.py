"""The k3s node double: a locally built image that behaves like ``rancher/k3s``.

Real k3s cannot be pulled on our machines, so the plugin's integration tests run
against this image instead. From outside the container it honours the same
contract (CLI flags and env, files, log lines, ports, TLS and SANs, token join,
node registration, a stateful Kubernetes API). Where real k3s is strict, the
double is strict too: it must never let a test pass that real k3s would fail.

Layout (one concern per module):

- ``api.py``: ``KubeAPI``, a stateful, in-memory Kubernetes API (no HTTP, no
  TLS), plus the controllers that make objects come alive.
- ``k3s.py``: the ``/bin/k3s`` entrypoint (``server``/``agent``), flags, TLS,
  token join, node registration, log lines, fault injection.
- ``build.py`` / ``__main__.py``: builds the image; ``python -m k3s_double``
  prints its reference as the last line.
"""
