"""``python -m k3s_double``: build or reuse the image, print its reference."""

from __future__ import annotations

import sys

from .build import ensure_image


def main() -> int:
    """Print the image reference as the last line of output."""
    try:
        ref = ensure_image()
    except Exception as exc:  # report any failure as one line and a status
        sys.stderr.write(f"k3s double: {exc}\n")
        return 1
    print(ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
