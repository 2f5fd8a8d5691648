"""The k3s node double: a locally built image that behaves like ``rancher/k3s``.

Real k3s cannot be pulled on our machines, so the plugin's integration tests run
against this image instead. From outside the container it honours the same
contract (CLI flags and env, files, log lines, ports, TLS and SANs, token join,
node registration, a stateful Kubernetes API). Where real k3s is strict, the
double is strict too: it must never let a test pass that real k3s would fail.
See ``README.md`` next to this file.

Modules, one concern each:

The node (``/bin/k3s`` and ``/bin/ctr``):

- ``k3s.py``: the entrypoint (``server``/``agent``): TLS files, token join,
  node registration and heartbeats, log lines, fault injection;
- ``flags.py``: the command line and ``K3S_*`` env, parsed as urfave/cli does;
- ``pki.py``: CAs, certificates and join tokens shaped like k3s';
- ``join.py``: the token join protocol, both ends;
- ``httpd.py``: the HTTPS listener on 6443 and the nodes' HTTPS client;
- ``ctr.py``: the containerd double (its log, CRI-style pulls) and ``ctr
  images import``/``ls``/``export``;
- ``oci.py``: the synthesized image content of pulls and the OCI layout
  ``ctr images export`` writes;
- ``pulls.py``: the kubelet's image pulls for its node's pods (sandbox image,
  pull policies) and the node's ``status.images``.

The Kubernetes API, in the order a request goes through it:

- ``api.py``: ``KubeAPI``, the API with its bootstrap objects and controllers;
- ``routing.py``: endpoints, path splitting, body and patch decoding (no
  strategic merge patch for custom resources: 415);
- ``registry.py``: the kinds one API serves, built-ins plus established CRDs;
- ``subresources.py``: the ``log`` and ``scale`` subresources;
- ``storage.py``: reads and writes with the API server's semantics
  (resourceVersions, preconditions, generations);
- ``deletion.py``: DELETE: preconditions, grace, finalizers, propagation;
- ``crds.py``: CustomResourceDefinition defaulting and validation, and the
  kinds a CRD serves;
- ``customresources.py``: the storage strategy of custom resources (status
  subresource, generations, scale paths, strict field validation);
- ``schemas.py``: structural schemas: pruning, ``default:``, validation;
- ``admission.py``: namespace lifecycle, service accounts, tolerations,
  priorities, IP and node port allocation;
- ``validation.py``: field validation with the API server's messages;
- ``watch.py``: watch event streams;
- ``response.py``: the ``Response`` every layer answers with;
- ``store.py``: the object store, the resourceVersion counter, watchers;
- ``resources.py``: the table of kinds and their defaulting;
- ``selectors.py``, ``patches.py``: label/field selectors, the patch formats;
- ``discovery.py``: discovery, OpenAPI and ``Table`` documents for kubectl;
- ``errors.py``: ``Status`` errors with the API server's codes and wording;
- ``bootstrap.py``: the objects a fresh k3s server holds;
- ``nodeinfo.py``: the Node object a k3s kubelet registers;
- ``controllers/``: what makes objects come alive (node lifecycle, kubelet,
  scheduler, CRDs, namespaces, garbage collector, ReplicaSets and
  Deployments, Jobs, servicelb), one module per family behind one
  ``Reconciler`` base.

Shared and tooling:

- ``constants.py``: the k3s version, Go's boolean spellings, ``GOARCH``;
- ``build.py`` / ``__main__.py``: build the image; ``python -m k3s_double``
  prints its reference as the last line;
- ``tests/``: the double's own tests (never copied into the image).
"""
