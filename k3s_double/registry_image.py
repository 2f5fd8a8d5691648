"""Build (or reuse) a registry image that runs like the official ``registry:2``.

pytest-k3s runs a pull-through registry mirror, and a registry for users' own
images, from the official ``registry`` image, which cannot be pulled on our
machines; our tests use this one instead: Debian's ``docker-registry``
package (CNCF Distribution 2.8.2, the code of ``registry:2.8.x``) on the
double's base, with the official image's contract: the binary as
``/bin/registry``, its default configuration at
``/etc/docker/registry/config.yml`` (storage in ``/var/lib/registry``,
``:5000``, no auth), ``REGISTRY_*`` variables overriding it (so
``REGISTRY_PROXY_REMOTEURL`` turns on pull-through mode), and its
entrypoint. It is the real registry, so its access log (one ``response
completed`` line per request) counts what clients fetch.

``python -m k3s_double.registry_image`` prints the reference last.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

from k3s_double.build import _have
from k3s_double.build import _progress
from k3s_double.build import base_image


REPOSITORY = "pytest-k3s-registry"

_DOCKERFILE = """\
FROM {base}
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      docker-registry ca-certificates >/dev/null \\
 && rm -rf /var/lib/apt/lists/* \\
 && ln -s /usr/bin/docker-registry /bin/registry \\
 && mkdir -p /var/lib/registry
COPY config.yml /etc/docker/registry/config.yml
COPY docker-entrypoint.sh /entrypoint.sh
VOLUME /var/lib/registry
EXPOSE 5000
ENTRYPOINT ["/entrypoint.sh"]
CMD ["/etc/docker/registry/config.yml"]
"""

#: The official image's configuration (distribution/distribution-library-image).
_CONFIG = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""

#: The official image's entrypoint.
_ENTRYPOINT = """\
#!/bin/sh
set -e
case "$1" in
    *.yaml|*.yml) set -- registry serve "$@" ;;
    serve|garbage-collect|help|-*) set -- registry "$@" ;;
esac
exec "$@"
"""


def ensure_registry_image() -> str:
    """Build the image unless it exists already; return its reference."""
    import docker

    client = docker.from_env(timeout=600)
    try:
        base = base_image(client)
        dockerfile = _DOCKERFILE.format(base=base)
        source = dockerfile + _CONFIG + _ENTRYPOINT
        ref = f"{REPOSITORY}:{hashlib.sha256(source.encode()).hexdigest()[:16]}"
        if _have(client, ref):
            return ref
        _progress(f"building {ref} from {base}")
        with tempfile.TemporaryDirectory(prefix="k3s-registry-build-") as tmp:
            Path(tmp, "Dockerfile").write_text(dockerfile)
            Path(tmp, "config.yml").write_text(_CONFIG)
            entrypoint = Path(tmp, "docker-entrypoint.sh")
            entrypoint.write_text(_ENTRYPOINT)
            entrypoint.chmod(0o755)
            for event in client.api.build(
                path=tmp, tag=ref, rm=True, forcerm=True, decode=True, pull=False
            ):
                if "error" in event:
                    raise RuntimeError(f"building {ref} failed: {event['error']}")
        return ref
    finally:
        client.close()


if __name__ == "__main__":
    sys.stdout.write(ensure_registry_image() + "\n")
