"""Enrol the agent on a host over SSH: its key pairs are made on the host
(``vpnfleet-agent init``), only the CSRs come back over the SSH channel, the controller
signs them with the fleet CA (checking they name the host), and the certificates go back
(``vpnfleet-agent install-certs``, which checks them against the host's keys). Private
keys never leave the host.

A host is enrolled already when its certificates are the fleet CA's, name the host and
carry the public keys of its CSRs, and its ca.pem is the fleet CA in force.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..reports.results import ChangeLine
from ..statedir import pki
from .install import AgentLayout
from .session import HostSession

# The agent's default state directory and file names (vpnfleet-agent init); the
# controller never imports the agent, so they are written here.
AGENT_STATE_DIR = PurePosixPath("/var/lib/vpnfleet-agent")
FILES = ("tls.csr", "ike.csr", "tls.pem", "ike.pem", "ca.pem", "tls.key", "ike.key")
_MARK = "==vpnfleet-file "


class EnrolError(Exception):
    """The host could not be enrolled (the message says why)."""


@dataclass(frozen=True, slots=True)
class EnrolOutcome:
    changes: tuple[ChangeLine, ...]
    summary: str


def read_script(state_dir: PurePosixPath) -> str:
    lines = []
    for name in FILES:
        path = shlex.quote(str(state_dir / name))
        if name.endswith(".key"):  # whether it exists, never its content
            lines.append(f'[ -e {path} ] && echo "{_MARK}{name}"')
        else:
            lines.append(f'[ -e {path} ] && echo "{_MARK}{name}" && cat {path}')
    return "\n".join(lines) + "\ntrue\n"


def parse_files(text: str) -> dict[str, bytes]:
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines(keepends=True):
        if line.startswith(_MARK):
            current = files.setdefault(line[len(_MARK) :].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "".join(lines).encode() for name, lines in files.items()}


def _public(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def enrolled(files: dict[str, bytes], host: str, ca_pem: bytes) -> bool:
    """Whether the host's certificates are the fleet CA's, for its name and its keys."""
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
        if x509.load_pem_x509_certificate(files["ca.pem"]) != ca:
            return False
        for kind in ("tls", "ike"):
            cert = x509.load_pem_x509_certificate(files[f"{kind}.pem"])
            csr = x509.load_pem_x509_csr(files[f"{kind}.csr"])
            cert.verify_directly_issued_by(ca)
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            if host not in names.get_values_for_type(x509.DNSName):
                return False
            if _public(cert.public_key()) != _public(csr.public_key()):
                return False
    except (KeyError, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    return True


async def enrol_agent(
    session: HostSession,
    layout: AgentLayout,
    state: Path,
    host: str,
    address: str | None,
    check: bool,
) -> EnrolOutcome:
    state_dir = AGENT_STATE_DIR
    try:
        _ca_cert, _ca_key, ca_pem = pki.load_ca(state)
    except pki.PkiError as exc:
        if not check:
            raise EnrolError(str(exc)) from None
        change = ChangeLine("agent", "certificates", "added", ("no fleet CA yet",))
        return EnrolOutcome((change,), f"would enrol as {host} (no fleet CA yet)")
    read = await session.run(read_script(state_dir), privileged=True)
    if not read.ok:
        raise EnrolError(f"cannot read {state_dir}: {read.error_line()}")
    files = parse_files(read.stdout)
    if enrolled(files, host, ca_pem):
        return EnrolOutcome((), f"enrolled as {host}")
    has_keys = "tls.key" in files and "ike.key" in files
    change = ChangeLine(
        "agent",
        "certificates",
        "added" if "tls.pem" not in files else "changed",
        (f"TLS and IKE certificates for {host} from the fleet CA",)
        + (() if has_keys else (f"key pairs made in {state_dir}",)),
    )
    if check:
        return EnrolOutcome((change,), f"would enrol as {host}")
    agent = shlex.quote(str(layout.agent))
    where = shlex.quote(str(state_dir))
    if not has_keys:
        made = await session.run(
            f"{agent} init --name {shlex.quote(host)} --state-dir {where}", privileged=True
        )
        if not made.ok:
            raise EnrolError(f"vpnfleet-agent init failed: {made.error_line()}")
        read = await session.run(read_script(state_dir), privileged=True)
        files = parse_files(read.stdout)
    if "tls.csr" not in files or "ike.csr" not in files:
        raise EnrolError(
            f"{state_dir} holds keys but no CSRs: remove its tls.key and ike.key, or run "
            "vpnfleet-agent init --force there, and bootstrap again"
        )
    try:
        tls_pem, ike_pem, ca_pem = pki.sign_agent_csrs(
            state, host, files["tls.csr"], files["ike.csr"], address
        )
    except pki.PkiError as exc:
        raise EnrolError(f"signing {host}'s CSRs: {exc}") from None
    made = await session.run("mktemp -d /tmp/vpnfleet-bootstrap.XXXXXX")
    if not made.ok:
        raise EnrolError(f"cannot make a temporary directory: {made.error_line()}")
    upload = made.stdout.strip()
    try:
        await session.write_files(
            upload, {"tls.pem": tls_pem, "ike.pem": ike_pem, "ca.pem": ca_pem}
        )
        d = shlex.quote(upload)
        res = await session.run(
            f"{agent} install-certs --state-dir {where} --tls-cert {d}/tls.pem "
            f"--ike-cert {d}/ike.pem --ca {d}/ca.pem",
            privileged=True,
        )
        if not res.ok:
            raise EnrolError(f"vpnfleet-agent install-certs failed: {res.error_line()}")
    finally:
        await session.run(f"rm -rf {shlex.quote(upload)}")
    return EnrolOutcome((change,), f"enrolled as {host}")
