r"""Build (or reuse) the k3s node double's image, with no registry needed.

The image is laid out like ``rancher/k3s``: ``ENTRYPOINT ["/bin/k3s"]``,
``CMD ["agent"]``, the same four ``VOLUME``\ s, ``/bin/ctr`` and ``/bin/sh``.
Inside are Debian packages only (python3, python3-cryptography, python3-yaml;
iptables for the Services' ClusterIPs, as k3s' image has; wget, which pods'
commands use as busybox' ``wget``) and this package, installed as the
top-level package ``k3s_double``. The label
``org.opencontainers.image.version`` names the k3s release it claims, which
pytest-k3s reads when a tag names none.

The base is ``debian:bookworm-slim`` when the engine has it or can pull it;
otherwise a local ``pytest-k3s-base:bookworm`` made with ``debootstrap
--variant=minbase`` and ``docker import`` (reused when present). The tag is a
hash of everything copied into the image plus the Dockerfile, so editing the
double's sources yields a new image, and an unchanged tree reuses the old one.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from k3s_double.constants import DEFAULT_VERSION


if TYPE_CHECKING:
    import docker


REPOSITORY = "pytest-k3s-double"
DEBIAN = "debian:bookworm-slim"
LOCAL_BASE = "pytest-k3s-base:bookworm"
PACKAGE_DIR = Path(__file__).resolve().parent

_DOCKERFILE = """\
FROM {base}
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      python3 python3-cryptography python3-yaml ca-certificates \\
      iptables wget >/dev/null \\
 && rm -rf /var/lib/apt/lists/*
COPY k3s_double /opt/k3s_double
COPY k3s ctr /usr/local/lib/k3s-double/
RUN ln -sf /usr/local/lib/k3s-double/k3s /bin/k3s \\
 && ln -sf /usr/local/lib/k3s-double/ctr /bin/ctr \\
 && mkdir -p /bin/aux \\
 && python3 -m compileall -q /opt/k3s_double \\
 && /bin/k3s --help >/dev/null
ENV PATH="$PATH:/bin/aux" \\
    CRI_CONFIG_FILE="/var/lib/rancher/k3s/agent/etc/crictl.yaml"
LABEL org.opencontainers.image.version="{version}"
VOLUME /var/lib/kubelet
VOLUME /var/lib/rancher/k3s
VOLUME /var/lib/cni
VOLUME /var/log
ENTRYPOINT ["/bin/k3s"]
CMD ["agent"]
"""

_LAUNCHER = """\
#!/usr/bin/python3
import sys
sys.path.insert(0, "/opt")
from k3s_double.node.cli import main
sys.exit(main(["{name}", *sys.argv[1:]]))
"""


def _progress(text: str) -> None:
    sys.stderr.write(f"k3s double: {text}\n")
    sys.stderr.flush()


def _sources(source_dir: Path) -> list[Path]:
    """The double's own modules: its tests stay out of the image and its tag."""
    return sorted(
        path
        for path in source_dir.rglob("*.py")
        if not {"__pycache__", "tests"} & set(path.relative_to(source_dir).parts)
    )


def _have(client: docker.DockerClient, ref: str) -> bool:
    import docker

    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def _debootstrap_base(client: docker.DockerClient) -> str:
    """Make ``pytest-k3s-base:bookworm`` from a minimal debootstrap tree."""
    _progress(f"creating {LOCAL_BASE} with debootstrap (about half a minute)")
    with tempfile.TemporaryDirectory(prefix="k3s-double-base-") as tmp:
        root = os.path.join(tmp, "root")
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", root],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        archive = os.path.join(tmp, "root.tar")
        subprocess.run(
            ["tar", "-C", root, "--numeric-owner", "-cf", archive, "."], check=True
        )
        repository, tag = LOCAL_BASE.split(":")
        client.api.import_image_from_file(archive, repository=repository, tag=tag)
    return LOCAL_BASE


def base_image(client: docker.DockerClient) -> str:
    """The base to build on: Debian's image if at hand, else a local one."""
    import docker

    if _have(client, DEBIAN):
        return DEBIAN
    if _have(client, LOCAL_BASE):
        return LOCAL_BASE
    try:
        client.images.pull(DEBIAN)
        return DEBIAN
    except docker.errors.APIError:
        pass
    if shutil.which("debootstrap") is None:
        raise RuntimeError(
            f"cannot get a base image: {DEBIAN} is not available and "
            "debootstrap is not installed"
        )
    return _debootstrap_base(client)


def _context(source_dir: Path, base: str, directory: Path) -> str:
    """Fill the build context; return the content hash that names the image."""
    digest = hashlib.sha256()
    dockerfile = _DOCKERFILE.format(base=base, version=DEFAULT_VERSION)
    files: dict[str, bytes] = {"Dockerfile": dockerfile.encode()}
    for name in ("k3s", "ctr"):
        files[name] = _LAUNCHER.format(name=name).encode()
    for path in _sources(source_dir):
        relative = path.relative_to(source_dir).as_posix()
        files[f"k3s_double/{relative}"] = path.read_bytes()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[name])
        if name in ("k3s", "ctr"):
            target.chmod(0o755)
    return digest.hexdigest()[:16]


def ensure_image(source_dir: Path | None = None) -> str:
    """Build the image unless it exists already; return its reference."""
    import docker

    source = source_dir or PACKAGE_DIR
    client = docker.from_env(timeout=600)
    try:
        base = base_image(client)
        with tempfile.TemporaryDirectory(prefix="k3s-double-build-") as tmp:
            tag = _context(source, base, Path(tmp))
            ref = f"{REPOSITORY}:{tag}"
            if _have(client, ref):
                return ref
            _progress(f"building {ref} from {base}")
            start = time.monotonic()
            log = io.StringIO()
            for event in client.api.build(
                path=tmp, tag=ref, rm=True, forcerm=True, decode=True, pull=False
            ):
                if "stream" in event:
                    log.write(event["stream"])
                if "error" in event:
                    raise RuntimeError(
                        f"building {ref} failed: {event['error']}\n"
                        + log.getvalue()[-4000:]
                    )
            if not _have(client, ref):
                raise RuntimeError(f"building {ref} failed:\n{log.getvalue()[-4000:]}")
            _progress(f"built {ref} in {time.monotonic() - start:.0f}s")
            return ref
    finally:
        client.close()


#: Where the double's images for given k3s releases are tagged, as
#: ``rancher/k3s`` tags them (``v1.34.2-k3s1``): tests point
#: ``--k3s-repository`` here, so a version matrix runs on the double.
RELEASES_REPOSITORY = "pytest-k3s-double/k3s"
_BUILT_FROM = "io.pytest-k3s.double-image"


def ensure_release_image(double: str, version: str) -> str:
    """The double playing k3s ``version`` (``v1.34.2+k3s1``), tagged as that release.

    A thin image ``FROM`` the double with ``K3S_DOUBLE_VERSION`` set, so its
    ``/version``, Nodes and log lines say ``version``; rebuilt when the double
    changed. Returns its reference, ``<RELEASES_REPOSITORY>:v1.34.2-k3s1``.
    """
    import docker

    client = docker.from_env(timeout=600)
    try:
        ref = f"{RELEASES_REPOSITORY}:{version.replace('+', '-')}"
        double_id = client.images.get(double).id
        try:
            built = client.images.get(ref)
        except docker.errors.ImageNotFound:
            built = None
        if built is not None and built.labels.get(_BUILT_FROM) == double_id:
            return ref
        dockerfile = (
            f"FROM {double}\n"
            f"ENV K3S_DOUBLE_VERSION={version}\n"
            f'LABEL org.opencontainers.image.version="{version}" '
            f'{_BUILT_FROM}="{double_id}"\n'
        )
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, rm=True)
        return ref
    finally:
        client.close()


def ensure_service_image(
    repository: str, dockerfile: str, files: dict[str, str]
) -> str:
    """Build an image of Debian packages on the double's base unless it exists.

    ``dockerfile`` has ``{base}`` where the base goes; ``files`` (name:
    text) are its build context, a ``.sh`` one executable. The tag is a hash
    of all of it, so an edit builds anew. Return the reference.
    """
    import docker

    client = docker.from_env(timeout=600)
    try:
        base = base_image(client)
        text = dockerfile.format(base=base)
        source = text + "".join(files[name] for name in sorted(files))
        ref = f"{repository}:{hashlib.sha256(source.encode()).hexdigest()[:16]}"
        if _have(client, ref):
            return ref
        _progress(f"building {ref} from {base}")
        with tempfile.TemporaryDirectory(prefix=f"{repository}-build-") as tmp:
            Path(tmp, "Dockerfile").write_text(text)
            for name, content in files.items():
                path = Path(tmp, name)
                path.write_text(content)
                if name.endswith(".sh"):
                    path.chmod(0o755)
            for event in client.api.build(
                path=tmp, tag=ref, rm=True, forcerm=True, decode=True, pull=False
            ):
                if "error" in event:
                    raise RuntimeError(f"building {ref} failed: {event['error']}")
        return ref
    finally:
        client.close()
