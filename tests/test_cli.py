"""The command line (``pytest-k3s up``, ``kubeconfig``, ``down``), and neighbours.

The command line runs in subprocesses, as people and scripts run it, against
the k3s node double. The module's tests share one cluster that ``up --reuse``
made (none of them changes it); the round trip from ``up`` to ``down`` and
the load balancer's internal kubeconfig get clusters of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from fnmatch import fnmatch
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s import NoEngineError
from pytest_k3s import SpecError
from pytest_k3s import labels
from pytest_k3s.cli import _parser
from pytest_k3s.cli import _spec
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.engine.no_engine import NoEngine
from pytest_k3s.lifecycle.start import StartOptions
from pytest_k3s.lifecycle.start import check_cluster_name
from pytest_k3s.lifecycle.versions import CHANNEL_URL_ENV
from pytest_k3s.run.shell import kubeconfig_file
from pytest_k3s.settings import Settings
from pytest_k3s.spec import DEFAULT_IMAGE


KUBECTL = Path("/usr/bin/kubectl")


def cli(*args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command line (``python -m pytest_k3s`` unless ``script``)."""
    command = [script] if script else [sys.executable, "-m", "pytest_k3s"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=300, check=False
    )


def ok(*args: str) -> str:
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def script() -> str:
    """The installed ``pytest-k3s`` console script."""
    where = os.pathsep.join(
        [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    )
    found = shutil.which("pytest-k3s", path=where) or shutil.which("pytest-k3s")
    assert found, "pytest-k3s is not installed: pip install -e ."
    return found


def cluster_objects(client: docker.DockerClient, name: str) -> list[str]:
    """The cluster's containers and networks, as listed."""
    selector: dict[str, Any] = {"label": f"{labels.CLUSTER}={name}"}
    return [c["Id"] for c in client.api.containers(all=True, filters=selector)] + [
        n["Id"] for n in client.api.networks(filters=selector)
    ]


def nodes_from_the_network(
    client: docker.DockerClient, image: str, network: str, kubeconfig: Path
) -> str:
    """``kubectl get nodes`` in a container on ``network``, with ``kubeconfig``.

    kubectl is this machine's (a static binary), mounted read-only into the
    double's image; the container is removed with its anonymous volumes.
    """
    container = client.containers.create(
        image,
        entrypoint=["/kubectl"],
        command=["--kubeconfig", "/kubeconfig", "get", "nodes", "-o", "name"],
        network=network,
        volumes={
            str(KUBECTL.resolve()): {"bind": "/kubectl", "mode": "ro"},
            str(kubeconfig): {"bind": "/kubeconfig", "mode": "ro"},
        },
    )
    try:
        container.start()
        status = container.wait(timeout=120)
        output = container.logs().decode()
    finally:
        container.remove(force=True, v=True)
    assert status["StatusCode"] == 0, output
    return output


@pytest.fixture(scope="module")
def cache(
    tmp_path_factory: pytest.TempPathFactory, double_image: str, balancer_image: str
) -> Iterator[Path]:
    """This module's reuse directory (and the images the plugin would use).

    The command lines and the inner pytest run inherit it; what it still
    holds at the end is removed.
    """
    path = tmp_path_factory.mktemp("cli-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(path))
        patch.setenv("PYTEST_K3S_IMAGE", double_image)
        patch.setenv("PYTEST_K3S_LOAD_BALANCER_IMAGE", balancer_image)
        yield path
        ok("sweep", "--reusable")


@pytest.fixture(scope="module")
def shared(cache: Path) -> Iterator[str]:
    """A cluster ``eval "$(pytest-k3s up --reuse)"`` made, for the shell's kubectl.

    Yields its name; the tests that use it leave it as it was.
    """
    shell = (
        'eval "$(pytest-k3s up --reuse)" && printf "%s\\n" "$KUBECONFIG" '
        "&& kubectl get nodes -o name"
    )
    where = str(Path(script()).parent)
    done = subprocess.run(
        ["bash", "-c", shell],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PATH": where + os.pathsep + os.environ["PATH"]},
    )
    assert done.returncode == 0, done.stderr
    kubeconfig, node = done.stdout.splitlines()
    name = node.removeprefix("node/").removesuffix("-server-0")
    assert kubeconfig == str(cache / "pytest-k3s" / "reuse" / f"{name}.kubeconfig.yaml")
    yield name
    ok("down", name)


# the command line, through subprocesses ----------------------------------------


def test_up_kubeconfig_kubectl_down_leaves_nothing(
    cache: Path, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    name = "k3s-cli-round-trip"
    up = cli("up", "--name", name)
    assert up.returncode == 0, up.stderr
    reuse = cache / "pytest-k3s" / "reuse"
    assert up.stdout == f"export KUBECONFIG={reuse / name}.kubeconfig.yaml\n"
    assert f"starting k3s cluster {name}" in up.stderr
    assert f"stays until 'pytest-k3s down {name}'" in up.stderr

    printed = ok("kubeconfig", name)
    assert printed == (reuse / f"{name}.kubeconfig.yaml").read_text()
    (tmp_path / "config").write_text(printed)
    nodes = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(tmp_path / "config"), "get", "nodes"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert nodes.splitlines()[1].split()[:2] == [f"{name}-server-0", "Ready"]

    listed = [line for line in ok("list").splitlines() if line.startswith(name)]
    assert len(listed) == 1
    assert "reusable, free" in listed[0], "up's lease went with it"
    assert name not in ok("sweep"), "the sweep of leftovers leaves it alone"
    assert ok("kubeconfig", name, "--internal")
    assert (reuse / f"{name}.internal-kubeconfig.yaml").is_file()
    assert cluster_objects(docker_client, name)

    assert ok("down", name) == f"removed {name}\n"
    assert cluster_objects(docker_client, name) == []
    assert sorted(p.name for p in reuse.iterdir() if p.name.startswith(name)) == []
    again = cli("down", name)
    assert again.returncode == 1
    assert again.stderr.startswith(f"error: no k3s cluster named {name} ")


def test_up_reuse_twice_gives_one_cluster_that_pytest_reuse_attaches_to(
    shared: str, docker_client: docker.DockerClient, pytester: pytest.Pytester
) -> None:
    containers = cluster_objects(docker_client, shared)
    again = cli("up", "--reuse")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("\n") == 1
    assert again.stdout.startswith("export KUBECONFIG=")
    assert again.stdout.rstrip().endswith(f"/{shared}.kubeconfig.yaml")
    assert f"reusing k3s cluster {shared} (attached in " in again.stderr
    assert cluster_objects(docker_client, shared) == containers, "nothing started"

    record = pytester.path / "record"
    pytester.makepyfile(
        f"""
        import pathlib

        def test_record(k3s_cluster):
            pathlib.Path({str(record)!r}).write_text(k3s_cluster.name)
        """
    )
    run = pytester.runpytest_subprocess("-p", "no:randomly", "--k3s-reuse")
    run.assert_outcomes(passed=1)
    assert record.read_text() == shared
    run.stdout.fnmatch_lines([f"k3s cluster {shared} (*) reused (attached in *s)"])
    assert cluster_objects(docker_client, shared) == containers


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["kubeconfig", "k3s-cli-nope"], "no k3s cluster named k3s-cli-nope *"),
        (["kubeconfig", "k3s-cli-nope", "--internal"], "no k3s cluster named *"),
        (["down", "k3s-cli-nope"], "no k3s cluster named k3s-cli-nope *list*"),
        (
            ["up", "--image", "example/k3s:1", "--version", "v1.31.4+k3s1"],
            "the command line gives both an image (example/k3s:1) and a k3s "
            "version (v1.31.4+k3s1); give one of them",
        ),
        (["up", "--name", "{shared}"], "a k3s cluster named {shared} exists *down*"),
        (
            ["up", "--reuse", "--name", "{shared}", "--agents", "1"],
            "the k3s cluster {shared} was made from another spec *",
        ),
        (["up", "--name", "Not_A_Name"], "cluster name 'Not_A_Name' is not valid*"),
    ],
    ids=[
        "unknown",
        "unknown-internal",
        "down-unknown",
        "image-and-version",
        "name-taken",
        "other-spec",
        "bad-name",
    ],
)
def test_errors_name_the_thing_and_exit_1(
    shared: str, docker_client: docker.DockerClient, args: list[str], message: str
) -> None:
    containers = cluster_objects(docker_client, shared)
    done = cli(*(arg.format(shared=shared) for arg in args))
    assert done.returncode == 1
    assert done.stdout == ""
    last = done.stderr.splitlines()[-1]
    assert fnmatch(last, "error: " + message.format(shared=shared)), last
    assert cluster_objects(docker_client, shared) == containers, "it is untouched"


def test_the_console_script_is_the_module_s_program() -> None:
    (entry,) = entry_points(group="console_scripts", name="pytest-k3s")
    assert entry.value == "pytest_k3s.cli:main"
    for command, prog in (
        ([script()], "pytest-k3s"),
        ([sys.executable, "-m", "pytest_k3s"], "python -m pytest_k3s"),
    ):
        done = subprocess.run(
            [*command, "up", "--help"], capture_output=True, text=True, check=True
        )
        assert done.stdout.startswith(f"usage: {prog} up [-h] [--servers N]")
        assert "KUBECONFIG" in done.stdout


# kubeconfigs for neighbours ---------------------------------------------------


def test_a_container_on_the_cluster_network_lists_nodes_with_the_internal_kubeconfig(
    shared: str,
    cache: Path,
    docker_client: docker.DockerClient,
    double_image: str,
    tmp_path: Path,
) -> None:
    printed = ok("kubeconfig", shared, "--internal")
    server = yaml.safe_load(printed)["clusters"][0]["cluster"]["server"]
    assert server == f"https://{shared}-server-0:6443"
    kept = cache / "pytest-k3s" / "reuse" / f"{shared}.internal-kubeconfig.yaml"
    assert kept.read_text() == printed
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    (tmp_path / "internal.yaml").write_text(printed)
    found = nodes_from_the_network(
        docker_client, double_image, shared, tmp_path / "internal.yaml"
    )
    assert found.split() == [f"node/{shared}-server-0"]


def test_internal_kubeconfig_names_the_load_balancer_and_goes_with_the_cluster(
    double_image: str,
    balancer_image: str,
    docker_client: docker.DockerClient,
    docker_engine: DockerEngine,
    tmp_path: Path,
) -> None:
    spec = ClusterSpec(
        image=double_image,
        load_balancer=True,
        load_balancer_image=balancer_image,
        wait_for_coredns=False,
    )
    with K3sCluster.start(spec, kubeconfig_dir=tmp_path, engine=docker_engine) as c:
        assert c.network == c.name
        assert docker_client.networks.get(c.network).name == c.name
        internal = c.internal_kubeconfig()
        assert internal.parent == c.kubeconfig_path.parent == tmp_path
        assert stat.S_IMODE(internal.stat().st_mode) == 0o600
        config = yaml.safe_load(internal.read_text())
        assert config["clusters"][0]["cluster"]["server"] == (
            f"https://{c.name}-serverlb:6443"
        )
        assert c.internal_kubeconfig() == internal
        found = nodes_from_the_network(docker_client, double_image, c.network, internal)
        assert found.split() == [f"node/{c.name}-server-0"]
    assert not internal.exists()
    assert not c.kubeconfig_path.exists()
    assert list(tmp_path.iterdir()) == []


# pure rules ---------------------------------------------------------------------


def test_an_existing_cluster_has_no_network_and_no_internal_kubeconfig(
    tmp_path: Path,
) -> None:
    existing = K3sCluster(
        name="prod",
        spec=ClusterSpec(),
        engine=NoEngine("prod"),
        nodes=[],
        kubeconfig_path=tmp_path / "prod.kubeconfig.yaml",
        owned=False,
    )
    with pytest.raises(NoEngineError, match=r"cluster prod .* no Docker network"):
        existing.network  # noqa: B018
    with pytest.raises(NoEngineError, match="so it has no internal kubeconfig;"):
        existing.internal_kubeconfig()
    assert list(tmp_path.iterdir()) == []


def up_options(*args: str) -> Any:
    return _parser("pytest-k3s").parse_args(["up", *args])


def test_up_s_spec_takes_the_plugin_s_image_variables() -> None:
    assert _spec(up_options(), {}) == ClusterSpec()
    assert _spec(up_options(), {}).image == DEFAULT_IMAGE
    environ = {
        "PYTEST_K3S_IMAGE": "example/k3s:env",
        "PYTEST_K3S_LOAD_BALANCER_IMAGE": "example/lb:1",
    }
    spec = _spec(up_options("--agents", "2"), environ)
    assert (spec.image, spec.agents, spec.servers) == ("example/k3s:env", 2, 1)
    assert spec.load_balancer_image == "example/lb:1"
    versioned = _spec(up_options(), {"PYTEST_K3S_VERSION": "v1.31.4+k3s1"})
    assert versioned.image == "rancher/k3s:v1.31.4-k3s1"
    given = _spec(up_options("--version", "1.30.2"), environ)
    assert given.image == "rancher/k3s:v1.30.2-k3s1", "the command line wins"
    both = {"PYTEST_K3S_IMAGE": "a/b:1", "PYTEST_K3S_VERSION": "v1.31.4+k3s1"}
    with pytest.raises(SpecError, match="the environment sets both the k3s image"):
        _spec(up_options(), both)
    with pytest.raises(SpecError, match="servers must be at least 1"):
        _spec(up_options("--servers", "0"), {})
    with pytest.raises(SpecError, match="gives both an image"):
        _spec(up_options("--image", "a/b:1", "--version", "v1.31.4"), {})


def test_up_s_spec_is_the_one_a_run_in_this_environment_uses() -> None:
    # So `pytest --k3s-reuse` in the same shell attaches to what `up` made.
    environ = {
        "PYTEST_K3S_AGENTS": "2",
        "PYTEST_K3S_SERVERS": "3",
        "PYTEST_K3S_LOAD_BALANCER": "on",
        "PYTEST_K3S_TIMEOUT": "90",
    }
    spec = _spec(up_options(), environ)
    assert (spec.servers, spec.agents, spec.load_balancer) == (3, 2, True)
    assert spec.digest() == Settings.from_environment(environ).spec.digest()
    assert _spec(up_options("--agents", "0"), environ).agents == 0
    with pytest.raises(SpecError, match="PYTEST_K3S_AGENTS=x: 'x' is not a whole"):
        _spec(up_options(), {"PYTEST_K3S_AGENTS": "x"})


def test_up_s_versions_are_the_plugin_s(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mirror = {"PYTEST_K3S_REPOSITORY": "mirror.example/rancher/k3s"}
    full = _spec(up_options("--version", "v1.31.4+k3s2"), mirror)
    assert full.image == "mirror.example/rancher/k3s:v1.31.4-k3s2"
    # A partial version is resolved as a run resolves it: here from a fresh
    # cached channel table (the channel server itself does not answer).
    url = "http://127.0.0.1:9/v1-release/channels"
    monkeypatch.setenv(CHANNEL_URL_ENV, url)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    table = {"stable": "v1.34.2+k3s1", "v1.33": "v1.33.5+k3s1"}
    cached = {"url": url, "fetched": time.time(), "channels": table}
    (tmp_path / "pytest-k3s").mkdir()
    (tmp_path / "pytest-k3s" / "channels.json").write_text(json.dumps(cached))
    said: list[str] = []
    line = _spec(up_options("--version", "v1.33"), mirror, progress=said.append)
    assert line.image == "mirror.example/rancher/k3s:v1.33.5-k3s1"
    assert line.version is None
    assert said == ["k3s version v1.33 → v1.33.5+k3s1 (k3s channel server)"]
    stable = _spec(up_options(), {"PYTEST_K3S_VERSION": "stable"})
    assert stable.image == "rancher/k3s:v1.34.2-k3s1"
    with pytest.raises(SpecError, match=r"no release for channel 'v1\.29'"):
        _spec(up_options("--version", "1.29"), {})


@pytest.mark.parametrize("name", ["k3s-dev", "a", "dev1", "x" * 50])
def test_cluster_names_that_are_dns_labels_pass(name: str) -> None:
    assert check_cluster_name(name) == name
    assert StartOptions(name=name).name == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Dev", "not valid"),
        ("k3s_dev", "not valid"),
        ("-dev", "not valid"),
        ("dev-", "not valid"),
        ("", "not valid"),
        ("dev.one", "not valid"),
        ("x" * 51, "51 characters long; give at most 50"),
    ],
)
def test_other_cluster_names_are_refused_saying_why(name: str, why: str) -> None:
    with pytest.raises(SpecError, match=why):
        check_cluster_name(name)
    with pytest.raises(SpecError, match=why):
        StartOptions(name=name)


def test_where_the_command_line_finds_a_cluster_s_kubeconfig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    reusable = {labels.REUSE: "true", labels.STATE_DIR: "/elsewhere"}
    assert kubeconfig_file("k3s-a", reusable) == (
        tmp_path / "pytest-k3s" / "reuse" / "k3s-a.kubeconfig.yaml"
    )
    of_a_run = {labels.STATE_DIR: "/tmp/pytest-k3s-run-1"}
    assert kubeconfig_file("k3s-b", of_a_run) == Path(
        "/tmp/pytest-k3s-run-1/k3s-b.kubeconfig.yaml"
    )
    assert kubeconfig_file("k3s-c", {labels.RUN: "x"}) is None
