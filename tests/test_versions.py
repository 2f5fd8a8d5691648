"""Partial k3s versions: the channel server, its 24 h cache, the offline fallback.

A channel server on loopback answers as ``update.k3s.io/v1-release/channels``
does; the offline fallback reads the fake engine's image tags.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from pytest_k3s.errors import VersionUnresolvedError
from pytest_k3s.lifecycle.versions import CACHE_FOR
from pytest_k3s.lifecycle.versions import Resolver
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import is_partial_version
from tests.fake_engine import FakeEngine


CHANNELS = {
    "stable": "v1.33.5+k3s1",
    "latest": "v1.34.2+k3s1",
    "testing": "v1.35.0-rc1+k3s1",
    "v1.32": "v1.32.9+k3s1",
    "v1.33": "v1.33.5+k3s1",
    "v1.34": "v1.34.2+k3s1",
}


class ChannelServer:
    """A k3s channel server on loopback that counts its requests."""

    def __init__(self, channels: dict[str, str]) -> None:
        self.channels = channels
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = json.dumps(
                    {
                        "type": "collection",
                        "resourceType": "channels",
                        "data": [
                            {"id": key, "type": "channel", "name": key, "latest": v}
                            for key, v in outer.channels.items()
                        ],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1-release/channels"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def channel_server() -> Iterator[ChannelServer]:
    server = ChannelServer(dict(CHANNELS))
    yield server
    server.close()


def _unreachable() -> str:
    """A loopback URL nothing listens on."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1-release/channels"


@pytest.mark.parametrize(
    ("asked", "full"),
    [
        ("stable", "v1.33.5+k3s1"),
        ("latest", "v1.34.2+k3s1"),
        ("v1.33", "v1.33.5+k3s1"),
        ("1.32", "v1.32.9+k3s1"),
        ("v1.31.4+k3s2", "v1.31.4+k3s2"),
        ("1.31.4", "v1.31.4+k3s1"),
    ],
)
def test_partial_versions_resolve_through_the_channel_server(
    channel_server: ChannelServer, tmp_path: Path, asked: str, full: str
) -> None:
    resolver = Resolver(url=channel_server.url, cache=tmp_path / "channels.json")
    resolved = resolver.resolve(asked)
    assert resolved.version == full
    assert resolved.note is None
    # A full version never asks the server.
    assert channel_server.requests == (0 if asked.count(".") == 2 else 1)


def test_the_table_is_cached_for_a_day_across_resolvers(
    channel_server: ChannelServer, tmp_path: Path
) -> None:
    cache = tmp_path / "channels.json"
    clock = [1_000_000.0]
    for _ in range(3):  # three runs (or workers) of the same machine
        resolver = Resolver(url=channel_server.url, cache=cache, now=lambda: clock[0])
        assert resolver.resolve("v1.34").version == "v1.34.2+k3s1"
        assert resolver.resolve("stable").version == "v1.33.5+k3s1"
    assert channel_server.requests == 1

    channel_server.channels["v1.34"] = "v1.34.3+k3s1"
    clock[0] += CACHE_FOR - 1
    fresh = Resolver(url=channel_server.url, cache=cache, now=lambda: clock[0])
    assert fresh.resolve("v1.34").version == "v1.34.2+k3s1"
    clock[0] += 2  # a day old: asked again
    stale = Resolver(url=channel_server.url, cache=cache, now=lambda: clock[0])
    assert stale.resolve("v1.34").version == "v1.34.3+k3s1"
    assert channel_server.requests == 2
    # Another channel server's table is not this one's.
    other = ChannelServer({"v1.34": "v1.34.9+k3s1"})
    try:
        elsewhere = Resolver(url=other.url, cache=cache, now=lambda: clock[0])
        assert elsewhere.resolve("v1.34").version == "v1.34.9+k3s1"
    finally:
        other.close()


def test_offline_the_newest_matching_local_image_is_used_with_a_note(
    tmp_path: Path,
) -> None:
    engine = FakeEngine()
    engine.images |= {
        "mirror/k3s:v1.33.2-k3s1",
        "mirror/k3s:v1.33.10-k3s1",
        "mirror/k3s:v1.33.10-k3s2",
        "mirror/k3s:v1.34.1-k3s1",
        "mirror/k3s:dev",
        "rancher/k3s:v1.33.99-k3s1",  # another repository
    }
    url = _unreachable()
    resolver = Resolver(
        lambda: engine, repository="mirror/k3s", url=url, cache=tmp_path / "c.json"
    )
    resolved = resolver.resolve("v1.33")
    assert resolved.version == "v1.33.10+k3s2"
    assert resolved.source == "newest local image"
    assert resolved.note is not None
    assert url in resolved.note
    assert "v1.33.10+k3s2" in resolved.note
    assert resolver.resolve("stable").version == "v1.34.1+k3s1"


def test_when_both_fail_the_error_names_both_attempts(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.images |= {"rancher/k3s:v1.32.1-k3s1"}
    url = _unreachable()
    resolver = Resolver(lambda: engine, url=url, cache=tmp_path / "c.json")
    with pytest.raises(VersionUnresolvedError) as caught:
        resolver.resolve("v1.33")
    message = str(caught.value)
    assert url in message
    assert "Connection refused" in message or "URLError" in message
    assert "no rancher/k3s image of v1.33.x" in message
    assert "PYTEST_K3S_CHANNEL_URL" in message


def test_an_unknown_release_line_names_the_channels(
    channel_server: ChannelServer, tmp_path: Path
) -> None:
    resolver = Resolver(url=channel_server.url, cache=tmp_path / "c.json")
    with pytest.raises(
        VersionUnresolvedError, match=r"no release for channel 'v1\.99'"
    ):
        resolver.resolve("v1.99")
    with pytest.raises(VersionUnresolvedError, match="is not a k3s version"):
        resolver.resolve("newest")


def test_every_process_of_a_run_answers_as_the_first_did(
    channel_server: ChannelServer, tmp_path: Path
) -> None:
    # xdist workers must collect the same ids: one resolves and records,
    # the rest read the record, whatever the server or the cache say later.
    record = tmp_path / "run" / "versions.resolved"
    record.parent.mkdir()
    first = Resolver(url=channel_server.url, cache=tmp_path / "a.json", record=record)
    assert first.resolve("v1.33").version == "v1.33.5+k3s1"
    channel_server.channels["v1.33"] = "v1.33.6+k3s1"  # a release meanwhile
    later = Resolver(url=channel_server.url, cache=tmp_path / "b.json", record=record)
    assert later.resolve("v1.33").version == "v1.33.5+k3s1"
    assert later.resolve("v1.34").version == "v1.34.2+k3s1"  # new: resolved
    assert channel_server.requests == 2

    # Offline, a first process's fallback is every process's answer.
    engine = FakeEngine()
    engine.images |= {"rancher/k3s:v1.32.3-k3s1"}
    offline = Resolver(
        lambda: engine, url=_unreachable(), cache=tmp_path / "c.json", record=record
    )
    assert offline.resolve("1.32").version == "v1.32.3+k3s1"
    online = Resolver(url=channel_server.url, cache=tmp_path / "d.json", record=record)
    assert online.resolve("1.32").version == "v1.32.3+k3s1"
    assert online.notes() == [offline.resolve("1.32").note]


@pytest.mark.parametrize(
    "cached",
    ["[]", '{"fetched": "x"}', '{"url": 1, "fetched": 0, "channels": []}', "{"],
)
def test_a_damaged_cache_is_fetched_again(
    channel_server: ChannelServer, tmp_path: Path, cached: str
) -> None:
    cache = tmp_path / "channels.json"
    cache.write_text(cached)
    resolver = Resolver(url=channel_server.url, cache=cache)
    assert resolver.resolve("stable").version == "v1.33.5+k3s1"
    assert channel_server.requests == 1


def test_an_engine_that_cannot_be_asked_is_named(tmp_path: Path) -> None:
    from pytest_k3s.errors import DockerUnavailableError

    def engine() -> FakeEngine:
        raise DockerUnavailableError("no Docker engine at unix:///nowhere")

    resolver = Resolver(engine, url=_unreachable(), cache=tmp_path / "c.json")
    listing = r"could not be listed \(no Docker"
    with pytest.raises(VersionUnresolvedError, match=listing):
        resolver.resolve("v1.33")


def test_a_spec_keeps_a_partial_version_until_the_start() -> None:
    assert is_partial_version("v1.33")
    assert is_partial_version("stable")
    assert not is_partial_version("v1.33.1")
    spec = ClusterSpec(version="v1.33")
    assert spec.version == "v1.33"
    assert "k3s v1.33" in spec.describe()
    assert ClusterSpec(version="v1.33.1").version is None


def test_a_start_resolves_a_specs_partial_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pytest_k3s.lifecycle.start import resolve_spec

    monkeypatch.setenv("PYTEST_K3S_CHANNEL_URL", _unreachable())
    engine = FakeEngine()
    engine.images |= {"rancher/k3s:v1.33.2-k3s1", "rancher/k3s:v1.33.7-k3s1"}
    said: list[str] = []
    spec = resolve_spec(engine, ClusterSpec(version="1.33", agents=1), said.append)
    assert spec.image == "rancher/k3s:v1.33.7-k3s1"
    assert (spec.version, spec.agents) == (None, 1)
    assert len(said) == 1
    assert "newest matching rancher/k3s image" in said[0]
