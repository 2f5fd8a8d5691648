"""Host policy: the capability fallback's set and the inotify advice."""

from __future__ import annotations

from pathlib import Path

from pytest_k3s.engine.host_policy import REMOUNT_FAILED
from pytest_k3s.engine.host_policy import inotify_warning
from pytest_k3s.engine.host_policy import missing_capabilities
from pytest_k3s.engine.host_policy import privilege_options
from pytest_k3s.engine.host_policy import remount_failure
from pytest_k3s.engine.host_policy import unknown_capability


def test_missing_capabilities_reads_the_bounding_set() -> None:
    everything = f"CapBnd:\t{(1 << 41) - 1:016x}\n"
    lacks_sys_resource = f"CapBnd:\t{((1 << 41) - 1) & ~(1 << 24):016x}\n"
    lacks_two = f"CapBnd:\t{((1 << 41) - 1) & ~(1 << 24) & ~(1 << 16):016x}\n"
    assert missing_capabilities(lacks_sys_resource) == ["SYS_RESOURCE"]
    assert missing_capabilities(lacks_two) == ["SYS_MODULE", "SYS_RESOURCE"]
    # The engine's answer is taken as it is: a full set drops nothing.
    assert missing_capabilities(everything) == []
    assert missing_capabilities("Name:\tcontainerd-shim\n") is None


def test_unknown_capability_names_what_the_engine_rejected() -> None:
    message = 'invalid CapDrop: unknown capability: "CAP_PERFMON"'
    assert unknown_capability(message) == "PERFMON"
    assert unknown_capability("unable to apply caps: operation not permitted") is None


def test_fallback_drops_the_engines_answer_or_the_usual_suspect() -> None:
    assert privilege_options(False, cap_drop=["BPF"])["cap_drop"] == ["BPF"]
    assert privilege_options(False, cap_drop=[])["cap_drop"] == []
    assert privilege_options(False)["cap_drop"] == ["SYS_RESOURCE"]


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


def test_fallback_remounts_sys_and_cgroups_then_execs_k3s() -> None:
    options = privilege_options(False, local=False)
    entrypoint = options["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    assert entrypoint[3] == "k3s"  # $0; the node's command becomes "$@"
    script = entrypoint[2]
    assert "remount /sys\n" in script
    assert "/sys/fs/cgroup|/sys/fs/cgroup/*" in script
    assert script.rstrip().endswith('exec /bin/k3s "$@"')
    assert "entrypoint" not in privilege_options(True)


def test_remount_failure_is_found_in_the_log() -> None:
    lines = ["x", f"{REMOUNT_FAILED} /sys/fs/cgroup/cpu writable: permission denied"]
    assert remount_failure(lines) == lines[1]
    assert remount_failure(["k3s is up and running"]) is None
