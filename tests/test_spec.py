from __future__ import annotations

import pytest

from pytest_k3s import DEFAULT_IMAGE
from pytest_k3s import ClusterSpec
from pytest_k3s import PortMapping
from pytest_k3s import SpecError
from pytest_k3s.spec import disabled_components
from pytest_k3s.spec import image_for_version
from pytest_k3s.spec import version_of_image


def test_defaults_pin_a_real_k3s_image() -> None:
    spec = ClusterSpec()
    assert (spec.servers, spec.agents) == (1, 0)
    assert spec.image == DEFAULT_IMAGE == "rancher/k3s:v1.35.5-k3s1"
    assert spec.k3s_version == "v1.35.5+k3s1"


@pytest.mark.parametrize(
    ("version", "image"),
    [
        ("v1.31.4+k3s1", "rancher/k3s:v1.31.4-k3s1"),
        ("1.31.4", "rancher/k3s:v1.31.4-k3s1"),
        ("v1.30.2-k3s2", "rancher/k3s:v1.30.2-k3s2"),
    ],
)
def test_version_maps_to_the_docker_tag(version: str, image: str) -> None:
    assert image_for_version(version) == image
    spec = ClusterSpec(version=version)
    assert spec.image == image
    assert spec == ClusterSpec(image=image), "version and image forms are one spec"


@pytest.mark.parametrize("version", ["1.31.x", "newest", "v1.31.x+k3s1", ""])
def test_bad_versions_say_what_a_version_looks_like(version: str) -> None:
    with pytest.raises(SpecError, match=r"major\.minor\.patch"):
        ClusterSpec(version=version)


def test_image_and_version_together_conflict() -> None:
    with pytest.raises(SpecError, match="not both"):
        ClusterSpec(image="example/k3s:dev", version="v1.31.4+k3s1")


def test_version_of_a_non_k3s_image_is_unknown() -> None:
    assert version_of_image("example/double:abc") is None
    assert ClusterSpec(image="example/double:abc").k3s_version is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"servers": 0}, "servers must be at least 1"),
        ({"agents": -1}, "agents must be 0 or more"),
        ({"servers": True}, "servers must be a whole number"),
        ({"agents": "2"}, "agents must be a whole number"),
        ({"timeout": 0}, "timeout must be a positive, finite number"),
        ({"timeout": float("nan")}, "timeout must be a positive, finite number"),
        ({"timeout": float("inf")}, "timeout must be a positive, finite number"),
        ({"timeout": "soon"}, "timeout must be a number"),
        ({"privileged": "yes"}, "privileged must be one of auto, privileged"),
        ({"image": "has space"}, "not a valid image reference"),
        ({"server_args": 3}, "must be a string or a list of strings"),
        ({"ports": 3.5}, "ports must be a port or a list of ports"),
        ({"ports": [True]}, "port True is not valid"),
        ({"server_env": ("K3S_TOKEN=mine",)}, "may not set K3S_TOKEN"),
        ({"agent_env": ("K3S_URL=https://x:6443",)}, "may not set K3S_URL"),
        ({"server_env": ("K3S_KUBECONFIG_OUTPUT=/x",)}, "may not set K3S_KUBECONFIG"),
        ({"server_args": ("--token-file=/t",)}, "may not set --token-file"),
        ({"server_args": ("--token=abc",)}, "may not set --token"),
        ({"agent_args": ("--server", "https://x")}, "may not set --server"),
        ({"server_env": ("NOEQUALS",)}, "is not KEY=VALUE"),
        ({"ports": ("http",)}, "port 'http' is not valid"),
        ({"ports": ("70000",)}, "out of range"),
        ({"ports_bind": "everywhere"}, "ports_bind 'everywhere' is not an IP"),
        ({"airgap_images": ("/nonexistent/a.tar",)}, "'/nonexistent/a.tar' is not a"),
    ],
)
def test_invalid_values_fail_when_the_spec_is_made(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        ClusterSpec(**kwargs)  # type: ignore[arg-type]


def test_sequences_become_tuples_so_specs_hash_and_compare() -> None:
    a = ClusterSpec(agents=2, server_args=["--disable=traefik"], ports=["8080:80"])  # type: ignore[arg-type]
    b = ClusterSpec(agents=2, server_args=("--disable=traefik",), ports=("8080:80",))  # type: ignore[arg-type]
    assert a == b
    assert hash(a) == hash(b)
    assert a.digest() == b.digest()
    assert a.ports == (PortMapping(80, "tcp", 8080),)
    assert a.digest() != ClusterSpec(agents=3).digest()


def test_registries_mapping_is_kept_as_canonical_yaml_text() -> None:
    mirrors = {"mirrors": {"docker.io": {"endpoint": ["http://m:5000"]}}}
    spec = ClusterSpec(registries=mirrors)
    assert (
        spec.registries == '{"mirrors": {"docker.io": {"endpoint": ["http://m:5000"]}}}'
    )
    assert spec == ClusterSpec(registries=dict(mirrors))
    assert len({spec, ClusterSpec(registries=dict(mirrors))}) == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("80", PortMapping(80)),
        (30080, PortMapping(30080)),
        ("53/udp", PortMapping(53, "udp")),
        ("8080:80/tcp", PortMapping(80, "tcp", 8080)),
    ],
)
def test_port_mappings_parse(value: str | int, expected: PortMapping) -> None:
    assert PortMapping.parse(value) == expected


def test_disabled_components_reads_every_form_of_disable() -> None:
    args = ["--disable=traefik,servicelb", "--disable", "coredns", "--debug"]
    assert disabled_components(args) == {"traefik", "servicelb", "coredns"}
    assert not ClusterSpec(server_args=("--disable=coredns",)).coredns_enabled
    assert ClusterSpec().coredns_enabled


def test_a_lone_string_or_number_is_one_item() -> None:
    spec = ClusterSpec(
        server_args="--disable=traefik",  # type: ignore[arg-type]
        agent_env="A=1",  # type: ignore[arg-type]
        ports="9999",  # type: ignore[arg-type]
    )
    assert spec.server_args == ("--disable=traefik",)
    assert spec.agent_env == ("A=1",)
    assert spec.ports == (PortMapping(9999),)
    assert ClusterSpec(ports=30080).ports == (PortMapping(30080),)  # type: ignore[arg-type]
    assert ClusterSpec(ports="8080:80/udp").ports == (  # type: ignore[arg-type]
        PortMapping(80, "udp", 8080),
    )


def test_waiting_is_not_part_of_the_clusters_identity() -> None:
    spec = ClusterSpec(agents=1)
    assert spec.digest() == ClusterSpec(agents=1, timeout=30).digest()
    assert spec.digest() == ClusterSpec(agents=1, wait_for_coredns=False).digest()
    assert spec.digest() != ClusterSpec(agents=1, ports=("80",)).digest()  # type: ignore[arg-type]


def test_registry_credentials_stay_out_of_repr() -> None:
    auth = {"configs": {"r:5000": {"auth": {"password": "hunter2"}}}}
    spec = ClusterSpec(registries=auth)
    assert "hunter2" not in repr(spec)
    assert "hunter2" not in spec.describe()
