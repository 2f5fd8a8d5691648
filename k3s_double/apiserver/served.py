"""The kinds one API serves: the built-in table plus established custom resources.

:data:`~.resources.KINDS` is fixed; a running API server also serves the
resources of every Established CustomResourceDefinition, at
``/apis/<group>/<version>/...`` for each served version, and lists them in
discovery. :class:`ServedKinds` is that union for one ``KubeAPI``; the CRD
controller (:mod:`.controllers.crds`) registers and unregisters CRDs, routing
and discovery read it.
"""

from __future__ import annotations

import re
import threading

from .kinds import GROUPS
from .kinds import KINDS
from .kinds import Kind


_KUBE_VERSION = re.compile(r"v(\d+)(?:(alpha|beta)(\d+))?")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key of a version in Kubernetes' order (v2, v1, v1beta1, v1alpha1, foo).

    GA versions come first, highest major first; then betas, then alphas;
    versions that are not Kubernetes-like come last, alphabetically.
    """
    found = _KUBE_VERSION.fullmatch(version)
    if found is None:
        return (3, 0, 0, version)
    major, stage, minor = found.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0), "")


class ServedKinds:
    """The served kinds of one API, looked up by group, version and plural."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._custom: dict[str, tuple[Kind, ...]] = {}

    def register(self, crd_name: str, kinds: tuple[Kind, ...]) -> None:
        """Serve (or re-serve, after an update) the versions of one CRD."""
        with self._lock:
            self._custom[crd_name] = kinds

    def unregister(self, crd_name: str) -> None:
        """Stop serving a CRD's resources."""
        with self._lock:
            self._custom.pop(crd_name, None)

    def custom(self, crd_name: str) -> tuple[Kind, ...]:
        """The kinds served for one CRD (empty when it is not established)."""
        with self._lock:
            return self._custom.get(crd_name, ())

    def served(self) -> list[Kind]:
        """Every served kind, built-ins first, one row per served version."""
        with self._lock:
            custom = [kind for kinds in self._custom.values() for kind in kinds]
        return [*KINDS, *custom]

    def lookup(self, group: str, version: str, plural: str) -> Kind | None:
        """The kind served at ``/apis/<group>/<version>/<plural>``, or None."""
        for kind in self.served():
            if (kind.group, kind.version, kind.plural) == (group, version, plural):
                return kind
        return None

    def groups(self) -> dict[str, list[str]]:
        """Each served API group (not core) with its versions, preferred first."""
        found: dict[str, list[str]] = {group: [v] for group, v in GROUPS.items()}
        for kind in self.served():
            if kind.custom:
                versions = found.setdefault(kind.group, [])
                if kind.version not in versions:
                    versions.append(kind.version)
        return {
            group: sorted(versions, key=version_priority)
            for group, versions in found.items()
        }

    def in_group_version(self, group: str, version: str) -> list[Kind]:
        """The kinds of one group version, in the order discovery lists them."""
        return [k for k in self.served() if (k.group, k.version) == (group, version)]
