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

import sys

from k3s_double.build import ensure_service_image


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
    return ensure_service_image(
        REPOSITORY,
        _DOCKERFILE,
        {"config.yml": _CONFIG, "docker-entrypoint.sh": _ENTRYPOINT},
    )


if __name__ == "__main__":
    sys.stdout.write(ensure_registry_image() + "\n")
