"""Certificate path validation for IKE peers (chain.py): chains under CAs of every key
type IKE signs with are accepted (Ed25519 and Ed448 per RFC 8410 / RFC 8420, ECDSA,
RSA), and each broken link is refused with a reason that names it."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from vpnfleet.agent.ike import chain
from vpnfleet.agent.ike.chain import ChainError
from vpnfleet.agent.ike.signatures import SigningKey

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)

Key = SigningKey
_RSA: dict[int, rsa.RSAPrivateKey] = {}


def new_key(kind: str) -> Key:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    bits = int(kind.removeprefix("rsa"))
    if bits not in _RSA:  # RSA keys are slow to make: one per size for the module
        _RSA[bits] = rsa.generate_private_key(65537, bits)
    return _RSA[bits]


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def key_usage(*, sign: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(sign, False, False, False, False, cert_sign, cert_sign, False, False)


@dataclass
class Issuer:
    cert: x509.Certificate
    key: Key


def _hash(key: Key, digest: hashes.HashAlgorithm | None) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return digest or hashes.SHA256()


def issue(
    subject: str,
    key: Key,
    issuer: Issuer | None,
    *,
    ca: bool | None,
    usage: x509.KeyUsage | None = None,
    path_length: int | None = None,
    not_before: datetime.datetime = NOW - DAY,
    not_after: datetime.datetime = NOW + 30 * DAY,
    digest: hashes.HashAlgorithm | None = None,
    pss: bool = False,
    extra: x509.ExtensionType | None = None,
) -> Issuer:
    """A certificate for ``key``, signed by ``issuer`` (self-signed when None);
    ``ca=None`` leaves basicConstraints out."""
    signer = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(issuer.cert.subject if issuer else name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(f"{subject}.example")]), critical=False
        )
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
    hash_alg = _hash(signer, digest)
    if pss:
        assert isinstance(signer, rsa.RSAPrivateKey) and hash_alg is not None
        cert = builder.sign(
            signer,
            hash_alg,
            rsa_padding=padding.PSS(padding.MGF1(hash_alg), padding.PSS.DIGEST_LENGTH),
        )
    else:
        cert = builder.sign(signer, hash_alg)
    return Issuer(cert, key)


def root(kind: str = "ed25519", cn: str = "Fleet CA", **kw: object) -> Issuer:
    kw.setdefault("usage", key_usage(cert_sign=True))
    return issue(cn, new_key(kind), None, ca=True, **kw)  # type: ignore[arg-type]


def leaf(ca: Issuer, kind: str = "ed25519", cn: str = "gw", **kw: object) -> x509.Certificate:
    kw.setdefault("usage", key_usage(sign=True))
    return issue(cn, new_key(kind), ca, ca=False, **kw).cert  # type: ignore[arg-type]


def refused(
    cert: x509.Certificate,
    anchors: list[Issuer],
    intermediates: tuple[x509.Certificate, ...] = (),
    now: datetime.datetime = NOW,
) -> str:
    with pytest.raises(ChainError) as caught:
        chain.validate(cert, intermediates, [a.cert for a in anchors], now)
    return str(caught.value)


@pytest.mark.parametrize(
    ("ca_kind", "leaf_kind"),
    [
        ("ed25519", "ed25519"),  # strongSwan's net2net-ed25519 scenario
        ("ed448", "ed448"),
        ("p256", "p256"),
        ("p384", "p384"),
        ("rsa2048", "rsa2048"),
        ("ed25519", "p256"),
        ("p256", "ed25519"),
    ],
)
def test_chains_under_every_ike_key_type_are_accepted(ca_kind: str, leaf_kind: str) -> None:
    ca = root(ca_kind)
    cert = leaf(ca, leaf_kind)
    assert chain.validate(cert, (), [ca.cert], NOW) == (cert, ca.cert)


def test_rsassa_pss_and_sha384_certificate_signatures_are_accepted() -> None:
    ca = root("rsa2048")
    pss = leaf(ca, "p256", pss=True)
    assert chain.validate(pss, (), [ca.cert], NOW)[-1] == ca.cert
    p384 = root("p384")
    sha384 = leaf(p384, "p256", digest=hashes.SHA384())
    assert chain.validate(sha384, (), [p384.cert], NOW)[-1] == p384.cert


def test_a_path_through_intermediates_the_peer_sent() -> None:
    ca = root("ed25519")
    mid = issue("Site CA", new_key("ed448"), ca, ca=True, usage=key_usage(cert_sign=True))
    cert = leaf(mid, "p256")
    decoy = root("p256", cn="Site CA")  # same name, other key: tried and passed over
    found = chain.validate(cert, (decoy.cert, mid.cert), [ca.cert], NOW)
    assert found == (cert, mid.cert, ca.cert)
    assert "not a trusted CA" in refused(cert, [ca])  # without the intermediate: no path


def test_two_anchors_of_one_name_during_a_ca_rotation() -> None:
    old, new = root("ed25519"), root("ed25519")
    cert = leaf(new)
    assert chain.validate(cert, (), [old.cert, new.cert], NOW)[-1] == new.cert


def test_validity_is_judged_at_the_time_passed_in() -> None:
    ca = root()
    cert = leaf(ca, not_after=NOW + DAY)
    assert chain.validate(cert, (), [ca.cert], NOW + DAY)
    assert refused(cert, [ca], now=NOW + DAY + datetime.timedelta(seconds=1)) == (
        "CN=gw expired at 2026-06-02 12:00:00 UTC"
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        chain.validate(cert, (), [ca.cert], NOW.replace(tzinfo=None))


def test_expired_certificate_is_refused() -> None:
    ca = root()
    cert = leaf(ca, not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    assert refused(cert, [ca]) == "CN=gw expired at 2026-05-31 12:00:00 UTC"


def test_not_yet_valid_certificate_is_refused() -> None:
    ca = root()
    cert = leaf(ca, not_before=NOW + DAY)
    assert refused(cert, [ca]) == "CN=gw is not valid before 2026-06-02 12:00:00 UTC"


def test_expired_ca_is_refused() -> None:
    ca = root(not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    assert refused(leaf(ca), [ca]) == "CN=Fleet CA expired at 2026-05-31 12:00:00 UTC"


def test_certificate_of_another_ca_is_refused() -> None:
    ours, theirs = root(), root(cn="Other CA")
    assert refused(leaf(theirs), [ours]) == (
        "issuer CN=Other CA of CN=gw is not a trusted CA (trust anchors: CN=Fleet CA)"
    )


def test_ca_of_the_same_name_but_another_key_is_refused() -> None:
    ours, impostor = root(), root()
    assert refused(leaf(impostor), [ours]) == (
        "the Ed25519 signature of CN=gw does not verify with CN=Fleet CA's key"
    )


def test_tampered_signature_is_refused() -> None:
    ca = root()
    der = bytearray(leaf(ca).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last octet of the signature BIT STRING
    tampered = x509.load_der_x509_certificate(bytes(der))
    assert refused(tampered, [ca]) == (
        "the Ed25519 signature of CN=gw does not verify with CN=Fleet CA's key"
    )


def test_issuer_that_is_not_a_ca_is_refused() -> None:
    for constraints in (False, None):  # CA:FALSE, and no basicConstraints at all
        host = issue("Fleet CA", new_key("ed25519"), None, ca=constraints)
        assert refused(leaf(host), [host]) == (
            "CN=Fleet CA is not a CA (no basicConstraints CA:TRUE)"
        )


def test_ca_without_key_cert_sign_is_refused() -> None:
    ca = root(usage=key_usage(sign=True))
    assert refused(leaf(ca), [ca]) == (
        "CN=Fleet CA may not sign certificates (keyUsage without keyCertSign)"
    )
    bare = root(usage=None)  # no keyUsage: any use (RFC 5280 section 4.2.1.3)
    assert chain.validate(leaf(bare), (), [bare.cert], NOW)


def test_leaf_without_digital_signature_is_refused() -> None:
    ca = root()
    encipher_only = x509.KeyUsage(False, False, True, False, False, False, False, False, False)
    cert = leaf(ca, usage=encipher_only)
    assert refused(cert, [ca]) == "CN=gw may not sign (keyUsage without digitalSignature)"


def test_path_length_constraint_is_enforced() -> None:
    ca = root(path_length=0)
    mid = issue("Site CA", new_key("ed25519"), ca, ca=True, usage=key_usage(cert_sign=True))
    assert refused(leaf(mid), [ca], (mid.cert,)) == (
        "CN=Fleet CA allows 0 CA certificates below it (pathLenConstraint), the path has 1"
    )


def test_depth_is_limited() -> None:
    issuer = root()
    anchor = issuer
    mids = []
    for level in range(chain.MAX_INTERMEDIATES + 1):
        issuer = issue(f"CA {level}", new_key("ed25519"), issuer, ca=True)
        mids.append(issuer.cert)
    reason = refused(leaf(issuer), [anchor], tuple(mids))
    assert f"the path is longer than {chain.MAX_INTERMEDIATES} intermediate CAs" in reason
    assert chain.validate(leaf(issuer), tuple(mids), [anchor.cert, mids[0]], NOW)


def test_signature_hash_outside_sha2_256_to_512_is_refused() -> None:
    ca = root("p256")
    cert = leaf(ca, digest=hashes.SHA224())
    assert refused(cert, [ca]) == (
        "CN=gw is signed with ecdsa-with-SHA224 (1.2.840.10045.4.3.1), which is not accepted"
    )


def test_small_rsa_ca_key_is_refused() -> None:
    ca = root("rsa1024")
    assert refused(leaf(ca), [ca]) == "CN=Fleet CA: RSA key of 1024 bits (at least 2048)"


def test_unprocessed_critical_extension_is_refused() -> None:
    constraint = x509.NameConstraints([x509.DNSName("example")], None)
    ca = root(extra=constraint)
    assert refused(leaf(ca), [ca]) == (
        "CN=Fleet CA carries critical extension nameConstraints (2.5.29.30), which is not supported"
    )
    odd = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    ca = root()
    assert refused(leaf(ca, extra=odd), [ca]) == (
        "CN=gw carries critical extension 1.3.6.1.4.1.55555.1, which is not supported"
    )


def test_issuer_checks_are_bounded() -> None:
    """Many look-alike CA certificates from the peer do not buy unbounded verification."""
    ca = root()
    mid = issue("Site CA", new_key("ed25519"), ca, ca=True)
    forger = root(cn="Fleet CA")  # same name as the anchor, another key
    look_alikes = tuple(
        issue("Site CA", new_key("ed25519"), forger, ca=True).cert
        for _ in range(chain.MAX_ISSUER_CHECKS + 4)
    )
    cert = leaf(mid)
    reason = refused(cert, [ca], look_alikes)
    assert f"no path found within {chain.MAX_ISSUER_CHECKS} candidate issuers" in reason
    assert chain.validate(cert, (mid.cert,), [ca.cert], NOW)[1] == mid.cert
