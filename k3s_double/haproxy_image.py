"""Build (or reuse) a load balancer image that runs like the official ``haproxy``.

pytest-k3s puts HAProxy in front of a cluster's servers; its default image,
``haproxy:<version>-alpine``, cannot be pulled on our machines, so our tests
use this one: Debian's ``haproxy`` package on the double's base, with the
official image's contract (an entrypoint that turns arguments starting with
``-`` into ``haproxy -W -db ...``, master-worker mode in the foreground, so
SIGUSR2 reloads; the configuration directory ``/usr/local/etc/haproxy``; the
unprivileged user ``haproxy``). It is real HAProxy, so health checks, TLS
checks, redispatch and reloads behave as they do for users.

``python -m k3s_double.haproxy_image`` prints the reference last.
"""

from __future__ import annotations

import sys

from k3s_double.build import ensure_service_image


REPOSITORY = "pytest-k3s-haproxy"

_DOCKERFILE = """\
FROM {base}
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      haproxy >/dev/null \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /usr/local/etc/haproxy /run/haproxy \\
 && chown haproxy:haproxy /run/haproxy
COPY docker-entrypoint.sh /usr/local/bin/
STOPSIGNAL SIGUSR1
USER haproxy
WORKDIR /var/lib/haproxy
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
"""

#: What the official image's entrypoint does (docker-library/haproxy).
_ENTRYPOINT = """\
#!/bin/sh
set -e
if [ "${1#-}" != "$1" ]; then
    set -- haproxy "$@"
fi
if [ "$1" = 'haproxy' ]; then
    shift
    set -- haproxy -W -db "$@"
fi
exec "$@"
"""


def ensure_load_balancer_image() -> str:
    """Build the image unless it exists already; return its reference."""
    return ensure_service_image(
        REPOSITORY, _DOCKERFILE, {"docker-entrypoint.sh": _ENTRYPOINT}
    )


if __name__ == "__main__":
    sys.stdout.write(ensure_load_balancer_image() + "\n")
