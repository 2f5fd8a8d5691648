"""The k3s marker: merging nearest-first, image/version as one knob, bad arguments."""

from __future__ import annotations

import pytest

from pytest_k3s import DEFAULT_IMAGE
from pytest_k3s import ClusterSpec
from pytest_k3s.marker import MARKER_ARGS
from pytest_k3s.marker import MARKER_HELP
from pytest_k3s.marker import spec_for_markers


def test_markers_apply_farthest_first_and_override_the_base() -> None:
    base = ClusterSpec(image="cli/k3s:1", agents=1)
    module = pytest.mark.k3s(agents=2, server_args=["--disable=traefik"]).mark
    test = pytest.mark.k3s(servers=3).mark
    spec = spec_for_markers(base, [test, module], "t.py::test_x")
    assert (spec.servers, spec.agents) == (3, 2)
    assert spec.server_args == ("--disable=traefik",)
    assert spec.image == "cli/k3s:1"


def test_marker_version_replaces_a_configured_image() -> None:
    base = ClusterSpec(image="cli/k3s:1")
    mark = pytest.mark.k3s(version="v1.30.2+k3s1").mark
    assert spec_for_markers(base, [mark], "t").image == "rancher/k3s:v1.30.2-k3s1"
    near = pytest.mark.k3s(image="near/k3s:1").mark
    far = pytest.mark.k3s(version="v1.30.2+k3s1").mark
    assert spec_for_markers(base, [near, far], "t").image == "near/k3s:1"
    assert spec_for_markers(ClusterSpec(), [], "t").image == DEFAULT_IMAGE


@pytest.mark.parametrize(
    ("mark", "message"),
    [
        (pytest.mark.k3s(agent=2), "unknown argument 'agent'; valid arguments are"),
        (pytest.mark.k3s(2), "keyword arguments only"),
        (pytest.mark.k3s(servers=0), "servers must be at least 1"),
        (pytest.mark.k3s(agents="x"), "agents must be a whole number"),
    ],
)
def test_bad_marker_arguments_name_the_test(
    mark: pytest.MarkDecorator, message: str
) -> None:
    with pytest.raises(pytest.UsageError, match=f"^t.py::test_x: .*{message}"):
        spec_for_markers(ClusterSpec(), [mark.mark], "t.py::test_x")


def test_args_is_a_deprecated_name_for_server_args() -> None:
    mark = pytest.mark.k3s(args=["--disable=traefik"]).mark
    with pytest.warns(DeprecationWarning, match=r"t: .*args=.*use server_args="):
        spec = spec_for_markers(ClusterSpec(), [mark], "t")
    assert spec.server_args == ("--disable=traefik",)


def test_a_deprecated_argument_warns_once_at_collection(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_d="""
        import pytest

        @pytest.mark.k3s(args=["--disable=traefik"])
        def test_x(k3s_cluster): pass
        """
    )
    result = pytester.runpytest("--collect-only", "-W", "always::DeprecationWarning")
    warned = [line for line in result.outlines if "DeprecationWarning" in line]
    assert len(warned) == 1, result.outlines
    assert "pytest_k3s/plugin.py" in warned[0]


def test_help_lists_every_argument() -> None:
    for name in MARKER_ARGS:
        assert f"{name}=" in MARKER_HELP
