"""The run's k3s versions: the default one and the matrix, resolved once.

``--k3s-versions v1.33,v1.34`` (or ``@pytest.mark.k3s(version=[...])``)
runs every test that uses a cluster once per version: the plugin
parametrizes the session-scoped ``_k3s_version`` fixture that the cluster
fixtures depend on, so tests that use no cluster run once, ids read
``test_x[k3s-v1.34.2+k3s1]`` (``-k v1.34`` selects), and pytest groups the
tests by version, one cluster per (topology, version), shared by xdist
workers as any cluster is. A marker's ``image=`` or single ``version=``
pins its tests to that one image.

Versions are resolved once per run (:mod:`pytest_k3s.lifecycle.versions`):
the controller resolves the settings and hands the outcome to its workers,
which collect the same ids from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace

import pytest

from pytest_k3s.errors import SpecError
from pytest_k3s.lifecycle.versions import Resolved
from pytest_k3s.lifecycle.versions import Resolver
from pytest_k3s.settings import Settings
from pytest_k3s.spec import image_for_version


@dataclass(frozen=True)
class RunVersions:
    """The versions of a run, resolved: its default's (if set) and its matrix."""

    repository: str
    default: Resolved | None = None
    matrix: tuple[Resolved, ...] = ()

    def header(self) -> list[str]:
        """Report header lines: the matrix, and any offline fallback's note."""
        lines: list[str] = []
        if self.matrix:
            lines.append(
                f"k3s versions ({len(self.matrix)}, each test that uses a "
                "cluster runs once per version): "
                + ", ".join(r.describe() for r in self.matrix)
            )
        elif self.default is not None and self.default.asked != self.default.version:
            lines.append(f"k3s version: {self.default.describe()}")
        notes = [r.note for r in (self.default, *self.matrix) if r and r.note]
        return lines + list(dict.fromkeys(notes))

    @property
    def versions(self) -> tuple[str, ...]:
        """The matrix's full versions, each once, in the order given."""
        return tuple(dict.fromkeys(r.version for r in self.matrix))


def resolve(settings: Settings, resolver: Resolver) -> tuple[Settings, RunVersions]:
    """Resolve the settings' version and matrix; the spec gets its full image.

    :raises pytest.UsageError: a version cannot be resolved; the message
        names the setting and both attempts
    """
    default: Resolved | None = None
    spec = settings.spec
    if spec.version is not None:
        default = _resolve(resolver, spec.version, "--k3s-version")
        image = image_for_version(default.version, settings.repository)
        spec = replace(spec, version=None, image=image)
    elif spec.k3s_version is not None:
        default = Resolved(spec.k3s_version, spec.k3s_version, "given")
    matrix = tuple(_resolve(resolver, v, "--k3s-versions") for v in settings.versions)
    return replace(settings, spec=spec), RunVersions(
        settings.repository, default, matrix
    )


def image_of(resolver: Resolver, repository: str) -> Callable[[str], str]:
    """Map a version as a marker gives it to the image the run uses for it."""

    def image(text: str) -> str:
        return image_for_version(resolver.resolve(text).version, repository)

    return image


def param_id(version: str) -> str:
    """The test id part of a version: ``k3s-v1.34.2+k3s1``."""
    return f"k3s-{version}"


def _resolve(resolver: Resolver, text: str, where: str) -> Resolved:
    try:
        return resolver.resolve(text)
    except SpecError as exc:
        raise pytest.UsageError(f"{where}: {exc}") from exc
