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
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_k3s.errors import K3sError
from pytest_k3s.errors import SpecError
from pytest_k3s.lifecycle.versions import Resolved
from pytest_k3s.lifecycle.versions import Resolver
from pytest_k3s.marker import marker_versions
from pytest_k3s.settings import Settings
from pytest_k3s.spec import K3S_REPOSITORY
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import image_for_version
from pytest_k3s.userdirs import private_directory


if TYPE_CHECKING:
    from pytest_k3s.engine.protocol import Engine


@dataclass(frozen=True)
class RunVersions:
    """The versions of a run, resolved: its default's (if set) and its matrix."""

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
        spec = replace(spec, version=None, image=resolver.image(spec.version))
    elif spec.k3s_version is not None:
        default = Resolved(spec.k3s_version, spec.k3s_version, "given")
    matrix = tuple(_resolve(resolver, v, "--k3s-versions") for v in settings.versions)
    return replace(settings, spec=spec), RunVersions(default, matrix)


def param_id(version: str) -> str:
    """The test id part of a version: ``k3s-v1.34.2+k3s1``."""
    return f"k3s-{version}"


def _resolve(resolver: Resolver, text: str, where: str) -> Resolved:
    try:
        return resolver.resolve(text)
    except SpecError as exc:
        raise pytest.UsageError(f"{where}: {exc}") from exc


class RunMatrix:
    """One process's view of the run's versions: resolved settings, markers' too.

    :param settings: the run's settings, as parsed (versions unresolved)
    :param state_dir: the run's state directory (xdist workers share it),
        where the record of resolved versions is kept
    :param engine: the engine, for the offline fallback (asked only then)
    """

    def __init__(
        self, settings: Settings, state_dir: Path, engine: Callable[[], Engine]
    ) -> None:
        self.repository = settings.repository
        self._existing = settings.kubeconfig is not None
        # Not ``*.json``: those are the run's cluster records (run/state.py).
        self._record = state_dir / "versions.resolved"
        self._state_dir = state_dir
        self._engine = engine
        self._resolver: Resolver | None = None
        self.run: RunVersions | None = None
        self.settings = settings
        asks = settings.versions or settings.spec.version
        if not self._existing and (asks or self.repository != K3S_REPOSITORY):
            self.settings, self.run = resolve(settings, self.resolver)

    @property
    def resolver(self) -> Resolver:
        """The resolver answering from the run's record (made on first need)."""
        if self._resolver is None:
            private_directory(self._state_dir)
            self._resolver = Resolver(
                self._engine, repository=self.repository, record=self._record
            )
        return self._resolver

    def image_of(self, markers: Iterable[pytest.Mark]) -> Callable[[str], str] | None:
        """How a marker's version becomes an image (None: it gives none).

        With an existing cluster, None too: the spec keeps the version, so
        the test asks for a cluster of its own and is skipped, unresolved.
        """
        if self._existing or not any("version" in m.kwargs for m in markers):
            return None
        return self.resolver.image

    def versions_for(
        self, markers: Iterable[pytest.Mark], where: str
    ) -> tuple[str, ...]:
        """The versions a test runs once each for (none: it is not parametrized).

        :raises pytest.UsageError: a marker's list is invalid or unresolvable
        """
        if self._existing:
            return ()  # one existing cluster: markers' lists are skipped
        listed = marker_versions(markers, where)
        if listed is None:
            return self.run.versions if self.run else ()
        try:
            return tuple(
                dict.fromkeys(self.resolver.resolve(v).version for v in listed)
            )
        except K3sError as exc:
            raise pytest.UsageError(f"{where}: @pytest.mark.k3s: {exc}") from exc

    def versioned(self, spec: ClusterSpec, version: str | None) -> ClusterSpec:
        """``spec`` with the image of the matrix's ``version`` (as it is without)."""
        if version is None:
            return spec
        return replace(spec, image=image_for_version(version, self.repository))

    def header(self) -> list[str]:
        """The report header's lines about versions."""
        return self.run.header() if self.run else []

    def notes(self) -> list[str]:
        """Offline resolutions of the run not in the header (markers' versions).

        Any process of the run may have made them (xdist workers collect);
        the run's record has them all.
        """
        if not self._record.exists():
            return []
        shown = self.header()
        return [note for note in self.resolver.notes() if note not in shown]
