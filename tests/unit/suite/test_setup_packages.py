"""Every program and strongSwan plugin the lab and the tests use comes from a Debian
package that `scripts/setup --test` installs by name, or from one such a package depends
on. setup installs without recommended packages, so a package that only arrives as a
recommendation (libstrongswan-standard-plugins, which has charon's gcm and openssl
plugins, for one) must be named: a machine that already has it would hide the gap.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vpnfleet.controller.lab.external import CHARON, PLUGINS

REPO = Path(__file__).resolve().parents[3]
PROGRAMS = (
    "ip",
    "nft",
    "ping",
    "swanctl",
    "pki",
    "tshark",
    "dumpcap",
    "tcpdump",
    "iperf3",
    "sshd",
    "sudo",
    "ssh-keygen",
)


def setup_packages() -> set[str]:
    text = (REPO / "scripts" / "setup").read_text()
    names: set[str] = set()
    for body in re.findall(r"pkgs\+?=\((.*?)\)", text, re.S):
        for line in body.splitlines():
            names.update(line.split("#", 1)[0].split())
    return names


def installed() -> tuple[dict[str, str], dict[str, set[str]]]:
    """Installed packages with their Depends and Pre-Depends; virtual names they provide."""
    out = subprocess.run(
        [
            "dpkg-query",
            "-W",
            "-f",
            "${Package}\t${Status}\t${Pre-Depends}, ${Depends}\t${Provides}\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    depends: dict[str, str] = {}
    provides: dict[str, set[str]] = {}
    for line in out.splitlines():
        name, status, deps, provided = line.split("\t")
        if not status.endswith(" installed"):
            continue
        depends[name] = deps
        for virtual in provided.split(","):
            if virtual.strip():
                provides.setdefault(virtual.split()[0], set()).add(name)
    return depends, provides


def closure(roots: set[str]) -> set[str]:
    """What installing ``roots`` without recommends brings: their hard dependencies."""
    depends, provides = installed()
    seen: set[str] = set()
    todo = [r for r in roots if r in depends]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for clause in depends[name].split(","):
            for alternative in clause.split("|"):
                dep = alternative.split()[0].split(":")[0] if alternative.strip() else ""
                found = ({dep} if dep in depends else set()) | provides.get(dep, set())
                if found:
                    todo.extend(found)
                    break
    return seen


def owner(path: Path) -> str:
    """The package that ships ``path``, under /usr or (merged /usr) the root's names."""
    names = {str(path), str(path.resolve())}
    names |= {n.removeprefix("/usr") for n in names if n.startswith("/usr/")}
    for name in sorted(names):
        run = subprocess.run(["dpkg", "-S", name], capture_output=True, text=True)
        if run.returncode == 0:
            return run.stdout.split(":", 1)[0]
    raise AssertionError(f"no Debian package owns {path}")


def test_every_program_and_plugin_comes_from_a_named_package() -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian machine")
    named = setup_packages()
    brought = closure(named)
    files = [CHARON] + [
        Path(f"/usr/lib/ipsec/plugins/libstrongswan-{p}.so") for p in PLUGINS.split()
    ]
    for program in PROGRAMS:
        found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin:/usr/bin:/bin")
        assert found, f"{program} is not installed: scripts/setup --test must install it"
        files.append(Path(found))
    missing = {str(f): owner(f) for f in files if owner(f) not in brought}
    assert not missing, f"scripts/setup --test does not install these by name: {missing}"
