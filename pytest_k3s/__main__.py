"""``python -m pytest_k3s``: the ``pytest-k3s`` command line (:mod:`pytest_k3s.cli`)."""

from __future__ import annotations

import sys

from pytest_k3s.cli import main


__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main(prog="python -m pytest_k3s"))
