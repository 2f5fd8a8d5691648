"""The k3s node double: a locally built image that behaves like ``rancher/k3s``.

Real k3s cannot be pulled on our machines, so the plugin's integration tests run
against this image instead. From outside the container it honours the same
contract (CLI flags and env, files, log lines, ports, TLS and SANs, token join,
node registration, a stateful Kubernetes API). Where real k3s is strict, the
double is strict too: it must never let a test pass that real k3s would fail.
See ``README.md`` next to this file.

Three packages, imported in one direction only (``node`` -> ``controllers``
-> ``apiserver``; two leaf modules, ``constants`` and ``imagerefs``, are
shared by all): see ``README.md`` for one line per module.

- ``node/``: the node process (``/bin/k3s``, ``/bin/ctr``): flags, PKI, the
  token join, containerd and ``ctr``, image pulls and OCI content, the
  kubelet, ``k3s server`` and ``k3s agent``;
- ``apiserver/``: the stateful Kubernetes API (HTTPS listener, routing,
  storage, discovery, schemas, validation, admission, patches, selectors,
  watches, CRDs and custom resources);
- ``controllers/``: what makes objects come alive, in the spirit of KWOK;
- ``build.py`` / ``__main__.py``: build the image; ``python -m k3s_double``
  prints its reference as the last line;
- ``tests/``: the double's own tests (never copied into the image).
"""

from __future__ import annotations
