"""Host policy: the capability fallback's set and the inotify advice."""

from __future__ import annotations

from pathlib import Path

from pytest_k3s.host import inotify_warning
from pytest_k3s.host import missing_capabilities


def test_missing_capabilities_reads_the_bounding_set() -> None:
    everything = f"CapBnd:\t{(1 << 41) - 1:016x}\n"
    lacks_sys_resource = f"CapBnd:\t{((1 << 41) - 1) & ~(1 << 24):016x}\n"
    lacks_two = f"CapBnd:\t{((1 << 41) - 1) & ~(1 << 24) & ~(1 << 16):016x}\n"
    assert missing_capabilities(lacks_sys_resource) == ["SYS_RESOURCE"]
    assert missing_capabilities(lacks_two) == ["SYS_MODULE", "SYS_RESOURCE"]
    assert missing_capabilities(everything) == ["SYS_RESOURCE"]


def test_inotify_warning_names_the_setting_and_the_fix(tmp_path: Path) -> None:
    sysctl = tmp_path / "max_user_instances"
    sysctl.write_text("128\n")
    warning = inotify_warning(sysctl)
    assert warning is not None
    assert "max_user_instances is 128" in warning
    assert "sysctl -w fs.inotify.max_user_instances=512" in warning
    sysctl.write_text("8192\n")
    assert inotify_warning(sysctl) is None
    assert inotify_warning(tmp_path / "missing") is None
