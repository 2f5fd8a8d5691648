"""The plugin's knobs: declared once, resolved once, with one precedence rule.

Every knob has a ``--k3s-<name>`` option, a ``k3s_<name>`` ini key and a
``PYTEST_K3S_<NAME>`` environment variable. The first of these that is set
wins, in the order

    ``k3s`` marker  >  command line  >  environment  >  ini file  >  default

(markers, parsed in :mod:`pytest_k3s.marker`, set topology, image and
start-up settings per test). ``image``
and ``version`` are one knob: at the level that sets either, setting both is
an error.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pytest_k3s.errors import SpecError
from pytest_k3s.run.state import KeepMode
from pytest_k3s.spec import DEFAULT_IMAGE
from pytest_k3s.spec import DEFAULT_KEEP_FOR
from pytest_k3s.spec import DEFAULT_LOAD_BALANCER_IMAGE
from pytest_k3s.spec import DEFAULT_REGISTRY_IMAGE
from pytest_k3s.spec import DEFAULT_REUSE_FOR
from pytest_k3s.spec import K3S_REPOSITORY
from pytest_k3s.spec import PRIVILEGE_MODES
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import RegistryMirror
from pytest_k3s.spec import image_for_version
from pytest_k3s.spec import is_partial_version


#: Where failure bundles go in CI runs (``CI=true``), unless told otherwise:
#: relative to the directory pytest was started in.
CI_DIRECTORY = "pytest-k3s-artifacts"


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise ValueError(f"{value} is less than {minimum}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{value} is not a positive, finite number of seconds")
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Parse a duration: seconds (``90``), or a number with s, m, h or d (``24h``)."""
    stripped = text.strip().lower()
    unit = _UNITS.get(stripped[-1:], 0)
    try:
        value = float(stripped[:-1] if unit else stripped) * (unit or 1)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a duration (seconds, or e.g. 90m, 24h, 7d)"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a positive, finite duration")
    return value


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def _cache(text: str) -> bool | str:
    """``--k3s-image-cache``: a directory, or a boolean (on: the default one)."""
    try:
        return _flag(text)
    except ValueError:
        return text.strip()


def _load_balancer(text: str) -> bool | None:
    """``--k3s-load-balancer``: on, off, or auto (with more than one server)."""
    if text.strip().lower() == "auto":
        return None
    return _flag(text)


def _directory(text: str) -> str | bool:
    """``--k3s-artifacts``: a directory, on (the default one), or off.

    On is ``on``, ``true``, ``yes`` or ``1``; off is ``off``, ``false``,
    ``no`` or ``0``.
    """
    if not text.strip():
        raise ValueError("give a directory, on or off")
    try:
        return _flag(text)
    except ValueError:
        return text.strip()


def _privilege(text: str) -> str:
    if text not in PRIVILEGE_MODES:
        raise ValueError(f"{text!r} is not one of {', '.join(PRIVILEGE_MODES)}")
    return text


def _address(text: str) -> str:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address (e.g. 0.0.0.0)") from None
    return text.strip()


def _version(text: str) -> str:
    """A full k3s version, a release line (``v1.33``), ``stable`` or ``latest``."""
    if not is_partial_version(text):
        try:
            image_for_version(text)
        except SpecError as exc:
            raise ValueError(str(exc)) from None
    return text.strip()


def _versions(text: str) -> tuple[str, ...]:
    """``--k3s-versions``: versions, comma-separated, each as ``--k3s-version``."""
    versions = tuple(dict.fromkeys(_version(v) for v in text.split(",") if v.strip()))
    if not versions:
        raise ValueError("give one or more k3s versions, comma-separated")
    return versions


def _repository(text: str) -> str:
    repository = text.strip()
    if not repository or ":" in repository.rpartition("/")[2] or " " in repository:
        raise ValueError(
            f"{text!r} is not an image repository (no tag: e.g. "
            "registry.example.com/rancher/k3s)"
        )
    return repository


@dataclass(frozen=True)
class Knob:
    """One setting with its option, ini key and environment variable."""

    name: str
    help: str
    parse: Callable[[str], Any]
    metavar: str = "VALUE"
    flag: bool = False

    @property
    def option(self) -> str:
        """The command-line option, ``--k3s-<name>``."""
        return f"--k3s-{self.name}"

    @property
    def dest(self) -> str:
        """The option's attribute on ``config.option``."""
        return f"k3s_{self.name.replace('-', '_')}"

    @property
    def ini(self) -> str:
        """The ini key, ``k3s_<name>``."""
        return self.dest

    @property
    def env(self) -> str:
        """The environment variable, ``PYTEST_K3S_<NAME>``."""
        return f"PYTEST_K3S_{self.name.replace('-', '_').upper()}"


KNOBS = (
    Knob("image", f"Node image (default {DEFAULT_IMAGE})", str, "IMAGE"),
    Knob(
        "version",
        "k3s version, shorthand for the image of --k3s-repository: full "
        "(v1.35.5+k3s1), a release line (v1.33: its newest patch) or a "
        "channel (stable, latest)",
        _version,
        "VERSION",
    ),
    Knob(
        "versions",
        "Run every test that uses a cluster once per k3s version "
        "(comma-separated, each as --k3s-version), e.g. v1.33,v1.34,latest",
        _versions,
        "LIST",
    ),
    Knob(
        "repository",
        f"Where a k3s version's image is (default {K3S_REPOSITORY}): a "
        "registry's mirror of it",
        _repository,
        "REPOSITORY",
    ),
    Knob("servers", "Server nodes of the default cluster (default 1)", _count(1), "N"),
    Knob("agents", "Agent nodes of the default cluster (default 0)", _count(0), "N"),
    Knob(
        "timeout",
        "Seconds a cluster may take to start (default 180)",
        _seconds,
        "SECONDS",
    ),
    Knob(
        "privileged",
        "Node privileges: auto, privileged or capabilities (default auto: "
        "privileged, or explicit capabilities where the host refuses it)",
        _privilege,
        "MODE",
    ),
    Knob(
        "keep",
        "Leave the clusters running after the session and print how to reach "
        "and remove them",
        _flag,
        flag=True,
    ),
    Knob(
        "keep-on-failure",
        "Like --k3s-keep, but only when the session fails (a module's own "
        "cluster is kept only if a test of that module failed)",
        _flag,
        flag=True,
    ),
    Knob(
        "airgap-images",
        "Image archives (k3s-airgap-images-<arch>.tar, comma-separated) copied "
        "into every node before it starts, so k3s imports its images instead "
        "of pulling them",
        lambda text: tuple(p.strip() for p in text.split(",") if p.strip()),
        "PATHS",
    ),
    Knob(
        "image-cache",
        "Where the system images k3s pulls (pause, CoreDNS, ...) are saved when "
        "a cluster is removed and copied into later clusters of the same image "
        "(default: on, in ~/.cache/pytest-k3s/images; a directory, or off)",
        _cache,
        "DIR|off",
    ),
    Knob(
        "reuse",
        "Keep the clusters this run starts for later runs, and attach to a "
        "kept one of the same spec instead of starting one",
        _flag,
        flag=True,
    ),
    Knob(
        "reuse-for",
        "How long a reusable cluster nobody used is kept (default 7d)",
        parse_duration,
        "DURATION",
    ),
    Knob(
        "registry",
        "Give each cluster a registry of its own for your images "
        "(K3sCluster.registry), as the k3s marker's registry=True does",
        _flag,
        flag=True,
    ),
    Knob(
        "registry-mirror",
        "Pull workload images through a registry mirror shared by every "
        "cluster on the engine, which outlives the run: on (blobs in a volume), "
        "a directory to keep them in (cache it in CI), or off (default)",
        _directory,
        "DIR|on|off",
    ),
    Knob(
        "registry-mirror-upstreams",
        "The registries the mirror serves, comma-separated, each optionally "
        "REGISTRY=URL (default docker.io), e.g. docker.io,ghcr.io,quay.io",
        lambda text: tuple(p.strip() for p in text.split(",") if p.strip()),
        "LIST",
    ),
    Knob(
        "registry-image",
        "The registry image, for the mirror and clusters' own registries "
        f"(default {DEFAULT_REGISTRY_IMAGE})",
        str,
        "IMAGE",
    ),
    Knob(
        "kubeconfig",
        "Run the tests against the existing cluster of this kubeconfig instead "
        "of starting clusters in Docker",
        str,
        "PATH",
    ),
    Knob("context", "The kubeconfig context to use with --k3s-kubeconfig", str, "NAME"),
    Knob(
        "api-host",
        "Host or IP the kubeconfigs use for the API, where detection cannot "
        "know (default: 127.0.0.1, a remote engine's host, or server-0 on the "
        "cluster network when the tests run in one of the engine's containers)",
        str,
        "HOST",
    ),
    Knob(
        "api-bind",
        "Address of the engine's host the API port is published on (default "
        "127.0.0.1; 0.0.0.0 for a remote engine)",
        _address,
        "ADDRESS",
    ),
    Knob(
        "load-balancer",
        "Put a load balancer in front of the servers' API and the published "
        "ports: on, off or auto (default auto: with more than one server)",
        _load_balancer,
        "on|off|auto",
    ),
    Knob(
        "load-balancer-image",
        f"The load balancer's image (default {DEFAULT_LOAD_BALANCER_IMAGE})",
        str,
        "IMAGE",
    ),
    Knob(
        "artifacts",
        "Write a failure bundle (events, pods as YAML, pod and node logs; "
        "never Secrets) for each failing test that used a cluster into a "
        f"directory of this one (default off; {CI_DIRECTORY} where CI=true; "
        f"on means {CI_DIRECTORY}, off turns it off)",
        _directory,
        "DIR|on|off",
    ),
    Knob(
        "keep-for",
        "How long kept clusters are spared by the automatic sweep of leftovers "
        "(default 24h; e.g. 90m, 7d)",
        parse_duration,
        "DURATION",
    ),
)


def add_options(parser: pytest.Parser) -> None:
    """Declare every knob's option and ini key."""
    group = parser.getgroup("k3s", "k3s clusters in Docker (pytest-k3s)")
    for knob in KNOBS:
        kind = {"action": "store_true"} if knob.flag else {"metavar": knob.metavar}
        group.addoption(
            knob.option,
            default=None,
            dest=knob.dest,
            help=f"{knob.help}. Env: {knob.env}; ini: {knob.ini}",
            **kind,
        )
        parser.addini(knob.ini, knob.help, default=None)


@dataclass(frozen=True)
class Settings:
    """The resolved knobs: the default spec, and where each value came from."""

    spec: ClusterSpec
    keep_mode: KeepMode
    sources: Mapping[str, str]
    keep_for: float = DEFAULT_KEEP_FOR
    reuse: bool = False
    reuse_for: float = DEFAULT_REUSE_FOR
    #: An existing cluster's kubeconfig and context (--k3s-kubeconfig).
    kubeconfig: Path | None = None
    context: str | None = None
    #: Where failing tests' bundles go (--k3s-artifacts), or None.
    artifacts: Path | None = None
    #: The version matrix as given (--k3s-versions), before resolution.
    versions: tuple[str, ...] = ()
    #: Where versions find their images (--k3s-repository).
    repository: str = K3S_REPOSITORY

    @classmethod
    def from_config(
        cls, config: pytest.Config, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Resolve every knob from ``config`` and the environment.

        :raises pytest.UsageError: a value is invalid; the message names where
            it came from
        """
        environ = os.environ if environ is None else environ
        layers = [
            _layer(level, partial(_raw, config, environ, level=level))
            for level in ("command line", "environment", "ini file")
        ]
        return cls._from_layers(layers, environ, Path(config.invocation_params.dir))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The knobs the environment sets (``PYTEST_K3S_*``), without pytest.

        What a run in this environment would use where its command line and
        ini file say nothing: ``pytest-k3s up`` starts that cluster.

        :raises pytest.UsageError: a value is invalid, naming its variable
        """
        environ = os.environ if environ is None else environ
        layer = _layer("environment", partial(_raw, None, environ, level="environment"))
        return cls._from_layers([layer], environ, Path.cwd())

    @classmethod
    def _from_layers(
        cls,
        layers: list[tuple[str, dict[str, Any]]],
        environ: Mapping[str, str],
        start: Path,
    ) -> Settings:
        """Settings from parsed levels, nearest first (one precedence rule)."""
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for level, found in layers:
            _check_image_pair(found, level)
            for name, value in found.items():
                if name in ("image", "version") and (
                    "image" in sources or "version" in sources
                ):
                    continue
                if name not in values:
                    values[name] = value
                    sources[name] = level
        keep_mode: KeepMode = "never"
        if values.pop("keep-on-failure", False):
            keep_mode = "on-failure"
        if values.pop("keep", False):
            keep_mode = "always"
        keep_for = values.pop("keep-for", DEFAULT_KEEP_FOR)
        reuse = bool(values.pop("reuse", False))
        reuse_for = values.pop("reuse-for", DEFAULT_REUSE_FOR)
        # ClusterSpec fields spelt with underscores.
        for name in (
            "airgap-images",
            "image-cache",
            "api-host",
            "api-bind",
            "load-balancer",
            "load-balancer-image",
            "registry-image",
        ):
            if name in values:
                values[name.replace("-", "_")] = values.pop(name)
        values["registry_mirror"] = _mirror(
            values.pop("registry-mirror", False),
            values.pop("registry-mirror-upstreams", None),
            values.get("registry_image"),
            start,
        )
        artifacts = _artifacts(values.pop("artifacts", None), environ, start)
        existing = values.pop("kubeconfig", None)
        context = values.pop("context", None)
        if context is not None and existing is None:
            raise pytest.UsageError(
                "--k3s-context chooses a context of --k3s-kubeconfig; give that too"
            )
        versions = values.pop("versions", ())
        repository = values.pop("repository", K3S_REPOSITORY)
        if versions and existing is not None:
            raise pytest.UsageError(
                "--k3s-versions starts a cluster per k3s version, but "
                "--k3s-kubeconfig runs the tests on one existing cluster, which "
                "runs one version: drop one of them"
            )
        version = values.get("version")
        if version is not None and not is_partial_version(version):
            # A partial one stays in the spec until the run resolves it.
            values["image"] = image_for_version(values.pop("version"), repository)
        try:
            spec = ClusterSpec(**values)
        except SpecError as exc:
            raise pytest.UsageError(str(exc)) from exc
        return cls(
            spec=spec,
            keep_mode=keep_mode,
            sources=sources,
            keep_for=keep_for,
            reuse=reuse,
            reuse_for=reuse_for,
            kubeconfig=Path(existing).expanduser() if existing else None,
            context=context,
            artifacts=artifacts,
            versions=versions,
            repository=repository,
        )

    def header(self, server: str | None = None) -> str:
        """The report header line.

        :param server: an existing cluster's API URL, when it could be read
        """
        spec = self.spec
        if self.kubeconfig is not None:
            return (
                f"k3s: existing cluster from {self.kubeconfig} (context "
                f"{self.context or 'current'}"
                + (f", server {server}" if server else "")
                + "); nothing runs in Docker"
            )
        origin = self.sources.get("image") or self.sources.get("version") or "default"
        return (
            f"k3s: image {spec.image} ({origin}), default cluster "
            f"{spec.servers} server(s) + {spec.agents} agent(s), "
            f"timeout {spec.timeout:.0f}s, privileged {spec.privileged}"
            + (
                ""
                if self.keep_mode == "never"
                else f", keep clusters: {self.keep_mode} "
                f"(for {self.keep_for / 3600:g}h)"
            )
            + (", reuse clusters" if self.reuse else "")
            + (
                ""
                if spec.registry_mirror is None
                else ", registry mirror of "
                + ",".join(r for r, _ in spec.registry_mirror.remotes())
                + f" in {spec.registry_mirror.storage or 'a volume'}"
            )
        )


def _layer(
    level: str, raw: Callable[[Knob], tuple[object, str]]
) -> tuple[str, dict[str, Any]]:
    """Parse one level's knobs: ``raw`` gives each knob's text and where it is."""
    found: dict[str, Any] = {}
    for knob in KNOBS:
        value, where = raw(knob)
        if value is None:
            continue
        try:
            found[knob.name] = (
                value if isinstance(value, bool) else knob.parse(str(value))
            )
        except ValueError as exc:
            raise pytest.UsageError(f"{where}: {exc}") from exc
    return level, found


def _raw(
    config: pytest.Config | None, environ: Mapping[str, str], knob: Knob, level: str
) -> tuple[object, str]:
    if config is None or level == "environment":
        value = environ.get(knob.env)
        return (value if value else None), f"{knob.env}={value}"
    if level == "command line":
        return config.getoption(knob.dest), knob.option
    value = config.getini(knob.ini)
    return (value if value not in (None, "", []) else None), f"ini {knob.ini}"


def _artifacts(
    value: str | bool | None, environ: Mapping[str, str], start: Path
) -> Path | None:
    """The bundles' directory: as set, else :data:`CI_DIRECTORY` in CI, else none.

    On (``true``) is :data:`CI_DIRECTORY` too.

    ``CI=true`` is what GitHub Actions, GitLab CI, CircleCI, Travis and most
    others set. A relative directory is taken from where pytest started.
    """
    if value is None:
        ci = environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")
        value = CI_DIRECTORY if ci else False
    if value is True:
        value = CI_DIRECTORY
    if value is False:
        return None
    return (start / Path(str(value)).expanduser()).absolute()


def _mirror(
    value: str | bool,
    upstreams: tuple[str, ...] | None,
    image: str | None,
    start: Path,
) -> RegistryMirror | None:
    """The registry mirror the knobs describe, or None when it is off.

    A relative storage directory is taken from where pytest started.
    """
    if value is False:
        return None
    storage = None if value is True else str(start / Path(str(value)).expanduser())
    try:
        return RegistryMirror(
            storage=storage,
            image=image or DEFAULT_REGISTRY_IMAGE,
            upstreams=upstreams or RegistryMirror.upstreams,
        )
    except SpecError as exc:
        raise pytest.UsageError(f"--k3s-registry-mirror: {exc}") from exc


def _check_image_pair(found: Mapping[str, Any], level: str) -> None:
    if "image" in found and "version" in found:
        raise pytest.UsageError(
            f"the {level} sets both the k3s image and the k3s version; set one "
            "(--k3s-image/PYTEST_K3S_IMAGE/k3s_image or the version equivalents)"
        )
