"""Our IKE core against a real strongSwan charon (Debian 5.9) in network namespaces.

Each test gets fresh namespaces, a charon of its own and our driver, and removes all
of it in teardown (fixtures in charon.py use try/finally). What charon reports through
``swanctl --list-sas --raw`` is compared with what our events say.
"""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from tests.support.charon import (
    CHARON_ID,
    CHARON_NET,
    OUR_ID,
    OUR_NET,
    PSK,
    Charon,
    OurPeer,
    Topology,
    connection,
    driver_argv,
    interop_setup,
    our_spec,
    skip_reason,
)
from vpnfleet.agent.ike.proposals import IkeProposal

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]


def test_our_driver_runs_under_the_interpreter_running_the_tests(tmp_path: Path) -> None:
    """Whatever environment runs pytest runs our side too (not a fixed REPO/.venv)."""
    argv = driver_argv("vf-ns", tmp_path / "ours.json")
    assert argv[:4] == ["ip", "netns", "exec", "vf-ns"]
    assert argv[4] == sys.executable


# Our proposal -> (ESP proposal, what charon's raw listing says for the IKE SA).
PROPOSALS: dict[str, tuple[str, dict[str, str]]] = {
    "aes256gcm16-prfsha384-x25519": (
        "aes256gcm16",
        {
            "encr-alg": "AES_GCM_16",
            "encr-keysize": "256",
            "prf-alg": "PRF_HMAC_SHA2_384",
            "dh-group": "CURVE_25519",
        },
    ),
    "aes128-sha256-modp2048": (
        "aes128-sha256",
        {
            "encr-alg": "AES_CBC",
            "encr-keysize": "128",
            "integ-alg": "HMAC_SHA2_256_128",
            "prf-alg": "PRF_HMAC_SHA2_256",
            "dh-group": "MODP_2048",
        },
    ),
    "chacha20poly1305-prfsha256-ecp256": (
        "chacha20poly1305",
        {"encr-alg": "CHACHA20_POLY1305", "prf-alg": "PRF_HMAC_SHA2_256", "dh-group": "ECP_256"},
    ),
}
ESP_RAW = {
    "aes256gcm16": {"encr-alg": "AES_GCM_16", "encr-keysize": "256"},
    "aes128-sha256": {
        "encr-alg": "AES_CBC",
        "encr-keysize": "128",
        "integ-alg": "HMAC_SHA2_256_128",
    },
    "chacha20poly1305": {"encr-alg": "CHACHA20_POLY1305"},
}
DEFAULT = "aes256gcm16-prfsha384-x25519"


class Lab:
    def __init__(self, topology: Topology, charon: Charon, directory: Path) -> None:
        self.topology, self.charon, self.dir = topology, charon, directory
        self.ours: OurPeer | None = None

    def load(
        self,
        ike: str,
        *,
        charon_initiates: bool,
        certs: dict[str, str] | None = None,
        fragment_size: int | None = None,
    ) -> None:
        session = self.charon.session()
        if certs is None:
            session.load_shared({"type": "IKE", "data": PSK, "owners": [OUR_ID, CHARON_ID]})
        else:
            session.load_cert(
                {"type": "X509", "flag": "CA", "data": Path(certs["ca"]).read_bytes()}
            )
            session.load_cert(
                {"type": "X509", "flag": "NONE", "data": Path(certs["charon_cert"]).read_bytes()}
            )
            session.load_key({"type": "any", "data": Path(certs["charon_key"]).read_bytes()})
        esp = PROPOSALS[ike][0]
        conn = connection(ike, esp, initiator=charon_initiates, certs=certs is not None)
        if certs is not None:
            # vici takes the certificate itself, where swanctl.conf names a file.
            conn["net-ike"]["local"]["certs"] = [Path(certs["charon_cert"]).read_bytes()]
        if fragment_size is not None:
            conn["net-ike"]["fragmentation"] = "yes"  # RFC 7383, announced and used
        session.load_conn(conn)
        ours = {k: v for k, v in (certs or {}).items() if k in ("cert", "key", "ca")}
        spec = our_spec(ike, esp, certs=ours)
        if fragment_size is not None:
            spec["fragment_size"] = fragment_size  # IkeConfig.fragment_size, section 2.5.1
        self.ours = OurPeer(self.topology.our_ns, self.dir, spec)

    @property
    def peer(self) -> OurPeer:
        assert self.ours is not None
        return self.ours

    def establish(self, *, charon_initiates: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        if charon_initiates:
            self.charon.swanctl(
                "--initiate", "--ike", "net-ike", "--child", "net", "--timeout", "10"
            )
        else:
            self.peer.command("initiate")
        ike = self.peer.wait("IkeSaEstablished")
        child = self.peer.wait("ChildSaEstablished")
        return ike, child

    def charon_sa(self) -> dict[str, Any]:
        sas = [s for s in self.charon.list_sas() if s["state"] == "ESTABLISHED"]
        assert len(sas) == 1, sas
        return sas[0]

    def charon_children(self) -> list[dict[str, Any]]:
        return [
            c for c in self.charon_sa().get("child-sas", {}).values() if c["state"] == "INSTALLED"
        ]


@pytest.fixture
def lab() -> Iterator[Lab]:
    with interop_setup(log_level=4) as (topology, charon, directory):
        lab = Lab(topology, charon, directory)
        try:
            yield lab
        finally:
            if lab.ours is not None:
                lab.ours.close()


def assert_same_sa(
    lab: Lab, ike_event: dict[str, Any], child_event: dict[str, Any], proposal: str
) -> None:
    sa = lab.charon_sa()
    assert (sa["initiator-spi"], sa["responder-spi"]) == (ike_event["spi_i"], ike_event["spi_r"])
    for key, value in PROPOSALS[proposal][1].items():
        assert sa[key] == value, (key, sa)
    assert ike_event["proposal"] == str(IkeProposal.parse(proposal))
    assert (sa["local-id"], sa["remote-id"]) == (CHARON_ID, OUR_ID)
    (child,) = lab.charon_children()
    assert child["spi-in"] == child_event["spi_out"] and child["spi-out"] == child_event["spi_in"]
    for key, value in ESP_RAW[PROPOSALS[proposal][0]].items():
        assert child[key] == value, (key, child)
    assert child["mode"] == "TUNNEL" and child["encap"] == "yes"
    assert (child["local-ts"], child["remote-ts"]) == ([CHARON_NET], [OUR_NET])
    ours_local = [ts["start_address"] for ts in child_event["local_ts"]]
    ours_remote = [ts["start_address"] for ts in child_event["remote_ts"]]
    assert (ours_local, ours_remote) == (["10.1.0.0"], ["10.2.0.0"])


@pytest.mark.parametrize("proposal", list(PROPOSALS))
def test_our_initiator_to_charon_responder_psk(lab: Lab, proposal: str) -> None:
    lab.load(proposal, charon_initiates=False)
    ike, child = lab.establish(charon_initiates=False)
    assert_same_sa(lab, ike, child, proposal)
    assert "initiator" not in lab.charon_sa()  # charon lists initiator=yes only when it was


@pytest.mark.parametrize("proposal", list(PROPOSALS))
def test_charon_initiator_to_our_responder_psk(lab: Lab, proposal: str) -> None:
    lab.load(proposal, charon_initiates=True)
    ike, child = lab.establish(charon_initiates=True)
    assert_same_sa(lab, ike, child, proposal)
    assert lab.charon_sa().get("initiator") == "yes"


def _certificates(directory: Path, kind: str = "ecdsa", ca_kind: str = "ecdsa") -> dict[str, str]:
    """A CA (``ca_kind``: ecdsa or ed25519) and one IKE certificate each (``kind``)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = (
        ed25519.Ed25519PrivateKey.generate()
        if ca_kind == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )
    ca_hash = None if ca_kind == "ed25519" else hashes.SHA256()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vpnfleet interop CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, ca_hash)
    )
    out = {"ca": str(directory / "ca.pem")}
    Path(out["ca"]).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, identity in (("ours", OUR_ID), ("charon", CHARON_ID)):
        key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
        if kind == "ecdsa":
            key = ec.generate_private_key(ec.SECP256R1())
        elif kind == "ed25519":
            key = ed25519.Ed25519PrivateKey.generate()
        else:
            key = rsa.generate_private_key(65537, 2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(identity)]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, ca_hash)
        )
        cert_path, key_path = directory / f"{who}.pem", directory / f"{who}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        prefix = "" if who == "ours" else "charon_"
        out[f"{prefix}cert"], out[f"{prefix}key"] = str(cert_path), str(key_path)
    return out


@pytest.mark.parametrize(
    ("kind", "scheme"),
    [
        ("ecdsa", "ECDSA_WITH_SHA256_DER"),
        ("ed25519", "ED25519"),
        ("rsa", "RSA_EMSA_PSS_SHA2_256_SALT_32"),
    ],
)
@pytest.mark.parametrize("charon_initiates", [False, True], ids=["ours-init", "charon-init"])
def test_certificates(lab: Lab, charon_initiates: bool, kind: str, scheme: str) -> None:
    """RFC 7427 signatures (RFC 8420 for Ed25519) with a CA-issued chain both ways."""
    lab.load(DEFAULT, charon_initiates=charon_initiates, certs=_certificates(lab.dir, kind))
    ike, child = lab.establish(charon_initiates=charon_initiates)
    assert_same_sa(lab, ike, child, DEFAULT)
    log = lab.charon.log_text()
    assert f"authentication of 'ours.example' with {scheme} successful" in log


@pytest.mark.parametrize("charon_initiates", [False, True], ids=["ours-init", "charon-init"])
def test_ed25519_ca_and_certificates(lab: Lab, charon_initiates: bool) -> None:
    """strongSwan's net2net-ed25519 scenario: an Ed25519 CA (RFC 8410) signs Ed25519 IKE
    certificates for both sides; each side checks the other's chain under it and its
    RFC 8420 AUTH signature."""
    certs = _certificates(lab.dir, "ed25519", ca_kind="ed25519")
    lab.load(DEFAULT, charon_initiates=charon_initiates, certs=certs)
    ike, child = lab.establish(charon_initiates=charon_initiates)
    assert_same_sa(lab, ike, child, DEFAULT)
    log = lab.charon.log_text()
    assert "authentication of 'ours.example' with ED25519 successful" in log
    assert 'using trusted ca certificate "CN=vpnfleet interop CA"' in log
    assert ike["remote_id"] == CHARON_ID


FRAGMENT_SIZE = 576
"""RFC 7383 section 2.5.1's IPv4 size: RSA certificate IKE_AUTH messages exceed it."""


@pytest.fixture
def fragment_lab() -> Iterator[Lab]:
    """A lab whose charon fragments at FRAGMENT_SIZE too (strongswan.conf fragment_size)."""
    with interop_setup(log_level=2, fragment_size=FRAGMENT_SIZE) as (topology, charon, directory):
        lab = Lab(topology, charon, directory)
        try:
            yield lab
        finally:
            if lab.ours is not None:
                lab.ours.close()


@pytest.mark.parametrize("charon_initiates", [False, True], ids=["ours-init", "charon-init"])
def test_fragmented_certificate_exchange(fragment_lab: Lab, charon_initiates: bool) -> None:
    """RFC 7383: with both sides at a 576-byte datagram size, the RSA certificate IKE_AUTH
    crosses as encrypted fragments both ways (section 2.5) and each side reassembles the
    other's (section 2.6); charon lists the SA as established."""
    lab = fragment_lab
    certs = _certificates(lab.dir, "rsa")
    lab.load(DEFAULT, charon_initiates=charon_initiates, certs=certs, fragment_size=FRAGMENT_SIZE)
    ike, child = lab.establish(charon_initiates=charon_initiates)
    assert_same_sa(lab, ike, child, DEFAULT)
    log = lab.charon.log_text()
    assert "authentication of 'ours.example' with RSA_EMSA_PSS_SHA2_256_SALT_32 successful" in log
    ours_kind = "request" if not charon_initiates else "response"
    theirs_kind = "response" if not charon_initiates else "request"
    # charon saw our IKE_AUTH message in fragments and put it back together ...
    received = re.findall(rf"parsed IKE_AUTH {ours_kind} 1 \[ EF\((\d+)/(\d+)\) \]", log)
    assert received and {int(total) for _, total in received} == {len(received)}, received
    assert "reassembled fragmented IKE message" in log
    # ... and sent its own in fragments, which we reassembled (or the SA would not be up).
    sent = re.findall(rf"generating IKE_AUTH {theirs_kind} 1 \[ EF\((\d+)/(\d+)\) \]", log)
    assert len(sent) > 1, sent
    # Section 2.5.1: every datagram we sent fits 576 bytes with IPv4 and UDP headers and
    # the non-ESP marker (charon logs the UDP payload after the marker).
    sizes = [
        int(n)
        for n in re.findall(r"received packet: from 192\.0\.2\.1\[\d+\] .*\((\d+) bytes\)", log)
    ]
    assert sizes and max(sizes) + 20 + 8 + 4 <= FRAGMENT_SIZE, sizes


@pytest.mark.parametrize("by", ["ours", "charon"])
def test_child_rekey(lab: Lab, by: str) -> None:
    lab.load(DEFAULT, charon_initiates=False)
    ike, child = lab.establish(charon_initiates=False)
    if by == "ours":
        lab.peer.command("rekey_child")
    else:
        lab.charon.swanctl("--rekey", "--child", "net")
    rekeyed = lab.peer.wait("ChildSaRekeyed")
    deleted = lab.peer.wait("ChildSaDeleted")
    assert rekeyed["old_spi_in"] == child["spi_in"] and deleted["spi_in"] == child["spi_in"]
    assert deleted["reason"] == "rekeyed"
    new = rekeyed["new"]
    (installed,) = lab.charon_children()
    assert installed["spi-in"] == new["spi_out"] and installed["spi-out"] == new["spi_in"]
    assert (installed["local-ts"], installed["remote-ts"]) == ([CHARON_NET], [OUR_NET])
    sa = lab.charon_sa()
    assert (sa["initiator-spi"], sa["responder-spi"]) == (ike["spi_i"], ike["spi_r"])


@pytest.mark.parametrize("by", ["ours", "charon"])
def test_ike_rekey(lab: Lab, by: str) -> None:
    lab.load(DEFAULT, charon_initiates=False)
    ike, child = lab.establish(charon_initiates=False)
    if by == "ours":
        lab.peer.command("rekey_ike")
    else:
        lab.charon.swanctl("--rekey", "--ike", "net-ike")
    rekeyed = lab.peer.wait("IkeSaRekeyed")
    deleted = lab.peer.wait("IkeSaDeleted")
    assert (deleted["spi_i"], deleted["spi_r"]) == (ike["spi_i"], ike["spi_r"])
    assert deleted["reason"] == "rekeyed"
    sa = lab.charon_sa()
    assert (sa["initiator-spi"], sa["responder-spi"]) == (
        rekeyed["new_spi_i"],
        rekeyed["new_spi_r"],
    )
    assert sa["initiator-spi"] != ike["spi_i"]
    # The child moved over unchanged.
    (installed,) = lab.charon_children()
    assert installed["spi-in"] == child["spi_out"]
    # And the new IKE SA works: a child rekey through it.
    lab.peer.command("rekey_child")
    lab.peer.wait("ChildSaRekeyed")


@pytest.mark.parametrize("by", ["ours", "charon"])
def test_child_delete(lab: Lab, by: str) -> None:
    lab.load(DEFAULT, charon_initiates=False)
    ike, child = lab.establish(charon_initiates=False)
    if by == "ours":
        lab.peer.command("delete_child")
    else:
        lab.charon.swanctl("--terminate", "--child", "net", "--timeout", "10")
    deleted = lab.peer.wait("ChildSaDeleted")
    assert deleted["spi_in"] == child["spi_in"]
    assert deleted["reason"] == ("deleted by us" if by == "ours" else "deleted by peer")
    assert lab.charon_children() == []
    assert lab.charon_sa()["initiator-spi"] == ike["spi_i"]


@pytest.mark.parametrize("by", ["ours", "charon"])
def test_ike_delete(lab: Lab, by: str) -> None:
    lab.load(DEFAULT, charon_initiates=False)
    ike, _ = lab.establish(charon_initiates=False)
    if by == "ours":
        lab.peer.command("delete_ike")
    else:
        lab.charon.swanctl("--terminate", "--ike", "net-ike", "--timeout", "10")
    deleted = lab.peer.wait("IkeSaDeleted")
    assert (deleted["spi_i"], deleted["spi_r"]) == (ike["spi_i"], ike["spi_r"])
    assert deleted["reason"] == ("deleted by us" if by == "ours" else "deleted by peer")
    assert lab.charon.list_sas() == []


def charon_secrets(log: str) -> dict[str, list[bytes]]:
    """Every ``name => N bytes @ addr`` hex dump in a level-4 charon log."""
    found: dict[str, list[bytes]] = {}
    lines = log.splitlines()
    for index, line in enumerate(lines):
        match = re.search(r"\] (.+?) => (\d+) bytes @", line)
        if not match:
            continue
        size, data = int(match.group(2)), bytearray()
        for dump in lines[index + 1 :]:
            row = re.search(r"\]\s+\d+: ((?:[0-9A-F]{2} )+)", dump + " ")
            if not row or len(data) >= size:
                break
            data += bytes.fromhex(row.group(1)[: 3 * 16])
        found.setdefault(match.group(1), []).append(bytes(data[:size]))
    return found


def test_derived_keys_match_charons_log(lab: Lab) -> None:
    """charon at log level 4 prints every IKE and child key it derives (RFC 7296 2.14,
    2.17); ours must be the same bytes."""
    proposal = "aes128-sha256-modp2048"
    lab.load(proposal, charon_initiates=False)
    ike, child = lab.establish(charon_initiates=False)
    logged = charon_secrets(lab.charon.log_text())
    keys = {k: bytes.fromhex(v) for k, v in ike["keys"].items()}
    for name in ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"):
        label = f"Sk_{name[3:]} secret"
        assert logged[label] == [keys[name]], name
    # Child keys: we are the initiator, so our outbound keys are the "initiator" ones.
    assert logged["encryption initiator key"] == [bytes.fromhex(child["encr_key_out"])]
    assert logged["encryption responder key"] == [bytes.fromhex(child["encr_key_in"])]
    assert logged["integrity initiator key"] == [bytes.fromhex(child["integ_key_out"])]
    assert logged["integrity responder key"] == [bytes.fromhex(child["integ_key_in"])]
