"""Partial k3s versions made full: ``v1.33``, ``1.33``, ``stable``, ``latest``.

k3s publishes its release lines and channels at its channel server
(``https://update.k3s.io/v1-release/channels``: a JSON collection whose
``data`` items have an ``id`` such as ``stable`` or ``v1.33`` and the
``latest`` full version of it), which k3d and k3s' install script read too.
A :class:`Resolver` asks it once, keeps its answer in this user's cache for
24 hours (one fetch per machine, whatever the number of runs and xdist
workers: the first fetches under a file lock, the rest read), and falls back
to the newest matching image already on the engine when the server cannot be
reached, with one line saying so. When both fail, the error names both.

Resolution happens once per run: each answer goes into the run's record (in
its state directory, under a file lock), which every process of the run
(xdist's controller and workers) reads first, so all collect the same test
ids whatever the channel server or the cache do meanwhile.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_k3s.errors import K3sError
from pytest_k3s.errors import VersionUnresolvedError
from pytest_k3s.spec import CHANNELS
from pytest_k3s.spec import K3S_REPOSITORY
from pytest_k3s.spec import image_for_version
from pytest_k3s.spec import is_partial_version
from pytest_k3s.spec import parse_version
from pytest_k3s.spec import spell_version
from pytest_k3s.userdirs import cache_home


if TYPE_CHECKING:
    from pytest_k3s.engine.protocol import Engine


CHANNEL_URL = "https://update.k3s.io/v1-release/channels"
#: Where to ask instead (a mirror of the channel server, or a test's).
CHANNEL_URL_ENV = "PYTEST_K3S_CHANNEL_URL"
#: How long a fetched channel table is used before it is asked again.
CACHE_FOR = 24 * 3600.0
#: How long one request to the channel server may take.
FETCH_TIMEOUT = 10.0


@dataclass(frozen=True)
class Resolved:
    """A version as asked for, the full one it became, and how.

    :param note: the one line to show the user, when the answer is not the
        channel server's (the offline fallback)
    """

    asked: str
    version: str
    source: str
    note: str | None = None

    def describe(self) -> str:
        """``v1.33 → v1.33.5+k3s1``, or the version alone when it was full."""
        if self.asked == self.version or self.source == "given":
            return self.version
        return f"{self.asked} → {self.version} ({self.source})"


class Resolver:
    """Resolves versions for one run (one process, or a controller and workers).

    :param engine: returns the engine whose images are the offline fallback
        (called only then)
    :param repository: where the node images are (``rancher/k3s``, or a
        registry's mirror of it)
    :param record: the run's record of what it resolved (in its state
        directory): every process of the run (xdist's controller and
        workers) answers from it, so all collect the same test ids even if
        the channel server answers one and not another, or the cache
        expires in between
    """

    def __init__(
        self,
        engine: Callable[[], Engine] | None = None,
        *,
        repository: str = K3S_REPOSITORY,
        record: Path | None = None,
        url: str | None = None,
        cache: Path | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self.repository = repository
        self._record = record
        self._channels: dict[str, str] | None = None
        self._channel_error: str | None = None
        self._engine_error: str | None = None
        self._resolved: dict[str, Resolved] = {}
        self.url = url or os.environ.get(CHANNEL_URL_ENV) or CHANNEL_URL
        self._cache = cache or cache_home() / "channels.json"
        self._now = now

    def resolve(self, text: str) -> Resolved:
        """The full version ``text`` stands for (a full one stands for itself).

        :raises VersionUnresolvedError: ``text`` is no version, or neither the
            channel server nor the engine's images could resolve it
        """
        asked = text.strip()
        if asked not in self._resolved:
            if not is_partial_version(asked):
                self._resolved[asked] = _full(asked)
            elif self._record is None:
                self._resolved[asked] = self._resolve_partial(asked)
            else:
                self._resolved[asked] = self._resolve_recorded(asked)
        return self._resolved[asked]

    def image(self, text: str) -> str:
        """The image of the version ``text`` stands for, in this repository.

        :raises VersionUnresolvedError: as :meth:`resolve`
        """
        return image_for_version(self.resolve(text).version, self.repository)

    def notes(self) -> list[str]:
        """The lines to show for every version of the run resolved offline."""
        found = dict(self._resolved)
        if self._record is not None:
            found.update(_read_record(self._record))
        return list(dict.fromkeys(r.note for r in found.values() if r.note))

    def _resolve_recorded(self, asked: str) -> Resolved:
        """Answer from the run's record, resolving (and recording) once per run."""
        from filelock import FileLock

        assert self._record is not None
        with FileLock(f"{self._record}.lock"):
            recorded = _read_record(self._record)
            if asked not in recorded:
                recorded[asked] = self._resolve_partial(asked)
                _write_json(
                    self._record,
                    {a: [r.version, r.source, r.note] for a, r in recorded.items()},
                )
        return recorded[asked]

    # ---------------------------------------------------------------------

    def _resolve_partial(self, asked: str) -> Resolved:
        channel = asked if asked in CHANNELS else "v" + asked.removeprefix("v")
        table = self.channels()
        if table is not None:
            latest = table.get(channel)
            numbers = parse_version(latest) if latest else None
            if numbers is not None:
                return Resolved(asked, spell_version(numbers), "k3s channel server")
            known = ", ".join(sorted(table, key=_channel_order)[-6:])
            raise VersionUnresolvedError(
                f"k3s version {asked!r}: the channel server {self.url} has no "
                f"release for channel {channel!r} (newest channels: {known}); "
                "give a full version such as v1.33.5+k3s1"
            )
        local = self._newest_local(asked)
        if local is None:
            engine = (
                f"the engine's images could not be listed ({self._engine_error})"
                if self._engine_error
                else f"the engine has no {self.repository} image "
                + (f"of {channel}.x" if channel not in CHANNELS else "at all")
            )
            raise VersionUnresolvedError(
                f"k3s version {asked!r} could not be resolved: the channel server "
                f"{self.url} could not be read ({self._channel_error}), and "
                + engine
                + ". Give a full version (e.g. v1.33.5+k3s1), point "
                f"{CHANNEL_URL_ENV} at a reachable channel server, or pull "
                "the image"
            )
        version = spell_version(local)
        return Resolved(
            asked,
            version,
            "newest local image",
            f"k3s version {asked!r}: the channel server {self.url} could not be "
            f"read ({self._channel_error}); using {version}, the newest matching "
            f"{self.repository} image already on the engine",
        )

    def channels(self) -> dict[str, str] | None:
        """The channel table (channel → its latest version), or None if unreachable.

        Read from the cache while it is fresh, else fetched and cached; one
        process fetches while the others wait for its answer.
        """
        if self._channels is not None or self._channel_error is not None:
            return self._channels
        from filelock import FileLock

        self._cache.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{self._cache}.lock"):
            table = self._read_cache()
            if table is None:
                try:
                    table = fetch_channels(self.url)
                except K3sError as exc:
                    self._channel_error = str(exc)
                    return None
                self._write_cache(table)
        self._channels = table
        return table

    def _read_cache(self) -> dict[str, str] | None:
        """The cached table if it is this server's, fresh and well-formed."""
        try:
            data = json.loads(self._cache.read_text())
            fetched = float(data["fetched"])
            table = data["channels"]
            url = data["url"]
        except (OSError, ValueError, TypeError, KeyError):
            return None  # none, or not ours to trust: fetched again
        fresh = 0 <= self._now() - fetched < CACHE_FOR
        if not fresh or url != self.url or not isinstance(table, dict):
            return None
        return {str(k): str(v) for k, v in table.items()}

    def _write_cache(self, table: Mapping[str, str]) -> None:
        _write_json(
            self._cache, {"url": self.url, "fetched": self._now(), "channels": table}
        )

    def _newest_local(self, asked: str) -> tuple[int, int, int, int] | None:
        if self._engine is None:
            return None
        try:
            tags = self._engine().image_tags(self.repository)
        except K3sError as exc:
            self._engine_error = str(exc)
            return None
        found = [n for n in map(parse_version, tags) if n is not None]
        if asked not in CHANNELS:
            major, minor = (int(x) for x in asked.removeprefix("v").split("."))
            found = [n for n in found if n[:2] == (major, minor)]
        return max(found, default=None)


def _full(asked: str) -> Resolved:
    numbers = parse_version(asked)
    if numbers is None:
        raise VersionUnresolvedError(
            f"{asked!r} is not a k3s version: give a full one (v1.33.5+k3s1), a "
            f"release line (v1.33) or a channel ({' or '.join(CHANNELS)})"
        )
    return Resolved(asked, spell_version(numbers), "given")


def _read_record(path: Path) -> dict[str, Resolved]:
    """A run's resolved versions (none yet, if it has no record)."""
    try:
        data = json.loads(path.read_text())
        return {
            str(asked): Resolved(str(asked), str(version), str(source), note)
            for asked, (version, source, note) in data.items()
        }
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _write_json(path: Path, data: object) -> None:
    """Write ``data`` to ``path`` at once (readers never see half of it)."""
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(data))
    partial.replace(path)


def fetch_channels(url: str, timeout: float = FETCH_TIMEOUT) -> dict[str, str]:
    """Ask a k3s channel server for its channels and their latest versions.

    :raises K3sError: it cannot be reached, or answers no channel table
    """
    import urllib.request  # lazily: the plugin imports this module at start-up

    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = json.loads(answer.read())
    except (OSError, ValueError) as exc:
        raise K3sError(f"{type(exc).__name__}: {exc}") from exc
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise K3sError(f"{url} answered no channel list ('data' is missing)")
    return {
        str(item["id"]): str(item["latest"])
        for item in items
        if isinstance(item, dict) and item.get("id") and item.get("latest")
    }


def _channel_order(channel: str) -> tuple[int, ...]:
    numbers = parse_version(f"{channel}.0") if channel.startswith("v") else None
    return numbers[:2] if numbers else (0,)
