"""Diffie-Hellman groups 19, 20, 31 against published vectors; group 14 behaviour."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from vpnfleet.agent.ike import transforms
from vpnfleet.agent.ike.constants import DhGroup
from vpnfleet.agent.ike.errors import CryptoError, UnsupportedTransform
from vpnfleet.agent.ike.transforms import MODP_2048_PRIME, KeyExchange

H = bytes.fromhex


def test_ecp256_rfc5903_section_8_1() -> None:
    """RFC 5903 section 8.1: ECP-256 i, r, g^i, g^r (x || y) and g^ir (x only)."""
    i = H("C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433")
    r = H("C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53")
    gi = H(
        "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180"
        "5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3"
    )
    gr = H(
        "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63"
        "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB"
    )
    gir = H("D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE")
    initiator = KeyExchange(DhGroup.ECP_256, i)
    responder = KeyExchange(DhGroup.ECP_256, r)
    assert initiator.public_key == gi
    assert responder.public_key == gr
    assert initiator.shared_secret(gr) == gir
    assert responder.shared_secret(gi) == gir


def test_ecp384_rfc5903_section_8_2() -> None:
    """RFC 5903 section 8.2: ECP-384 i, r and g^ir (x only); both sides agree."""
    i = H(
        "099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655"
        "E35B538041E649EE3FAEF896783AB194"
    )
    r = H(
        "41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942"
        "E0308312916B8ED2960E4BD55A7448FC"
    )
    gir = H(
        "11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4"
        "D603135569B9E9D09CF5D4A270F59746"
    )
    initiator = KeyExchange(DhGroup.ECP_384, i)
    responder = KeyExchange(DhGroup.ECP_384, r)
    assert len(initiator.public_key) == 96
    assert initiator.shared_secret(responder.public_key) == gir
    assert responder.shared_secret(initiator.public_key) == gir


def test_x25519_rfc7748_section_6_1() -> None:
    """RFC 7748 section 6.1: Alice and Bob's keys and their shared secret."""
    alice_private = H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob_private = H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    alice_public = H("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    bob_public = H("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = H("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    alice = KeyExchange(DhGroup.CURVE25519, alice_private)
    bob = KeyExchange(DhGroup.CURVE25519, bob_private)
    assert alice.public_key == alice_public
    assert bob.public_key == bob_public
    assert alice.shared_secret(bob_public) == shared
    assert bob.shared_secret(alice_public) == shared


@pytest.mark.parametrize(
    ("scalar", "u", "expected"),
    [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ],
)
def test_x25519_rfc7748_section_5_2(scalar: str, u: str, expected: str) -> None:
    """RFC 7748 section 5.2: the two single scalar-multiplication test vectors."""
    assert KeyExchange(DhGroup.CURVE25519, H(scalar)).shared_secret(H(u)).hex() == expected


def test_x25519_rfc8031_vector() -> None:
    """RFC 8031 (Curve25519 for IKEv2) example exchange."""
    i = H("751fb4308655b476b6789b7325f9ea8cddd16a58533ff6d9e60009464a5f9d94")
    r = H("0a54645253290d60ddadd0e030bacd9e5501efdc220755a1e978f1b839a05688")
    shared = H("c74950607a12327f3204d94b6825bfb068b7f8319a9e3708ed3d43ce8130c950")
    a = KeyExchange(DhGroup.CURVE25519, i)
    b = KeyExchange(DhGroup.CURVE25519, r)
    assert a.public_key == H("48d5ddd4061257ba166fa3f9bbdb74f1a4e81c089384fa77f790709f0dfbc766")
    assert b.public_key == H("0be7c1f5aad87d7e448662673298a443478b859745179eaf564c79c0ef6eee25")
    assert a.shared_secret(b.public_key) == shared


def test_x25519_refuses_all_zero_result() -> None:
    """RFC 8031 section 2: a low-order peer value giving all zeros is refused."""
    ours = KeyExchange(DhGroup.CURVE25519)
    with pytest.raises(CryptoError, match="all-zero"):
        ours.shared_secret(bytes(32))


@pytest.mark.parametrize(
    "group", [DhGroup.MODP_2048, DhGroup.ECP_256, DhGroup.ECP_384, DhGroup.CURVE25519]
)
def test_fresh_keys_agree_and_have_rfc_sizes(group: DhGroup) -> None:
    a, b = KeyExchange(group), KeyExchange(group)
    assert len(a.public_key) == KeyExchange.public_key_length(group)
    assert a.shared_secret(b.public_key) == b.shared_secret(a.public_key)


@pytest.fixture(params=["openssl", "plain"])
def modp_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Group 14 on OpenSSL, and on the plain-arithmetic fallback."""
    if request.param == "plain":
        monkeypatch.setattr(transforms, "MODP_2048_PARAMETERS", None)
    return str(request.param)


def test_modp2048_matches_plain_modular_arithmetic(modp_backend: str) -> None:
    """Group 14 is g=2 over the RFC 3526 prime; check g^xy both ways by hand."""
    x, y = 0x1234567890ABCDEF, 0xFEDCBA0987654321
    a = KeyExchange(DhGroup.MODP_2048, x.to_bytes(8, "big"))
    b = KeyExchange(DhGroup.MODP_2048, y.to_bytes(8, "big"))
    assert a.public_key == pow(2, x, MODP_2048_PRIME).to_bytes(256, "big")
    assert a.shared_secret(b.public_key) == pow(2, x * y, MODP_2048_PRIME).to_bytes(256, "big")
    assert MODP_2048_PRIME.bit_length() == 2048 and MODP_2048_PRIME % 8 == 7


@pytest.mark.parametrize("bad", [0, 1, MODP_2048_PRIME - 1, MODP_2048_PRIME, 2**2048 - 1])
def test_modp2048_refuses_degenerate_public_values(bad: int, modp_backend: str) -> None:
    with pytest.raises(CryptoError, match="out of range"):
        KeyExchange(DhGroup.MODP_2048).shared_secret(bad.to_bytes(256, "big"))


def test_ecp_refuses_point_off_curve() -> None:
    ours = KeyExchange(DhGroup.ECP_256)
    bad = bytearray(KeyExchange(DhGroup.ECP_256).public_key)
    bad[-1] ^= 1
    with pytest.raises(CryptoError, match="not a point on the curve"):
        ours.shared_secret(bytes(bad))


@pytest.mark.parametrize("group", [DhGroup.MODP_2048, DhGroup.ECP_256, DhGroup.CURVE25519])
def test_wrong_length_ke_data_is_refused(group: DhGroup) -> None:
    with pytest.raises(CryptoError, match="must be"):
        KeyExchange(group).shared_secret(b"\x01" * 10)


def test_unsupported_group_is_named() -> None:
    with pytest.raises(UnsupportedTransform, match="group 2 "):
        KeyExchange(DhGroup.MODP_1024)


def test_x25519_public_key_is_raw_u_coordinate() -> None:
    ke = KeyExchange(DhGroup.CURVE25519)
    peer = x25519.X25519PrivateKey.generate()
    theirs = peer.exchange(x25519.X25519PublicKey.from_public_bytes(ke.public_key))
    assert ke.shared_secret(peer.public_key().public_bytes_raw()) == theirs


def test_modp2048_fresh_keys_never_use_variable_time_pow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Group 14 with a fresh private exponent runs in OpenSSL (constant time), not in
    Python's pow(), whose timing depends on the exponent's bits."""

    def no_pow(*args: object) -> object:
        raise AssertionError("pow() used for group 14")

    peer = KeyExchange(DhGroup.MODP_2048)
    monkeypatch.setattr(transforms, "pow", no_pow, raising=False)
    ours = KeyExchange(DhGroup.MODP_2048)
    shared = ours.shared_secret(peer.public_key)
    assert shared == peer.shared_secret(ours.public_key)
    assert len(shared) == len(ours.public_key) == 256


def test_modp2048_without_finite_field_dh_in_cryptography(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should cryptography drop finite-field DH, group 14 (a MUST of RFC 8247) still
    works, on plain modular arithmetic; both ways agree with each other."""
    monkeypatch.setattr(transforms, "MODP_2048_PARAMETERS", None)
    ours = KeyExchange(DhGroup.MODP_2048)
    monkeypatch.undo()
    theirs = KeyExchange(DhGroup.MODP_2048)
    assert ours.shared_secret(theirs.public_key) == theirs.shared_secret(ours.public_key)
