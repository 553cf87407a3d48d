"""Fixed vectors: a strongSwan 5.9.8 IKEv1 Main mode, messages 1 to 4, in the clear.

Recorded here with tests/support/isakmp_capture.py (two charons in network
namespaces, ``version = 1``, PSK, proposal aes128-sha256-modp2048, IKE lifetime 24 h
plus strongSwan's 10 % margin), tcpdump on the initiator's veth, UDP 500 payloads as
hex. Each must parse to the fields RFC 2408 section 3 and RFC 2409 Appendix A give
them and re-encode byte for byte.
"""

from __future__ import annotations

import pytest

from vpnfleet.agent.ike.constants import DhGroup
from vpnfleet.agent.ike.v1.attributes import Attribute
from vpnfleet.agent.ike.v1.constants import (
    DOI_IPSEC,
    SIT_IDENTITY_ONLY,
    VID_DPD,
    VID_FRAGMENTATION,
    VID_NAT_T_DRAFT_02N,
    VID_NAT_T_RFC3947,
    VID_XAUTH,
    AuthMethod,
    ExchangeType,
    Flag,
    LifeType,
    P1Attr,
    P1Encr,
    P1Hash,
    PayloadType,
    ProtocolId,
    TransformId,
)
from vpnfleet.agent.ike.v1.message import IsakmpHeader
from vpnfleet.agent.ike.v1.payloads import (
    KePayload,
    NatDPayload,
    NoncePayload,
    Proposal,
    SaPayload,
    Transform,
    VendorIdPayload,
    describe,
    encode_message,
    parse_message,
    split_payloads,
)

# 192.0.2.1 -> 192.0.2.2, 184 bytes
MAIN_1 = bytes.fromhex(
    "9d3dc461b25a870000000000000000000110020000000000000000b80d00003c000000010000000100000030"
    "01010001000000280101000080010007800e0080800200048004000e80030001800b0001000c000400017340"
    "0d00000c09002689dfd6b7120d000014afcad71368a1f1c96b8696fc775701000d0000184048b7d56ebce885"
    "25e7de7f00d6c2d3800000000d0000144a131c81070358455c5728f20e95452f0000001490cb80913ebb696e"
    "086381b5ec427b1f"
)
# 192.0.2.2 -> 192.0.2.1, 164 bytes
MAIN_2 = bytes.fromhex(
    "9d3dc461b25a8700fa9a7027dda812a40110020000000000000000a40d00003c000000010000000100000030"
    "01010001000000280101000080010007800e0080800200048004000e80030001800b0001000c000400017340"
    "0d00000c09002689dfd6b7120d000014afcad71368a1f1c96b8696fc775701000d0000184048b7d56ebce885"
    "25e7de7f00d6c2d380000000000000144a131c81070358455c5728f20e95452f"
)
# 192.0.2.1 -> 192.0.2.2, 396 bytes
MAIN_3 = bytes.fromhex(
    "9d3dc461b25a8700fa9a7027dda812a404100200000000000000018c0a00010495bbdb7e7a8458bcc1a2a6e3"
    "e8346db36f8a72c63b9a068fbe52705c7857cdbda17a30a2e11cbca1bbc29510e1b1fc376a10a2197fa3d6bd"
    "a7910131e6c832fcc098e13d16c0d8c2b49278425ea882df3b4c8f10941a8c4060483d116f338b4d23d400bb"
    "c26b452760939457041e24f22875b29baadb23685e766286738e9b0315e6db99cc71851c97c1eff526384187"
    "c7c8d13e06c020baf389108aec4401e9e158321fc7d1f90330c1906fc3118315ce2fd5f07fa2b7eea20e86b7"
    "11726d911673b58efc17e2f9ece3fd3b1aa01e2f61e2623d68221ee1f880027c5536e0f150935d4725f90abc"
    "852caeff246f1dbc29f59737ed6c19faf6adb79783c3984e14000024c1aba4ae9758338788b74ba9281e658e"
    "b18bd0b5ce49fb083baac4a512aa108a14000024b12b967c4740d0e19a83acb0defa047754fc063e933ab147"
    "a9a9e3fb6940d91c000000240e011aa303c4301e2f07b3a9b5bdfefd979cb38f106d693440d1aebf77a1e9fe"
)
# 192.0.2.2 -> 192.0.2.1, 396 bytes
MAIN_4 = bytes.fromhex(
    "9d3dc461b25a8700fa9a7027dda812a404100200000000000000018c0a00010479154916a1f2644e5aefaed0"
    "b7a64a89abb080897855697476984218fd859ad714b2ea90c1e9822e98563e2fd691bd97abe011f4bc024f7b"
    "c00fc009317acaa22c97d02d997b30e4f726eada929e2c6d90d2f4853c4e7c97fdacf6154771aafe3c73f3e4"
    "1290bdb986d4e6bc9507ce79690b7452ce9d84b63ed7ed7b4fcafe8c00b4574b139f023dd68bc7a5caa483d2"
    "147ee8516dcb23d2de3c05c936281e7a92ddd7ce4ade06d3daf950ff827631f394722003864140a9098b60d1"
    "1b6769981c1f5c9fa2baa575d4d929dd5d53b4e4cd02ee07076bbd828b2ec98a297d63dd1a766c1f9c25a746"
    "7908654c27d1643d483c0ca9005b6583cce7caebae3112b1140000246fa14da748122ecd9680fa6502b11489"
    "ab8757a08d5a5352d0e0149a2290f5781400002468abfe6bf28b1483684f85c6699b0caaacc3bcc0e258b05b"
    "142d4f8a743d1cff000000247f0469654db8dec7caf3366b141b5b0c225737dc44b37b2168f6fd3c09f9c34b"
)

ICOOKIE = MAIN_1[:8]
RCOOKIE = MAIN_2[8:16]

# RFC 2409 Appendix A: AES-CBC (RFC 3602) 128, SHA2-256 (RFC 4868), group 14, PSK,
# lifetime in seconds, 95040 s (24 h + 10 %) as a 4-octet "Variable" TLV.
OFFER = SaPayload(
    DOI_IPSEC,
    SIT_IDENTITY_ONLY,
    (
        Proposal(
            1,
            ProtocolId.ISAKMP,
            b"",
            (
                Transform(
                    1,
                    TransformId.KEY_IKE,
                    (
                        Attribute(P1Attr.ENCRYPTION, P1Encr.AES_CBC),
                        Attribute(P1Attr.KEY_LENGTH, 128),
                        Attribute(P1Attr.HASH, P1Hash.SHA2_256),
                        Attribute(P1Attr.GROUP, DhGroup.MODP_2048),
                        Attribute(P1Attr.AUTH_METHOD, AuthMethod.PSK),
                        Attribute(P1Attr.LIFE_TYPE, LifeType.SECONDS),
                        Attribute(P1Attr.LIFE_DURATION, (95040).to_bytes(4, "big")),
                    ),
                ),
            ),
        ),
    ),
)


@pytest.mark.parametrize("data", [MAIN_1, MAIN_2, MAIN_3, MAIN_4])
def test_vector_re_encodes_byte_identically(data: bytes) -> None:
    header, payloads = parse_message(data)
    assert encode_message(header, payloads) == data
    assert header.exchange is ExchangeType.IDENTITY_PROTECTION
    assert header.flags == Flag.NONE and header.message_id == 0 and header.version == 0x10


def test_message_1_sa_and_vendor_ids() -> None:
    header, payloads = parse_message(MAIN_1)
    assert header == IsakmpHeader(
        ICOOKIE, bytes(8), PayloadType.SA, ExchangeType.IDENTITY_PROTECTION, Flag.NONE, 0, 184
    )
    assert payloads == [
        OFFER,
        VendorIdPayload(VID_XAUTH),
        VendorIdPayload(VID_DPD),
        VendorIdPayload(VID_FRAGMENTATION),
        VendorIdPayload(VID_NAT_T_RFC3947),
        VendorIdPayload(VID_NAT_T_DRAFT_02N),
    ]
    assert describe(payloads) == "[ SA V V V V V ]"
    lifetime = payloads[0].proposals[0].transforms[0].attributes[-1]  # type: ignore[union-attr]
    assert lifetime.as_int() == 95040


def test_message_2_accepts_the_offer() -> None:
    header, payloads = parse_message(MAIN_2)
    assert (header.icookie, header.rcookie, header.length) == (ICOOKIE, RCOOKIE, 164)
    assert payloads[0] == OFFER
    assert [p.data for p in payloads[1:]] == [  # type: ignore[union-attr]
        VID_XAUTH,
        VID_DPD,
        VID_FRAGMENTATION,
        VID_NAT_T_RFC3947,
    ]


@pytest.mark.parametrize("data", [MAIN_3, MAIN_4])
def test_messages_3_and_4_ke_nonce_nat_d(data: bytes) -> None:
    """RFC 2409 section 5 (KE is g^x of MODP 2048: 256 octets), RFC 3947 section 3.2
    (two NAT-D hashes of the negotiated SHA2-256: 32 octets each)."""
    header, payloads = parse_message(data)
    assert (header.icookie, header.rcookie, header.length) == (ICOOKIE, RCOOKIE, 396)
    assert describe(payloads) == "[ KE No NAT-D NAT-D ]"
    ke, nonce, nat_d1, nat_d2 = payloads
    assert isinstance(ke, KePayload) and len(ke.data) == 256
    assert isinstance(nonce, NoncePayload) and len(nonce.data) == 32
    for nat_d in (nat_d1, nat_d2):
        assert isinstance(nat_d, NatDPayload) and len(nat_d.data) == 32
        assert nat_d.payload_type == PayloadType.NAT_D
    # The body offsets the exchanges need for hashing: KE's body after the header
    # and its generic header.
    chain = split_payloads(header.next_payload, data[28:])
    assert [raw.offset for raw in chain] == [32, 292, 328, 364]
    assert chain[0].body == ke.data
