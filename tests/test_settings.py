"""The knobs' precedence (marker > CLI > env > ini > default) and validation."""

from __future__ import annotations

import pytest

from pytest_k3s import ClusterSpec
from pytest_k3s.plugin import SETTINGS_KEY
from pytest_k3s.settings import KNOBS
from pytest_k3s.settings import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for knob in KNOBS:
        monkeypatch.delenv(knob.env, raising=False)


def settings(pytester: pytest.Pytester, *args: str) -> Settings:
    return pytester.parseconfigure(*args).stash[SETTINGS_KEY]


def test_defaults(pytester: pytest.Pytester) -> None:
    resolved = settings(pytester)
    assert resolved.spec == ClusterSpec()
    assert resolved.keep_mode == "never"
    assert resolved.sources == {}


def test_each_level_beats_the_ones_below(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(
        "[pytest]\nk3s_agents = 1\nk3s_servers = 3\nk3s_timeout = 30\n"
        "k3s_image = ini/k3s:1\n"
    )
    monkeypatch.setenv("PYTEST_K3S_AGENTS", "2")
    monkeypatch.setenv("PYTEST_K3S_TIMEOUT", "40")
    resolved = settings(pytester, "--k3s-agents=4")
    assert resolved.spec.agents == 4
    assert resolved.spec.timeout == 40
    assert resolved.spec.servers == 3
    assert resolved.spec.image == "ini/k3s:1"
    assert resolved.sources == {
        "agents": "command line",
        "timeout": "environment",
        "servers": "ini file",
        "image": "ini file",
    }


def test_image_and_version_are_one_knob_across_levels(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_K3S_IMAGE", "env/k3s:dev")
    resolved = settings(pytester, "--k3s-version=v1.31.4+k3s1")
    assert resolved.spec.image == "rancher/k3s:v1.31.4-k3s1"
    assert settings(pytester).spec.image == "env/k3s:dev"


def test_keep_from_env_and_flag(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings(pytester, "--k3s-keep").keep_mode == "always"
    assert settings(pytester, "--k3s-keep-on-failure").keep_mode == "on-failure"
    both = settings(pytester, "--k3s-keep", "--k3s-keep-on-failure")
    assert both.keep_mode == "always"
    monkeypatch.setenv("PYTEST_K3S_KEEP_ON_FAILURE", "true")
    assert settings(pytester).keep_mode == "on-failure"
    monkeypatch.setenv("PYTEST_K3S_KEEP", "1")
    assert settings(pytester).keep_mode == "always"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--k3s-agents=two"], {}, "--k3s-agents: 'two' is not a whole number"),
        (["--k3s-servers=0"], {}, "--k3s-servers: 0 is less than 1"),
        (["--k3s-timeout=-1"], {}, "--k3s-timeout: -1.0 is not a positive, finite"),
        (["--k3s-timeout=nan"], {}, "--k3s-timeout: nan is not a positive, finite"),
        ([], {"PYTEST_K3S_TIMEOUT": "inf"}, "PYTEST_K3S_TIMEOUT=inf: inf is not a"),
        (["--k3s-privileged=maybe"], {}, "--k3s-privileged: 'maybe' is not one of"),
        ([], {"PYTEST_K3S_AGENTS": "x"}, "PYTEST_K3S_AGENTS=x: 'x' is not a whole"),
        ([], {"PYTEST_K3S_KEEP": "perhaps"}, "PYTEST_K3S_KEEP=perhaps: 'perhaps'"),
        (["--k3s-version=1.31.x"], {}, "--k3s-version: version '1.31.x' is not"),
        ([], {"PYTEST_K3S_VERSIONS": ","}, "PYTEST_K3S_VERSIONS=,: give one or more"),
        (["--k3s-versions=v1.33,next"], {}, "--k3s-versions: version 'next' is not"),
        (["--k3s-repository=a/b:c"], {}, "--k3s-repository: 'a/b:c' is not an image"),
        (
            ["--k3s-versions=v1.33.1", "--k3s-kubeconfig=k"],
            {},
            "--k3s-versions starts a cluster per k3s version, but --k3s-kubeconfig",
        ),
        (
            ["--k3s-version=v1.31.4", "--k3s-image=x/y:z"],
            {},
            "the command line sets both the k3s image and the k3s version",
        ),
    ],
)
def test_bad_values_are_usage_errors_naming_their_source(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(pytest.UsageError, match=message.replace("(", r"\(")):
        settings(pytester, *args)


def test_bad_ini_value_names_the_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nk3s_agents = many\n")
    with pytest.raises(pytest.UsageError, match="ini k3s_agents: 'many'"):
        settings(pytester)


def test_api_host_and_bind_reach_the_spec(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved = settings(pytester, "--k3s-api-host=172.17.0.1", "--k3s-api-bind=0.0.0.0")
    assert (resolved.spec.api_host, resolved.spec.api_bind) == ("172.17.0.1", "0.0.0.0")
    monkeypatch.setenv("PYTEST_K3S_API_HOST", "docker-host")
    assert settings(pytester).spec.api_host == "docker-host"
    monkeypatch.delenv("PYTEST_K3S_API_HOST")
    pytester.makeini("[pytest]\nk3s_api_bind = 172.17.0.1\n")
    resolved = settings(pytester)
    assert resolved.spec.api_bind == "172.17.0.1"
    assert resolved.spec.api_host is None
    assert resolved.sources["api-bind"] == "ini file"


def test_api_bind_must_be_an_address(pytester: pytest.Pytester) -> None:
    with pytest.raises(
        pytest.UsageError, match="--k3s-api-bind: 'docker' is not an IP"
    ):
        settings(pytester, "--k3s-api-bind=docker")


def test_airgap_images_are_a_comma_separated_list_of_archives(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = pytester.path / "k3s-airgap-images-amd64.tar"
    second = pytester.path / "extra.tar"
    first.write_bytes(b"")
    second.write_bytes(b"")
    monkeypatch.setenv("PYTEST_K3S_AIRGAP_IMAGES", f"{first}, {second}")
    assert settings(pytester).spec.airgap_images == (str(first), str(second))
    with pytest.raises(pytest.UsageError, match=r"'/nope\.tar' is not a file"):
        settings(pytester, "--k3s-airgap-images=/nope.tar")


def test_image_cache_is_on_by_default_and_takes_a_directory_or_off(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings(pytester).spec.image_cache is True
    assert settings(pytester, "--k3s-image-cache=off").spec.image_cache is False
    monkeypatch.setenv("PYTEST_K3S_IMAGE_CACHE", "ci-cache")
    resolved = settings(pytester)
    assert resolved.spec.image_cache == str(pytester.path / "ci-cache")
    assert resolved.sources["image-cache"] == "environment"
    pytester.makeini("[pytest]\nk3s_image_cache = false\n")
    monkeypatch.delenv("PYTEST_K3S_IMAGE_CACHE")
    assert settings(pytester).spec.image_cache is False


def test_the_readme_lists_every_knob_as_help_prints_it() -> None:
    """The README's configuration table, row by row, against the declarations."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = re.findall(
        r"^\| `(--k3s-[^`]+)` \| `(k3s_\w+)` \| `(PYTEST_K3S_\w+)` \|", readme, re.M
    )
    documented = {(option.replace("\\|", "|"), ini, env) for option, ini, env in rows}
    declared = {
        (
            knob.option if knob.flag else f"{knob.option}={knob.metavar}",
            knob.ini,
            knob.env,
        )
        for knob in KNOBS
    }
    assert documented == declared
