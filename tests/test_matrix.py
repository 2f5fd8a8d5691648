"""A k3s version matrix in one run: ids, selection, one cluster per version.

The double plays a given k3s release when built with ``K3S_DOUBLE_VERSION``
(:func:`k3s_double.build.ensure_release_image`), tagged as rancher/k3s tags
its releases in a repository of ours, which ``--k3s-repository`` points at:
so the matrix runs real clusters that answer with their version.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import docker
import pytest

from k3s_double.build import RELEASES_REPOSITORY
from k3s_double.build import ensure_release_image
from tests.test_versions import ChannelServer


OLD, NEW = "v1.33.5+k3s1", "v1.34.2+k3s1"

RECORDING_TESTS = """
import json, os, pathlib
import pytest
from kubernetes.client import CoreV1Api, VersionApi

def record(request, cluster):
    nodes = CoreV1Api(cluster.api_client).list_node().items
    pathlib.Path(os.environ["RECORDS"], request.node.name + ".json").write_text(
        json.dumps({
            "cluster": cluster.name,
            "image": cluster.spec.image,
            "version": VersionApi(cluster.api_client).get_code().git_version,
            "kubelets": [n.status.node_info.kubelet_version for n in nodes],
        })
    )

def test_default(request, k3s_cluster):
    record(request, k3s_cluster)

@pytest.mark.k3s(agents=1)
def test_with_an_agent(request, k3s_cluster):
    record(request, k3s_cluster)

def test_session(request, k3s_session_cluster):
    record(request, k3s_session_cluster)

@pytest.mark.k3s(version="v1.33")
def test_pinned(request, k3s_cluster):
    record(request, k3s_cluster)

def test_no_cluster():
    pass
"""


@pytest.fixture(scope="module")
def releases(double_image: str) -> list[str]:
    """The double as k3s OLD and NEW, in :data:`RELEASES_REPOSITORY`."""
    return [ensure_release_image(double_image, v) for v in (OLD, NEW)]


@pytest.fixture
def channels() -> Iterator[ChannelServer]:
    server = ChannelServer({"stable": OLD, "latest": NEW, "v1.33": OLD, "v1.34": NEW})
    yield server
    server.close()


@pytest.mark.docker
def test_a_two_version_matrix_runs_one_cluster_per_topology_and_version(
    pytester: pytest.Pytester,
    releases: list[str],
    channels: ChannelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = pytester.mkdir("records")
    monkeypatch.setenv("RECORDS", str(records))
    monkeypatch.setenv("PYTEST_K3S_CHANNEL_URL", channels.url)
    pytester.makepyfile(test_matrix=RECORDING_TESTS)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:randomly",
        "-n",
        "2",
        "-v",
        f"--k3s-repository={RELEASES_REPOSITORY}",
        f"--k3s-versions={OLD},v1.34",
        timeout=500,
    )
    # 3 cluster tests x 2 versions, the pinned one once, the plain one once.
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(
        [
            f"k3s versions (2, *): {OLD}, v1.34 → {NEW} (k3s channel server)",
        ]
    )
    for version in (OLD, NEW):
        result.stdout.fnmatch_lines(
            [f"*PASSED test_matrix.py::test_default?k3s-{version}?*"]
        )
    assert channels.requests == 1, "the controller resolves; workers receive"
    assert "test_no_cluster[" not in result.stdout.str()
    assert "test_pinned[" not in result.stdout.str()

    seen = {path.stem: json.loads(path.read_text()) for path in records.glob("*.json")}
    assert len(seen) == 7, sorted(seen)
    for name, record in seen.items():
        version = OLD if (OLD in name or name == "test_pinned") else NEW
        assert record["version"] == version, (name, record)
        assert set(record["kubelets"]) == {version}, (name, record)
        assert record["image"] == f"{RELEASES_REPOSITORY}:{version.replace('+', '-')}"
    by_version: dict[str, set[str]] = {}
    for name, record in seen.items():
        topology = "agent" if "agent" in name else "plain"
        by_version.setdefault(f"{record['version']} {topology}", set()).add(
            record["cluster"]
        )
    # One cluster per (topology, version), shared by both workers: the
    # default, the session and the pinned tests of OLD share one.
    assert all(len(names) == 1 for names in by_version.values()), by_version
    assert len(by_version) == 4, by_version


@pytest.mark.docker
def test_k_selects_one_versions_tests(
    pytester: pytest.Pytester,
    releases: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = pytester.mkdir("records")
    monkeypatch.setenv("RECORDS", str(records))
    pytester.makepyfile(test_matrix=RECORDING_TESTS)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:randomly",
        f"--k3s-repository={RELEASES_REPOSITORY}",
        f"--k3s-versions={OLD},{NEW}",
        "-k",
        "v1.34 and default",
        timeout=300,
    )
    result.assert_outcomes(passed=1)
    (record,) = (json.loads(p.read_text()) for p in records.glob("*.json"))
    assert record["version"] == NEW


@pytest.mark.docker
def test_offline_a_partial_version_takes_the_newest_local_image(
    pytester: pytest.Pytester,
    releases: list[str],
    monkeypatch: pytest.MonkeyPatch,
    docker_client: docker.DockerClient,
) -> None:
    monkeypatch.setenv("PYTEST_K3S_CHANNEL_URL", "http://127.0.0.1:9/channels")
    pytester.makepyfile(test_matrix=RECORDING_TESTS)
    result = pytester.runpytest_subprocess(
        f"--k3s-repository={RELEASES_REPOSITORY}",
        "--k3s-versions=v1.34,1.33",
        "--collect-only",
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            f"k3s versions (2, *): v1.34 → {NEW} (newest local image), "
            f"1.33 → {OLD} (newest local image)",
            "k3s version 'v1.34': the channel server http://127.0.0.1:9/channels "
            f"could not be read (*); using {NEW}, the newest matching "
            f"{RELEASES_REPOSITORY} image already on the engine",
            f"*<Function test_default?k3s-{NEW}?>",
        ]
    )
    missing = pytester.runpytest_subprocess(
        f"--k3s-repository={RELEASES_REPOSITORY}",
        "--k3s-versions=v1.29",
        "--collect-only",
    )
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(
        [
            "*--k3s-versions: k3s version 'v1.29' could not be resolved: the "
            "channel server http://127.0.0.1:9/channels could not be read (*), "
            f"and the engine has no {RELEASES_REPOSITORY} image of v1.29.x*"
        ]
    )


def test_tests_that_use_no_cluster_run_once_and_markers_narrow_the_matrix(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_ids="""
        import pytest

        def test_plain(k3s_cluster): pass

        def test_client(k3s_client): pass

        def test_module(k3s_module_cluster): pass

        def test_none(tmp_path): pass

        @pytest.mark.k3s(version=["v1.32.1+k3s1", "v1.33.1"])
        def test_listed(k3s_cluster): pass

        @pytest.mark.k3s(image="example/k3s:custom")
        def test_pinned_image(k3s_cluster): pass

        @pytest.mark.k3s(version=["v1.32.1", "v1.32.1+k3s1"])
        def test_same_twice(k3s_namespace): pass
        """
    )
    result = pytester.runpytest(
        "--collect-only", "-q", "--k3s-versions=v1.34.2+k3s1,v1.35.1+k3s1"
    )
    ids = [line for line in result.outlines if "::" in line]
    # pytest groups the tests by version (the parameter's scope is the session).
    assert ids.index("test_ids.py::test_module[k3s-v1.34.2+k3s1]") < ids.index(
        "test_ids.py::test_plain[k3s-v1.35.1+k3s1]"
    )
    assert sorted(ids) == sorted(
        [
            "test_ids.py::test_plain[k3s-v1.34.2+k3s1]",
            "test_ids.py::test_plain[k3s-v1.35.1+k3s1]",
            "test_ids.py::test_client[k3s-v1.34.2+k3s1]",
            "test_ids.py::test_client[k3s-v1.35.1+k3s1]",
            "test_ids.py::test_module[k3s-v1.34.2+k3s1]",
            "test_ids.py::test_module[k3s-v1.35.1+k3s1]",
            "test_ids.py::test_none",
            "test_ids.py::test_listed[k3s-v1.32.1+k3s1]",
            "test_ids.py::test_listed[k3s-v1.33.1+k3s1]",
            "test_ids.py::test_pinned_image",
            "test_ids.py::test_same_twice[k3s-v1.32.1+k3s1]",
        ]
    )
    # Without a matrix, ids are as they always were.
    plain = pytester.runpytest("--collect-only", "-q")
    assert "test_ids.py::test_plain" in plain.outlines
    assert "test_ids.py::test_listed[k3s-v1.32.1+k3s1]" in plain.outlines


def test_a_bad_version_list_in_a_marker_names_the_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.k3s(version=[])
        def test_empty(k3s_cluster): pass
        """
    )
    result = pytester.runpytest("--collect-only")
    result.stdout.re_match_lines(
        [r"test_bad.py::test_empty: @pytest.mark.k3s\(version=\[\.\.\.\]\) needs one"]
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_the_resolved_version_is_a_report_property(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def k3s_cluster(_k3s_version):  # no cluster: the property is the point
            return _k3s_version
        """
    )
    pytester.makepyfile(test_p="def test_x(k3s_cluster): pass")
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest(f"--junitxml={junit}", "--k3s-versions=v1.33.1")
    result.assert_outcomes(passed=1)
    assert '<property name="k3s_version" value="v1.33.1+k3s1"' in junit.read_text()


def test_an_existing_cluster_run_refuses_a_matrix(pytester: pytest.Pytester) -> None:
    config = pytester.path / "kubeconfig"
    config.write_text("apiVersion: v1\n")
    result = pytester.runpytest(f"--k3s-kubeconfig={config}", "--k3s-versions=v1.33.1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--k3s-versions starts a cluster per k3s version*"])


def test_an_existing_cluster_run_skips_version_lists_and_resolves_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing answers here: a resolution would fail the collection.
    monkeypatch.setenv("PYTEST_K3S_CHANNEL_URL", "http://127.0.0.1:9/channels")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    pytester.makepyfile(
        test_e="""
        import pytest

        @pytest.mark.k3s(version=["v1.33", "v1.34"])
        def test_listed(k3s_cluster): pass

        @pytest.mark.k3s(version="v1.33")
        def test_partial(k3s_cluster): pass
        """
    )
    config = pytester.path / "kubeconfig"
    config.write_text("apiVersion: v1\\n")
    result = pytester.runpytest(f"--k3s-kubeconfig={config}", "-rs")
    # The list is skipped; the single version reaches the (here unusable)
    # existing cluster's check, unresolved: no channel server was asked.
    result.assert_outcomes(skipped=1, errors=1)
    result.stdout.fnmatch_lines(["*kubeconfig has no current-context*"])
    result.stdout.fnmatch_lines(
        ["*asks for k3s versions v1.33, v1.34, but this run uses one existing*"]
    )
    assert "channel server" not in result.stdout.str()


def test_image_and_version_in_one_marker_is_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_both="""
        import pytest

        @pytest.mark.k3s(image="x/k3s:1", version=["v1.33.1"])
        def test_x(k3s_cluster): pass
        """
    )
    result = pytester.runpytest("--collect-only")
    result.stdout.fnmatch_lines(["*takes image or version, not both*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED
