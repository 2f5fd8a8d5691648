"""Deprecated home of the k3s node double; it is the top-level ``k3s_double`` now.

Only ``python -m tests.k3s_double`` is kept, for one release, so scripts that
build the image that way keep working while they move to ``python -m
k3s_double``. Nothing else is re-exported: import from ``k3s_double``.
"""
