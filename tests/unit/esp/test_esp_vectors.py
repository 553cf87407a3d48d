"""ESP transforms and whole ESP packets against published vectors."""

from __future__ import annotations

import pytest

from vpnfleet.agent.esp.sa import Drop, InboundSa, Mode, OutboundSa, SaParams
from vpnfleet.agent.esp.transforms import AeadSuite, Encryption, Integrity, integrity_icv

H = bytes.fromhex


def unhex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# --- RFC 7634 Appendix A: an ESP packet with ChaCha20-Poly1305 (tunnel mode, ICMP) ---

RFC7634_KEY = unhex(
    "80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f90 91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f"
)
RFC7634_SALT = H("a0a1a2a3")
RFC7634_SPI = 0x01020304
RFC7634_SEQ = 5
RFC7634_IV = H("1011121314151617")
RFC7634_INNER = unhex(
    """
    45 00 00 54 a6 f2 00 00 40 01 e7 78 c6 33 64 05
    c0 00 02 05 08 00 5b 7a 3a 08 00 00 55 3b ec 10
    00 07 36 27 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13
    14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 20 21 22 23
    24 25 26 27 28 29 2a 2b 2c 2d 2e 2f 30 31 32 33
    34 35 36 37
    """
)
RFC7634_ESP = unhex(
    """
    01 02 03 04 00 00 00 05 10 11 12 13 14 15 16 17
    24 03 94 28 b9 7f 41 7e 3c 13 75 3a 4f 05 08 7b
    67 c3 52 e6 a7 fa b1 b9 82 d4 66 ef 40 7a e5 c6
    14 ee 80 99 d5 28 44 eb 61 aa 95 df ab 4c 02 f7
    2a a7 1e 7c 4c 4f 64 c9 be fe 2f ac c6 38 e8 f3
    cb ec 16 3f ac 46 9b 50 27 73 f6 fb 94 e6 64 da
    91 65 b8 28 29 f6 41 e0 76 aa a8 26 6b 7f b0 f7
    b1 1b 36 99 07 e1 ad 43
    """
)


def rfc7634_params() -> SaParams:
    return SaParams(RFC7634_SPI, Encryption.CHACHA20POLY1305, RFC7634_KEY + RFC7634_SALT)


def test_rfc7634_appendix_a_seal_byte_for_byte() -> None:
    sa = OutboundSa(rfc7634_params(), now=0.0)
    packet = sa.seal_with_iv(RFC7634_SEQ, RFC7634_IV, RFC7634_INNER, 4)
    assert packet == RFC7634_ESP


def test_rfc7634_appendix_a_open() -> None:
    sa = InboundSa(rfc7634_params(), now=0.0)
    assert sa.decap(RFC7634_ESP, now=0.0) == (RFC7634_INNER, 4)
    assert sa.counters.packets_in == 1
    assert sa.counters.bytes_in == len(RFC7634_INNER)
    assert sa.replay.top == RFC7634_SEQ


# --- McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 3, 4, 15, 16 ---
# Their 12-octet IV cafebabefacedbaddecaf888 is RFC 4106's salt || explicit IV, so the
# suite's nonce construction is checked along with the cipher.

GCM_KEY_128 = H("feffe9928665731c6d6a8f9467308308")
GCM_SALT = H("cafebabe")
GCM_EXPLICIT_IV = H("facedbaddecaf888")
GCM_PLAIN = unhex(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
GCM_AAD = H("feedfacedeadbeeffeedfacedeadbeefabaddad2")
GCM_CASES = [
    (
        3,
        Encryption.AES128GCM16,
        GCM_KEY_128,
        GCM_PLAIN,
        b"",
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
        "4d5c2af327cd64a62cf35abd2ba6fab4",
    ),
    (
        4,
        Encryption.AES128GCM16,
        GCM_KEY_128,
        GCM_PLAIN[:60],
        GCM_AAD,
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
        "5bc94fbc3221a5db94fae95ae7121a47",
    ),
    (
        15,
        Encryption.AES256GCM16,
        GCM_KEY_128 * 2,
        GCM_PLAIN,
        b"",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        "b094dac5d93471bdec1a502270e3cc6c",
    ),
    (
        16,
        Encryption.AES256GCM16,
        GCM_KEY_128 * 2,
        GCM_PLAIN[:60],
        GCM_AAD,
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
]


@pytest.mark.parametrize(
    ("case", "encryption", "key", "plain", "aad", "ciphertext", "tag"),
    GCM_CASES,
    ids=[f"gcm-test-case-{c[0]}" for c in GCM_CASES],
)
def test_gcm_spec_test_cases(
    case: int,
    encryption: Encryption,
    key: bytes,
    plain: bytes,
    aad: bytes,
    ciphertext: str,
    tag: str,
) -> None:
    suite = AeadSuite(encryption, key + GCM_SALT)
    sealed = suite.seal(GCM_EXPLICIT_IV, aad, plain)
    assert sealed == H(ciphertext) + H(tag)
    assert suite.open(GCM_EXPLICIT_IV, aad, sealed) == plain
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    assert suite.open(GCM_EXPLICIT_IV, aad, flipped) is None


# --- draft-mcgrew-gcm-test-01 (GCM in ESP), packets 2 and 3: tunnel-mode ESP packets ---

MCGREW_ESP_CASES = [
    (
        2,
        Encryption.AES128GCM16,
        H("feffe9928665731c6d6a8f9467308308") + H("cafebabe"),
        0x0000A5F8,
        0x0000000A,
        H("facedbaddecaf888"),
        unhex(
            "4500003e698f000080114dccc0a80102c0a80101"
            "0a980035002a2343b2d001000001000000000000"
            "037369700963796265726369747902646b0000010001"
        ),
        unhex(
            "0000a5f80000000a facedbaddecaf888"
            "deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c"
            "3de81827c10e9a4f51330d0eec416642cfbb85a5b47e48a4ec3b9ba95d918bd4"
            "26f8391b9927d0fcc984561bbbce9fc0"
        ),
    ),
    (
        3,
        Encryption.AES256GCM16,
        H("abbccddef00112233445566778899aababbccddef00112233445566778899aab") + H("11223344"),
        0x4A2CBFE3,
        0x00000002,
        H("0102030405060708"),
        unhex(
            "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee000000000"
            "7002400020bf0000020405b401010402"
        ),
        unhex(
            "4a2cbfe300000002 0102030405060708"
            "ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763"
            "748a637985771d347f0545659f14e99def842d8b42f564f52dfdd6eef4f92ead"
            "bac23990"
        ),
    ),
]


@pytest.mark.parametrize(
    ("case", "encryption", "key", "spi", "seq", "iv", "inner", "esp"),
    MCGREW_ESP_CASES,
    ids=[f"mcgrew-gcm-esp-{c[0]}" for c in MCGREW_ESP_CASES],
)
def test_gcm_esp_packets(
    case: int,
    encryption: Encryption,
    key: bytes,
    spi: int,
    seq: int,
    iv: bytes,
    inner: bytes,
    esp: bytes,
) -> None:
    params = SaParams(spi, encryption, key, mode=Mode.TUNNEL)
    assert OutboundSa(params, 0.0).seal_with_iv(seq, iv, inner, 4) == esp
    inbound = InboundSa(params, 0.0)
    assert inbound.decap(esp, 0.0) == (inner, 4)
    # The same packet again is a replay.
    assert inbound.decap(esp, 0.0) is Drop.REPLAYED


# --- RFC 4868 section 2.7.2: authenticator test cases (key as long as the hash output) ---

RFC4868_CASES = [
    # Test Case AUTH256-1 / AUTH384-1 / AUTH512-1
    (Integrity.HMAC_SHA2_256_128, b"\x0b" * 32, b"Hi There", "198a607eb44bfbc69903a0f1cf2bbdc5"),
    (
        Integrity.HMAC_SHA2_384_192,
        b"\x0b" * 48,
        b"Hi There",
        "b6a8d5636f5c6a7224f9977dcf7ee6c7fb6d0c48cbdee973",
    ),
    (
        Integrity.HMAC_SHA2_512_256,
        b"\x0b" * 64,
        b"Hi There",
        "637edc6e01dce7e6742a99451aae82df23da3e92439e590e43e761b33e910fb8",
    ),
    # Test Case AUTH256-2 / AUTH384-2 / AUTH512-2
    (
        Integrity.HMAC_SHA2_256_128,
        b"Jefe" * 8,
        b"what do ya want for nothing?",
        "167f928588c5cc2eef8e3093caa0e87c",
    ),
    (
        Integrity.HMAC_SHA2_384_192,
        b"Jefe" * 12,
        b"what do ya want for nothing?",
        "2c7353974f1842fd66d53c452ca42122b28c0b594cfb184d",
    ),
    (
        Integrity.HMAC_SHA2_512_256,
        b"Jefe" * 16,
        b"what do ya want for nothing?",
        "cb370917ae8a7ce28cfd1d8f4705d6141c173b2a9362c15df235dfb251b15454",
    ),
    # Test Case AUTH256-3 / AUTH384-3 / AUTH512-3
    (Integrity.HMAC_SHA2_256_128, b"\xaa" * 32, b"\xdd" * 50, "cdcb1220d1ecccea91e53aba3092f962"),
    (
        Integrity.HMAC_SHA2_384_192,
        b"\xaa" * 48,
        b"\xdd" * 50,
        "809f439be00274321d4a538652164b53554a508184a0c316",
    ),
    (
        Integrity.HMAC_SHA2_512_256,
        b"\xaa" * 64,
        b"\xdd" * 50,
        "2ee7acd783624ca9398710f3ee05ae41b9f9b0510c87e49e586cc9bf961733d8",
    ),
]


@pytest.mark.parametrize(("integrity", "key", "data", "icv"), RFC4868_CASES)
def test_rfc4868_authenticators(integrity: Integrity, key: bytes, data: bytes, icv: str) -> None:
    assert integrity_icv(integrity, key, data) == H(icv)
    assert len(H(icv)) == integrity.icv_length


def test_rfc4868_key_length_is_enforced() -> None:
    with pytest.raises(ValueError, match="sha256 integrity key must be 32 octets, got 20"):
        integrity_icv(Integrity.HMAC_SHA2_256_128, b"\x0b" * 20, b"Hi There")
