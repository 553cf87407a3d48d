"""RSA PKCS #1 v1.5 signatures without DigestInfo through OpenSSL (agent/ike/rsa_raw.py),
the signature IKEv1 RSA_SIG authentication needs (RFC 2409 section 5.1).

Checked three ways: the public-key operation on our signature gives the RFC 8017 section
9.2 encoding with step 2 (the DigestInfo) left out; cryptography's
recover_data_from_signature returns the hash itself; and a fixed key signs a fixed hash
to what ``openssl pkeyutl -sign -pkeyopt rsa_padding_mode:pkcs1`` printed for them
(PKCS #1 v1.5 signing is deterministic)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from vpnfleet.agent.ike import rsa_raw
from vpnfleet.agent.ike.errors import LocalError

# A test key of this file only: `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`.
TEST_KEY_PEM = b"""\
-----BEGIN PRIVATE KEY-----
MIIEugIBADANBgkqhkiG9w0BAQEFAASCBKQwggSgAgEAAoIBAQCr0HTdlntzViTF
TNYVpCWQXQQQFLskuZHzHbC5NCgupWOr0Q5eBIVkgDdJJvKUqB7pMy+jjvuvTaB9
foN6ufuy1gXBGWkNEThvMaXwNaI8QzEM5JwrS0fGnSNqck47QNiw+X2SdOQyoAfh
pC0/WpQfBDeYQhPQ+iF3DxRqxLEg85fTiMa6nPi3V4JarGY/ZD8gHBPzMvD2qYSa
w3dk8NfzA74io0/FNgzCz6xs/ROtLjOhvIj6MDUjqC4ZkBkhrZZ6PsoolJIl27fK
6WXACRHMWqY8WdcXyCkob3aXfyJr6kCB5w3axTlTBDhaKAjHert/vdb3GcXHgWM8
kGcfZ9KpAgMBAAECgf8vFg4Dy3thCptzUWAVzKstlxgSb12VqZ0UcNmEDZIhQvoE
cK2n5IjPjqtNK99Vek08za49eRRbSvRDiTNmOdbEFkETT/MNAoKQ8GTXpPpwcIL9
qwbvnlEpd9RlehN/5PFYVryftJss1DgQC96+h27elFKoH76ycPmVbBkJ/faZnUSO
8fVmM4jVwwE1u2iwS/A0sip58ReXiN5UiHNG3UHWQfqTqpo1DRq73FpCk+JDXTog
6X6VmgrdqkSnuB/tFGd+PCEPUZMkSMJ63pQuAMrAt2+AZcP06KLbjK59llM+lo63
AQPIlmem5pRQK4YmEGVqr4XDg4c7J6hBbrRMzQsCgYEA6J5oDZIkhqwxxWBiuEGm
SsGkuEhGURubG3r8i9bfTbArOGEQy72OpfzUcCq8jOPqO9SXf2DNHRiUYsJyWlK+
qH1EZHTxqTEHtAd5J+5VuCNvUvVzrxafxLcLCGUS/+uN6e4zBkm0fTvIDLUhVwOQ
ayk61wHkXKpcigT9sRyz6q8CgYEAvRV4Aw88H/Hb90kIGafG+C/U0/EEW/YjYWKS
omGfoiJw4+VPBm03utvpp5fmNBDZQHMPuABzXNKbmqWztSflffE2VfEZ8RxSy3F9
jfWq/69AV5k1GfDnOCEmvvLrzk0l1o/JISCwdt4B4P8pBLRgHaKeAnTgPja60McF
Q1XOjicCgYBnefetecIXykeFln+zmTiA7qz4cOYetFoGGmp3RkklROWk+cC/8P2g
ptxVXR1sywHqRYJy3ju/4qw3VmoJ9d7sEnU2/rJ1YeMcWWqysZmeBN1DmP4x961w
k0AsJtIR19XUJuq5tFW+k7ZEuNow29wFX1zWQfg0pG/v0ZKMk8kQ7wKBgC+CfHQw
WMgiCkYZKJrhqEHmKtDSJ2k/8GXg0b1RUD3572mjzXZs7OrbpNsCdMoyTZQ/FP0D
x/jTxltWNVBYZPZ/LErt2LnXhwotSwHnb37tNvqLuWb6O+7Djau+9/cPNWmzGTNk
tlI3uDsjgdf3xorLuG4fldSsBca9qxnfLpZTAoGAC14kyVBoZqBtrPmNtLzNtOeS
xX9uDnB0vHwIWXhUHb+N7NF+qfGtnwD2dBTkaoJX+ZW3tr060qsz41mVQbQ/sCEk
uVO1YZdIBLYsJjA9HaeCl62F0VE9tsj7X99ZdgOazBOE/FxFsMf+EO4p5A7mT4as
YbPp7EgYoOV/RBbJSGk=
-----END PRIVATE KEY-----
"""

HASH = bytes(range(0x20, 0x40))
"""The signed octets: 32 of them, as a SHA-256 HASH_I would be."""

PKEYUTL_SIGNATURE = bytes.fromhex(
    "51b4699d8d484f4e640984cb97d18a34df7deede931142ed9043de4dd6ff4451b18d7df518d10418"
    "bf25873de809df472b0f6f6465044b773f55e2558a29686fa4a63414447ac97df9404678f93cce1d"
    "fe799d522c1f755a2c56175c230f27cc8bd7cb0f9d33928968a4e6163c2b8fd7bdb99380a3203cea"
    "e20180292aa57dbe7e20cf0947c58c658e469d9656ef4dcc95c9093fe77ea5a261a53e454b598b50"
    "a21356c6606ce3bd401f276b3aa78f2f8fefc007ede0eb94e4bbec3841055e89ebf1fda0763f594c"
    "5be9be9c14d0bcf210671f5581cd0490e17c996167ba89a727d8d5e8013df9472bcc16fbe066f6ab"
    "766a7fa2044062ef69e1679556ece3a1"
)
"""``openssl pkeyutl -sign -inkey key.pem -pkeyopt rsa_padding_mode:pkcs1 -in hash.bin``
(OpenSSL 3.0.19), key.pem holding TEST_KEY_PEM and hash.bin the 32 octets of HASH."""


def _key() -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(TEST_KEY_PEM, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


AnyKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PKCS8 = serialization.PrivateFormat.PKCS8


def _der(key: AnyKey, form: serialization.PrivateFormat = PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, form, serialization.NoEncryption())


def test_matches_openssl_pkeyutl() -> None:
    assert rsa_raw.sign_pkcs1_null(_der(_key()), HASH) == PKEYUTL_SIGNATURE


def test_pkcs1_and_pkcs8_der_sign_alike() -> None:
    traditional = _der(_key(), serialization.PrivateFormat.TraditionalOpenSSL)
    assert rsa_raw.sign_pkcs1_null(traditional, HASH) == PKEYUTL_SIGNATURE


def test_encoding_is_type_1_padding_of_the_bare_hash() -> None:
    """RFC 8017 section 9.2 minus step 2: EM = 0x00 || 0x01 || PS (0xFF octets) || 0x00 || H,
    with H the octets themselves, as long as the modulus."""
    key = _key()
    signature = rsa_raw.sign_pkcs1_null(_der(key), HASH)
    public = key.public_key().public_numbers()
    k = (public.n.bit_length() + 7) // 8
    assert len(signature) == k == 256
    encoded = pow(int.from_bytes(signature, "big"), public.e, public.n).to_bytes(k, "big")
    assert encoded == b"\x00\x01" + b"\xff" * (k - 3 - len(HASH)) + b"\x00" + HASH
    recovered = key.public_key().recover_data_from_signature(signature, padding.PKCS1v15(), None)
    assert recovered == HASH


def test_cryptography_alone_would_add_a_digestinfo() -> None:
    """Why rsa_raw exists: cryptography's Prehashed PKCS #1 v1.5 signature wraps the hash
    in a DigestInfo (the 19-octet SHA-256 prefix of RFC 8017 section 9.2 note 1), which an
    IKEv1 peer does not expect."""
    key = _key()
    theirs = key.sign(HASH, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    signed = key.public_key().recover_data_from_signature(theirs, padding.PKCS1v15(), None)
    assert signed == bytes.fromhex("3031300d060960864801650304020105000420") + HASH
    assert theirs != PKEYUTL_SIGNATURE


@pytest.mark.parametrize(
    ("key", "named"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "id-ecPublicKey"),
        (ed25519.Ed25519PrivateKey.generate(), "ED25519"),
    ],
    ids=["ecdsa", "ed25519"],
)
def test_a_key_not_rsa_is_refused(
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, named: str
) -> None:
    with pytest.raises(LocalError, match=f"needs an RSA private key, not {named} \\(NID \\d+\\)"):
        rsa_raw.sign_pkcs1_null(_der(key), HASH)


@pytest.mark.parametrize(
    "data", [b"", b"garbage", _der(_key())[:100]], ids=["empty", "junk", "cut"]
)
def test_garbage_key_bytes_are_refused_with_openssls_reason(data: bytes) -> None:
    with pytest.raises(
        LocalError, match=r"the RSA private key does not load: error:\w+:"
    ) as caught:
        rsa_raw.sign_pkcs1_null(data, HASH)
    assert "asn1 encoding routines" in str(caught.value)


def test_too_much_data_for_the_modulus() -> None:
    """PKCS #1 v1.5 padding needs 11 octets of the modulus (RFC 8017 section 9.2 step 3)."""
    der = _der(_key())
    assert len(rsa_raw.sign_pkcs1_null(der, bytes(256 - 11))) == 256
    with pytest.raises(LocalError, match=r"of 246 octets failed: .*data too large for key size"):
        rsa_raw.sign_pkcs1_null(der, bytes(256 - 10))


def test_a_missing_libcrypto_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rsa_raw, "LIBCRYPTO", "libcrypto-absent.so.0")
    rsa_raw._libcrypto.cache_clear()
    try:
        with pytest.raises(LocalError, match=r"need OpenSSL 3's libcrypto-absent\.so\.0"):
            rsa_raw.sign_pkcs1_null(_der(_key()), HASH)
    finally:
        rsa_raw._libcrypto.cache_clear()


def _rss_kib() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4


def test_three_thousand_signatures_leave_rss_flat() -> None:
    """Every OpenSSL object is freed: 3,000 signatures (loads of the key, contexts,
    signatures, errors) after a warm-up grow RSS by less than 2 MiB. A 1024-bit key
    keeps the loop short; leaving the key unfreed made 10,000 signatures grow RSS by
    34 MB, so a leaked EVP_PKEY alone would cost about 10 MiB here."""
    der = _der(rsa.generate_private_key(65537, 1024))
    for _ in range(500):
        rsa_raw.sign_pkcs1_null(der, HASH)
        with pytest.raises(LocalError):
            rsa_raw.sign_pkcs1_null(b"garbage", HASH)
    gc.collect()
    before = _rss_kib()
    for i in range(3_000):
        rsa_raw.sign_pkcs1_null(der, HASH)
        if i % 10 == 0:
            with pytest.raises(LocalError):
                rsa_raw.sign_pkcs1_null(b"garbage", HASH)
    gc.collect()
    assert _rss_kib() - before < 2048
