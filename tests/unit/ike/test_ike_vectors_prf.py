"""HMAC PRF and truncated integrity against published vectors."""

from __future__ import annotations

import pytest

from vpnfleet.agent.ike.constants import IntegId, PrfId
from vpnfleet.agent.ike.transforms import integ_for, prf_for

AA131 = b"\xaa" * 131
TC6_DATA = b"Test Using Larger Than Block-Size Key - Hash Key First"
TC7_DATA = (
    b"This is a test using a larger than block-size key and a larger than block-size data. "
    b"The key needs to be hashed before being used by the HMAC algorithm."
)

# (test case, key, data, {prf id: expected hex})
RFC4231_CASES = [
    (
        1,
        b"\x0b" * 20,
        b"Hi There",
        {
            PrfId.HMAC_SHA2_256: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            PrfId.HMAC_SHA2_384: "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
            "faea9ea9076ede7f4af152e8b2fa9cb6",
            PrfId.HMAC_SHA2_512: "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
            "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
        },
    ),
    (
        2,
        b"Jefe",
        b"what do ya want for nothing?",
        {PrfId.HMAC_SHA2_256: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
    ),
    (
        3,
        b"\xaa" * 20,
        b"\xdd" * 50,
        {
            PrfId.HMAC_SHA2_256: "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            PrfId.HMAC_SHA2_384: "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b"
            "2a5ab39dc13814b94e3ab6e101a34f27",
            PrfId.HMAC_SHA2_512: "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39"
            "bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb",
        },
    ),
    (
        4,
        bytes(range(1, 26)),
        b"\xcd" * 50,
        {
            PrfId.HMAC_SHA2_256: "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            PrfId.HMAC_SHA2_384: "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e"
            "6801dd23c4a7d679ccf8a386c674cffb",
            PrfId.HMAC_SHA2_512: "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3db"
            "a91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd",
        },
    ),
    (
        6,
        AA131,
        TC6_DATA,
        {
            PrfId.HMAC_SHA2_256: "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            PrfId.HMAC_SHA2_384: "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c6"
            "0c2ef6ab4030fe8296248df163f44952",
            PrfId.HMAC_SHA2_512: "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
            "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
        },
    ),
    (
        7,
        AA131,
        TC7_DATA,
        {
            PrfId.HMAC_SHA2_256: "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            PrfId.HMAC_SHA2_384: "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5"
            "a678cc31e799176d3860e6110c46523e",
            PrfId.HMAC_SHA2_512: "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944"
            "b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58",
        },
    ),
]


@pytest.mark.parametrize(
    ("case", "key", "data", "prf_id", "expected"),
    [
        (case, key, data, prf_id, expected)
        for case, key, data, outputs in RFC4231_CASES
        for prf_id, expected in outputs.items()
    ],
)
def test_prf_hmac_sha2_rfc4231(
    case: int, key: bytes, data: bytes, prf_id: PrfId, expected: str
) -> None:
    """RFC 4231 section 4 test cases 1-4, 6, 7 (also RFC 4868 section 2.7.1's PRF
    vectors). Case 2 is typed in for SHA-256 only."""
    assert prf_for(prf_id)(key, data).hex() == expected


# RFC 4868 section 2.7.2: keys of the integrity key length, output truncated.
RFC4868_INTEG_CASES = [
    (IntegId.HMAC_SHA2_256_128, b"\x0b" * 32, b"Hi There", "198a607eb44bfbc69903a0f1cf2bbdc5"),
    (
        IntegId.HMAC_SHA2_256_128,
        b"Jefe" * 8,
        b"what do ya want for nothing?",
        "167f928588c5cc2eef8e3093caa0e87c",
    ),
    (IntegId.HMAC_SHA2_256_128, b"\xaa" * 32, b"\xdd" * 50, "cdcb1220d1ecccea91e53aba3092f962"),
    (
        IntegId.HMAC_SHA2_384_192,
        b"\x0b" * 48,
        b"Hi There",
        "b6a8d5636f5c6a7224f9977dcf7ee6c7fb6d0c48cbdee973",
    ),
    (
        IntegId.HMAC_SHA2_384_192,
        b"Jefe" * 12,
        b"what do ya want for nothing?",
        "2c7353974f1842fd66d53c452ca42122b28c0b594cfb184d",
    ),
    (
        IntegId.HMAC_SHA2_384_192,
        b"\xaa" * 48,
        b"\xdd" * 50,
        "809f439be00274321d4a538652164b53554a508184a0c316",
    ),
    (
        IntegId.HMAC_SHA2_512_256,
        b"\x0b" * 64,
        b"Hi There",
        "637edc6e01dce7e6742a99451aae82df23da3e92439e590e43e761b33e910fb8",
    ),
    (
        IntegId.HMAC_SHA2_512_256,
        b"Jefe" * 16,
        b"what do ya want for nothing?",
        "cb370917ae8a7ce28cfd1d8f4705d6141c173b2a9362c15df235dfb251b15454",
    ),
    (
        IntegId.HMAC_SHA2_512_256,
        b"\xaa" * 64,
        b"\xdd" * 50,
        "2ee7acd783624ca9398710f3ee05ae41b9f9b0510c87e49e586cc9bf961733d8",
    ),
]


@pytest.mark.parametrize(("integ_id", "key", "data", "expected"), RFC4868_INTEG_CASES)
def test_integ_truncated_hmac_rfc4868(
    integ_id: IntegId, key: bytes, data: bytes, expected: str
) -> None:
    """RFC 4868 section 2.7.2.1-2.7.2.3 authenticator test cases 1-3."""
    integ = integ_for(integ_id)
    assert len(key) == integ.key_length
    icv = integ.sign(key, data)
    assert icv.hex() == expected
    assert integ.verify(key, data, icv)
    assert not integ.verify(key, data + b"x", icv)
