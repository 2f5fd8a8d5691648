"""What changed between k3s releases, for the behaviours the double imitates.

A leaf module, like :mod:`k3s_double.constants`: it imports nothing of the
double. Each gate names the first release of every minor line that has the
change (k3s backports fixes to the lines it still maintains), with its source.

- :func:`containerd_version`: k3s moved to containerd 2.0 in v1.31.6 and
  v1.32.2 (k3s#11375, backported as k3s#11745; docs.k3s.io's v1.31.X release
  table: v1.31.5 has v1.7.23-k3s2, v1.31.6 v2.0.2-k3s2); v1.33 and later ship
  2.x only, v1.30 never did. containerd 2's ``ctr images export`` streams
  through the transfer service unless given ``--local``.
- :func:`imports_missing_platforms`: k3s imports an archive that lacks other
  platforms' content (containerd's ``WithSkipMissing``) since k3s#10132, in
  v1.30.2, v1.29.6, v1.28.11 and v1.27.15 (the backports k3s#10148-10150 were
  validated on June 12, 2024 against v1.29.5, v1.28.10 and v1.27.14, which
  still fail). Older releases import with all platforms and fail such an
  archive with ``content digest sha256:...: not found``.
- :func:`honours_cache_file`: ``agent/images/.cache.json`` (import only
  archives whose size or mtime changed) since k3s#12237, in v1.33.1, v1.32.5,
  v1.31.9 and v1.30.13 (k3s#12268-12271, docs.k3s.io's air-gap page).
- :func:`has_default_endpoint_flag`: ``--disable-default-registry-endpoint``
  (containerd tries only a registry's mirrors) came in the January 2024
  releases v1.26.13, v1.27.10, v1.28.6 and v1.29.1 (docs.k3s.io's private
  registry page, "Version Gate"); older ones refuse it as an unknown flag.
- :func:`serves_watch_list`: kube-apiserver's ``WatchList`` feature gate
  (``sendInitialEvents`` on watches), which k3s leaves at its default: alpha
  and off from 1.27, beta and on in 1.32, off again in 1.33 ("the json and
  proto streaming encoders appear to work better"), on from 1.34
  (``k8s.io/apiserver/pkg/features/kube_features.go``). Releases before 1.27
  know no ``sendInitialEvents`` at all; the double treats them as gate off.
"""

from __future__ import annotations

import re


_RELEASE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")

Release = tuple[int, int, int]

#: First release of each minor line with containerd 2; later lines all have it.
_CONTAINERD_2 = {31: 6, 32: 2}
_FIRST_CONTAINERD_2_MINOR = 33
#: First release of each minor line that skips missing platforms on import.
_SKIP_MISSING = {27: 15, 28: 11, 29: 6, 30: 2}
_FIRST_SKIP_MISSING_MINOR = 31
#: First release of each minor line that honours ``.cache.json``.
_CACHE_FILE = {30: 13, 31: 9, 32: 5, 33: 1}
_FIRST_CACHE_FILE_MINOR = 34
#: First release of each minor line with ``--disable-default-registry-endpoint``.
_NO_DEFAULT_ENDPOINT = {26: 13, 27: 10, 28: 6, 29: 1}
_FIRST_NO_DEFAULT_ENDPOINT_MINOR = 30
#: Minor releases whose kube-apiserver enables ``WatchList`` by default.
_WATCH_LIST_MINORS = {32}
_FIRST_WATCH_LIST_MINOR = 34


def release(version: str) -> Release:
    """``(1, minor, patch)`` of a k3s version such as ``v1.29.4+k3s1``."""
    found = _RELEASE.match(version)
    if found is None:
        raise ValueError(f"not a k3s version: {version!r}")
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


def _since(version: str, firsts: dict[int, int], all_from: int) -> bool:
    major, minor, patch = release(version)
    if major != 1 or minor >= all_from:
        return major >= 1
    return minor in firsts and patch >= firsts[minor]


def containerd_version(version: str) -> str:
    """The containerd a k3s release embeds, to the major version that matters."""
    if _since(version, _CONTAINERD_2, _FIRST_CONTAINERD_2_MINOR):
        return "v2.2.3-k3s1"
    return "v1.7.27-k3s1"


def imports_missing_platforms(version: str) -> bool:
    """Whether k3s imports an ``agent/images`` archive lacking other platforms."""
    return _since(version, _SKIP_MISSING, _FIRST_SKIP_MISSING_MINOR)


def honours_cache_file(version: str) -> bool:
    """Whether k3s reads and writes ``agent/images/.cache.json``."""
    return _since(version, _CACHE_FILE, _FIRST_CACHE_FILE_MINOR)


def has_default_endpoint_flag(version: str) -> bool:
    """Whether a release knows ``--disable-default-registry-endpoint``."""
    return _since(version, _NO_DEFAULT_ENDPOINT, _FIRST_NO_DEFAULT_ENDPOINT_MINOR)


def serves_watch_list(version: str) -> bool:
    """Whether a release's API server streams initial events (``WatchList``)."""
    major, minor, _ = release(version)
    if major != 1:
        return major > 1
    return minor >= _FIRST_WATCH_LIST_MINOR or minor in _WATCH_LIST_MINORS
