"""The wheels a host installs the agent from: vpnfleet and every dependency, at the
versions the controller itself runs, built on the controller without the network.

Each dependency is packed back into a wheel from its installed files (the RECORD of its
``.dist-info`` lists them, its ``WHEEL`` file gives the tags); vpnfleet itself is built
from its source tree when the controller runs from one (an editable install), else
packed like the others. pip is shipped too, so the host needs no pip, no ensurepip and
no index: it runs pip from the shipped wheel with ``--no-index``.

The set is kept in a cache directory named by vpnfleet's version, the Python version and
the machine (``vpnfleet-0.1.0-cp311-x86_64``), built once and reused.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

PROJECT = "vpnfleet"
INSTALLER = "pip"
# Files pip writes at install time that describe that install, not the package.
_INSTALL_ONLY = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}
SOURCE_PARTS = ("pyproject.toml", "README.md", "controller", "agent", "protos")


class WheelError(Exception):
    """The controller cannot make the wheel set (what to do is in the message)."""


@dataclass(frozen=True, slots=True)
class WheelSet:
    version: str
    python: tuple[int, int]
    machine: str
    directory: Path

    @property
    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.whl"))

    @property
    def pip(self) -> Path:
        found = [f for f in self.files if f.name.startswith("pip-")]
        if len(found) != 1:
            raise WheelError(f"{self.directory} holds {len(found)} pip wheels, not one")
        return found[0]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def cache_key(version: str, python: tuple[int, int], machine: str) -> str:
    return f"{PROJECT}-{version}-cp{python[0]}{python[1]}-{machine}"


def controller_target() -> tuple[str, tuple[int, int], str]:
    """vpnfleet's version, the Python version and the machine the controller runs."""
    return (
        importlib.metadata.version(PROJECT),
        (sys.version_info.major, sys.version_info.minor),
        platform.machine(),
    )


def dependencies(requires: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``requires`` names, recursively (no extras)."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(requires)
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _normalize(req.name)
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise WheelError(
                f"{name} ({req}) is not installed beside the controller: reinstall vpnfleet "
                "(pip install vpnfleet) so its dependencies are there to ship"
            ) from None
        seen[name] = dist
        todo.extend(dist.requires or ())
    return [seen[n] for n in sorted(seen)]


def wheel_requires(wheel: Path) -> list[str]:
    """The Requires-Dist of a wheel (extras' requirements carry their marker)."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(name).decode()
    return [
        ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Requires-Dist:")
    ]


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def compressed_tags(wheel_text: str) -> str:
    tags = [ln.split(":", 1)[1].strip() for ln in wheel_text.splitlines() if ln.startswith("Tag:")]
    if not tags:
        raise WheelError("installed WHEEL metadata names no tag")
    parts = [t.split("-") for t in tags]
    # A wheel's name carries its tag set compressed: each field's values joined by dots.
    return "-".join(".".join(dict.fromkeys(p[i] for p in parts)) for i in range(3))


def repack(dist: importlib.metadata.Distribution, directory: Path) -> Path:
    """A wheel of ``dist`` made from its installed files."""
    wheel_text = dist.read_text("WHEEL")
    if wheel_text is None or dist.files is None:
        raise WheelError(
            f"{dist.metadata['Name']} was not installed from a wheel (no WHEEL or RECORD): "
            "reinstall it with pip"
        )
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    out = directory / f"{name}-{dist.version}-{compressed_tags(wheel_text)}.whl"
    records: list[tuple[str, str, str]] = []
    dist_info = ""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for member in dist.files:
            path = member.as_posix()
            if path.startswith("..") or "__pycache__/" in path or path.endswith(".pyc"):
                continue  # console scripts (pip makes them again) and bytecode
            top = path.split("/", 1)[0]
            if top.endswith(".dist-info"):
                dist_info = top
                if path.split("/", 1)[1] in _INSTALL_ONLY:
                    continue
            data = Path(str(dist.locate_file(member))).read_bytes()
            zf.writestr(path, data)
            records.append((path, _record_hash(data), str(len(data))))
        if not dist_info:
            raise WheelError(f"{dist.metadata['Name']}: no .dist-info among its files")
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerows(records)
        writer.writerow((f"{dist_info}/RECORD", "", ""))
        zf.writestr(f"{dist_info}/RECORD", buf.getvalue())
    return out


def source_tree() -> Path | None:
    """vpnfleet's source checkout, when the controller runs from one (editable)."""
    import vpnfleet.controller

    root = Path(vpnfleet.controller.__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "agent").is_dir():
        return root
    return None


def build_own_wheel(root: Path, directory: Path) -> Path:
    """vpnfleet's wheel from its source, built in a copy so the tree stays clean."""
    with tempfile.TemporaryDirectory(prefix="vpnfleet-src-") as tmp:
        copy = Path(tmp) / "src"
        copy.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
        for part in SOURCE_PARTS:
            src = root / part
            if src.is_dir():
                shutil.copytree(src, copy / part, ignore=ignore)
            else:
                shutil.copy2(src, copy / part)
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-index",
                "--no-build-isolation",
                "--disable-pip-version-check",
                "--quiet",
                "--wheel-dir",
                str(directory),
                str(copy),
            ],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise WheelError(
                f"building vpnfleet's wheel from {root} failed: "
                f"{(res.stdout + res.stderr).strip()[-600:]}"
            )
    found = sorted(directory.glob(f"{PROJECT}-*.whl"))
    if len(found) != 1:
        raise WheelError(f"building vpnfleet's wheel left {len(found)} wheels in {directory}")
    return found[0]


def planned_wheel_set(cache: Path) -> WheelSet:
    """The wheel set for the controller's own version, as it is or will be cached."""
    version, python, machine = controller_target()
    return WheelSet(version, python, machine, cache / cache_key(version, python, machine))


def wheel_set(cache: Path) -> WheelSet:
    """The cached wheel set for the controller's own version, made when missing."""
    wheels = planned_wheel_set(cache)
    final = wheels.directory
    if final.is_dir():
        return wheels
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".building-", dir=cache) as tmp:
        work = Path(tmp) / "wheels"
        work.mkdir()
        root = source_tree()
        if root is not None:
            requires = wheel_requires(build_own_wheel(root, work))
        else:
            own = importlib.metadata.distribution(PROJECT)
            repack(own, work)
            requires = list(own.requires or ())
        for dist in dependencies([*requires, INSTALLER]):
            repack(dist, work)
        os.chmod(work, 0o755)
        try:
            work.rename(final)
        except OSError:
            if not final.is_dir():  # not another run that finished first
                raise
    return wheels
