"""Certificate authentication (RFC 7427 digital signatures, RFC 8420 Ed25519) between two
in-memory peers: CERT / CERTREQ, chain validation against trust anchors, and IKE
identities bound to the certificate's subjectAltName or subject DN."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.support.certs import CA, NOW, dns, make_ca, make_leaf, name, new_key, with_certs
from tests.support.ike_peers import Peers, left_right
from vpnfleet.agent.ike import signatures
from vpnfleet.agent.ike.config import Identity
from vpnfleet.agent.ike.constants import AuthMethod, IdType, NotifyType
from vpnfleet.agent.ike.errors import LocalError, ProtocolError
from vpnfleet.agent.ike.events import ChildSaEstablished, IkeSaEstablished, IkeSaFailed
from vpnfleet.agent.ike.message import parse_message
from vpnfleet.agent.ike.payloads import AuthPayload, CertPayload, CertReqPayload
from vpnfleet.agent.ike.signatures import CertificateAuth
from vpnfleet.agent.ike.states import IkeSaState


def cert_pair(kind_left: str, kind_right: str) -> Peers:
    left, right = left_right()
    left = with_certs(left, kind_left, dns("left.example"))
    right = with_certs(right, kind_right, dns("right.example"))
    peers = Peers(left, right)
    peers.left.sa.initiate(peers.right.address, peers.now)
    return peers


@pytest.mark.parametrize(
    ("kind", "identifier"),
    [
        # RFC 7427 Appendix A.3.1: ecdsa-with-SHA256.
        ("ecdsa", "300a06082a8648ce3d040302"),
        # RFC 8410 section 3 / RFC 8420 section 2: id-Ed25519, no parameters.
        ("ed25519", "300506032b6570"),
        # RFC 8410 section 3 / RFC 8420 section 2: id-Ed448, no parameters.
        ("ed448", "300506032b6571"),
        ("rsa", None),
    ],
)
def test_certificate_authentication_both_ways(kind: str, identifier: str | None) -> None:
    peers = cert_pair(kind, kind)
    (init_request,) = peers.outgoing(peers.left)
    peers.deliver(peers.right, init_request)
    (init_response,) = peers.outgoing(peers.right)
    certreqs = [p for p in parse_message(init_response).payloads if isinstance(p, CertReqPayload)]
    # Section 3.7: the SHA-1 hash of the CA's SubjectPublicKeyInfo.
    spki = (
        CA[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert [c.data for c in certreqs] == [hashlib.sha1(spki).digest()]
    peers.deliver(peers.left, init_response)
    (auth_request,) = peers.outgoing(peers.left)
    inner = peers.right.sa._open(parse_message(auth_request), auth_request)
    (auth,) = [p for p in inner if isinstance(p, AuthPayload)]
    assert auth.method == AuthMethod.DIGITAL_SIGNATURE
    length = auth.data[0]
    if identifier is not None:
        assert auth.data[1 : 1 + length].hex() == identifier
    else:  # RSASSA-PSS (OID 1.2.840.113549.1.1.10) with explicit SHA-256 parameters
        assert bytes.fromhex("06092a864886f70d01010a") in auth.data[1 : 1 + length]
    certs = [p for p in inner if type(p) is CertPayload]
    assert x509.load_der_x509_certificate(certs[0].data).subject == name("gw")
    peers.deliver(peers.right, auth_request)
    peers.run()
    assert peers.left.sa.state is peers.right.sa.state is IkeSaState.ESTABLISHED
    assert len(peers.left.of(ChildSaEstablished)) == 1
    (established,) = peers.right.of(IkeSaEstablished)
    assert established.remote_id == "left.example"


def test_mixed_key_types() -> None:
    peers = cert_pair("ed25519", "ecdsa")
    peers.run()
    assert peers.left.sa.state is peers.right.sa.state is IkeSaState.ESTABLISHED


@pytest.mark.parametrize("kind", ["ed25519", "ed448"])
def test_edwards_ca_and_certificates_on_both_sides(kind: str) -> None:
    """strongSwan's net2net-ed25519 scenario: the CA and both IKE certificates are
    Ed25519 (or Ed448) keys (RFC 8410), and the AUTH payloads RFC 8420 signatures."""
    ca = make_ca("Edwards CA", kind)
    left, right = left_right()
    left = with_certs(left, kind, dns("left.example"), ca=ca)
    right = with_certs(right, kind, dns("right.example"), ca=ca)
    peers = Peers(left, right)
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    failures = peers.left.of(IkeSaFailed) + peers.right.of(IkeSaFailed)
    assert failures == []
    assert peers.left.sa.state is peers.right.sa.state is IkeSaState.ESTABLISHED
    assert len(peers.left.of(ChildSaEstablished)) == 1


def test_certificate_expired_at_the_time_passed_in_fails_authentication() -> None:
    """Validity is judged at the wall-clock time the caller passes with the datagram."""
    expiry = NOW + datetime.timedelta(hours=1)
    left, right = left_right()
    left = with_certs(left, "ed25519", dns("left.example"), not_after=expiry)
    right = with_certs(right, "ed25519", dns("right.example"))
    peers = Peers(left, right, wall=(expiry + datetime.timedelta(minutes=1)).timestamp())
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    (failed,) = peers.right.of(IkeSaFailed)
    assert failed.reason == (
        "AUTHENTICATION_FAILED: certificate CN=gw,O=vpnfleet test is not trusted: "
        f"CN=gw,O=vpnfleet test expired at {expiry:%Y-%m-%d %H:%M:%S} UTC"
    )
    assert failed.notify == NotifyType.AUTHENTICATION_FAILED


def test_certificate_authentication_needs_the_wall_clock_time() -> None:
    peers = cert_pair("ed25519", "ed25519")
    (init_request,) = peers.outgoing(peers.left)
    with pytest.raises(LocalError, match="needs the wall-clock time"):
        peers.right.sa.receive_datagram(init_request, peers.left.address, peers.now)


def test_untrusted_chain_fails_authentication() -> None:
    left, right = left_right()
    other_ca = make_ca("Other CA")
    key = new_key("ecdsa")
    rogue = make_leaf(other_ca, "gw", key, dns("left.example"))
    left = replace(left, psk=b"", certificates=CertificateAuth(rogue, key, (other_ca[0],)))
    right = with_certs(right, "ecdsa", dns("right.example"))
    peers = Peers(left, right)
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    (failed,) = peers.right.of(IkeSaFailed)
    assert failed.reason.startswith("AUTHENTICATION_FAILED: certificate CN=gw,O=vpnfleet test")
    assert "is not trusted" in failed.reason
    assert failed.notify == NotifyType.AUTHENTICATION_FAILED
    (refused,) = peers.left.of(IkeSaFailed)
    assert refused.reason == "AUTHENTICATION_FAILED: refused by peer"


def test_identity_must_be_in_the_certificate() -> None:
    left, right = left_right()
    left = with_certs(left, "ecdsa", dns("someone-else.example"))
    right = with_certs(right, "ecdsa", dns("right.example"))
    peers = Peers(left, right)
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    (failed,) = peers.right.of(IkeSaFailed)
    assert failed.reason == (
        "AUTHENTICATION_FAILED: identity left.example is not in certificate CN=gw,O=vpnfleet test"
    )


@pytest.mark.parametrize(
    ("identity", "sans", "cn"),
    [
        ("192.0.2.1", [x509.IPAddress(ipaddress.ip_address("192.0.2.1"))], "gw"),
        ("2001:db8::1", [x509.IPAddress(ipaddress.ip_address("2001:db8::1"))], "gw"),
        ("ops@left.example", [x509.RFC822Name("ops@left.example")], "gw"),
        ("CN=left,O=vpnfleet test", [], "left"),
    ],
)
def test_every_identity_type_is_matched_against_the_certificate(
    identity: str, sans: list[x509.GeneralName], cn: str
) -> None:
    left, right = left_right()
    left = replace(
        with_certs(left, "ecdsa", sans or dns("x.example"), cn=cn),
        local_id=Identity.parse(identity),
    )
    right = replace(
        with_certs(right, "ecdsa", dns("right.example")), remote_id=Identity.parse(identity)
    )
    peers = Peers(left, right)
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    assert peers.right.sa.state is IkeSaState.ESTABLISHED, peers.right.of(IkeSaFailed)
    (established,) = peers.right.of(IkeSaEstablished)
    assert established.remote_id == str(Identity.parse(identity))


def test_dn_identity_parses_and_matches_only_the_subject() -> None:
    dn = Identity.parse("CN=left,O=vpnfleet test")
    assert dn.id_type == IdType.ID_DER_ASN1_DN
    cert = make_leaf(CA, "left", new_key("ecdsa"), dns("x.example"))
    assert signatures.identity_in_certificate(dn.id_type, dn.data, cert)
    other = Identity.parse("CN=right,O=vpnfleet test")
    assert not signatures.identity_in_certificate(other.id_type, other.data, cert)
    with pytest.raises(LocalError, match="is not an RFC 4514 DN"):
        Identity.parse("CN=a,=broken")


def test_signature_checks_name_what_is_wrong() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_leaf(CA, "gw", key, dns("a.example"))
    data = signatures.sign(key, b"octets")
    assert signatures.verify(cert, b"octets", data) == "ecdsa-with-sha256"
    with pytest.raises(ProtocolError, match="ecdsa-with-sha256 signature does not verify"):
        signatures.verify(cert, b"other octets", data)
    with pytest.raises(ProtocolError, match="unsupported signature AlgorithmIdentifier 3003"):
        signatures.verify(cert, b"octets", b"\x02\x30\x03" + data)
    with pytest.raises(ProtocolError, match="shorter than its AlgorithmIdentifier"):
        signatures.verify(cert, b"octets", b"\x20\x30")
    ed = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(ProtocolError, match="ed25519 signature does not fit"):
        signatures.verify(cert, b"octets", signatures.sign(ed, b"octets"))


def test_certificate_config_refuses_nonsense() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_leaf(CA, "gw", key, dns("a.example"))
    with pytest.raises(LocalError, match="does not belong to the certificate"):
        CertificateAuth(cert, ec.generate_private_key(ec.SECP256R1()), (CA[0],))
    with pytest.raises(LocalError, match="at least one trust anchor"):
        CertificateAuth(cert, key, ())
