"""``python -m tests.k3s_double``: deprecated spelling of ``python -m k3s_double``."""

from __future__ import annotations

import sys

from k3s_double.__main__ import main


if __name__ == "__main__":
    # stderr, so callers that take the image reference from the last line of
    # stdout keep working unchanged.
    sys.stderr.write(
        "k3s double: 'python -m tests.k3s_double' is deprecated; "
        "use 'python -m k3s_double'\n"
    )
    sys.exit(main())
