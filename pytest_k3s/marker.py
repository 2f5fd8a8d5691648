"""The ``k3s`` marker: its arguments, and how markers turn into a cluster spec.

Markers on the test, its class and its module combine argument by argument,
the nearest winning; the result is applied to the run's default spec (from
the ``--k3s-*`` settings). Arguments are checked when tests are collected, so
a bad one is a usage error naming the test before any cluster starts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest

from pytest_k3s.errors import SpecError
from pytest_k3s.spec import DEFAULT_IMAGE
from pytest_k3s.spec import ClusterSpec


MARKER = "k3s"

#: Marker arguments, mapped to ClusterSpec fields.
MARKER_ARGS = {
    "servers": "servers",
    "agents": "agents",
    "image": "image",
    "version": "version",
    "server_args": "server_args",
    "agent_args": "agent_args",
    "server_env": "server_env",
    "agent_env": "agent_env",
    "ports": "ports",
    "ports_bind": "ports_bind",
    "registries": "registries",
    "timeout": "timeout",
    "wait_for_coredns": "wait_for_coredns",
    "load_balancer": "load_balancer",
    "registry": "registry",
}
#: Old argument names still accepted, with a deprecation warning.
DEPRECATED_ARGS = {"args": "server_args"}

MARKER_HELP = (
    "k3s(servers=1, agents=0, image=None, version=None (or a list: once "
    "per version), server_args=(), "
    "agent_args=(), server_env=(), agent_env=(), ports=(), ports_bind='127.0.0.1', "
    "registries=None, timeout=None, wait_for_coredns=True, load_balancer=None, "
    "registry=False): "
    "the k3s cluster the k3s_cluster "
    "fixture hands this test; nearer markers (test > class > module) override "
    "farther ones argument by argument"
)

_LISTS = ("server_args", "agent_args", "server_env", "agent_env")


def spec_for_markers(
    base: ClusterSpec,
    markers: Iterable[pytest.Mark],
    where: str,
    image_of: Callable[[str], str] | None = None,
) -> ClusterSpec:
    """Apply ``k3s`` markers (nearest first, as pytest yields them) to ``base``.

    A ``version`` list (a matrix, :func:`marker_versions`) leaves the image
    to the test's parameter.

    :param image_of: the image of a version as the run resolves it (the
        run's repository, partial versions made full); without it, a version
        names a ``rancher/k3s`` image
    :raises pytest.UsageError: a marker argument is unknown or invalid; the
        message names ``where`` (the test or module)
    """
    changes: dict[str, Any] = {}
    for mark in reversed(list(markers)):
        if mark.args:
            raise pytest.UsageError(
                f"{where}: @pytest.mark.k3s takes keyword arguments only, "
                f"e.g. k3s(agents=2); got positional {mark.args!r}"
            )
        _check_one_image(mark, where)
        for key, value in mark.kwargs.items():
            field_name = MARKER_ARGS.get(key) or _deprecated(key, where)
            if field_name in ("image", "version"):
                changes.pop("image", None)
                changes.pop("version", None)
            if field_name in _LISTS:
                value = (value,) if isinstance(value, str) else value
            changes[field_name] = value
    version = changes.get("version")
    if isinstance(version, list | tuple):
        del changes["version"]
    elif version is not None and image_of is not None:
        try:
            changes["image"] = image_of(str(version))
        except SpecError as exc:
            raise pytest.UsageError(f"{where}: @pytest.mark.k3s: {exc}") from exc
        del changes["version"]
    if not changes:
        return base
    if "image" in changes or "version" in changes:
        base = replace(base, image=DEFAULT_IMAGE)
    try:
        return replace(base, **changes)
    except (SpecError, TypeError) as exc:
        raise pytest.UsageError(f"{where}: @pytest.mark.k3s: {exc}") from exc


def marker_versions(
    markers: Iterable[pytest.Mark], where: str
) -> tuple[str, ...] | None:
    """What the nearest marker says of the test's k3s version.

    :returns: the versions of a ``version=[...]`` list (run once each); an
        empty tuple when ``image`` or one ``version`` pins the test; None
        when no marker says
    :raises pytest.UsageError: the list is empty or holds a non-string
    """
    for mark in markers:  # nearest first: the first to say decides
        _check_one_image(mark, where)
        if "version" in mark.kwargs:
            version = mark.kwargs["version"]
            if not isinstance(version, list | tuple):
                return ()
            if not version or not all(isinstance(v, str) and v for v in version):
                raise pytest.UsageError(
                    f"{where}: @pytest.mark.k3s(version=[...]) needs one or more "
                    f"version strings, got {version!r}"
                )
            return tuple(dict.fromkeys(version))
        if "image" in mark.kwargs:
            return ()
    return None


def _check_one_image(mark: pytest.Mark, where: str) -> None:
    """Refuse a marker that gives both an image and a version."""
    if "image" in mark.kwargs and "version" in mark.kwargs:
        raise pytest.UsageError(
            f"{where}: @pytest.mark.k3s takes image or version, not both "
            f"(image={mark.kwargs['image']!r}, version={mark.kwargs['version']!r})"
        )


def _deprecated(key: str, where: str) -> str:
    """Return the field an old argument name stands for, or raise for an unknown one."""
    field_name = DEPRECATED_ARGS.get(key)
    if field_name is None:
        valid = ", ".join(sorted(MARKER_ARGS))
        raise pytest.UsageError(
            f"{where}: @pytest.mark.k3s got an unknown argument {key!r}; "
            f"valid arguments are {valid}"
        )
    warnings.warn(
        f"{where}: @pytest.mark.k3s({key}=...) is deprecated; "
        f"use {field_name}=... (same meaning)",
        DeprecationWarning,
        stacklevel=3,
    )
    return field_name
