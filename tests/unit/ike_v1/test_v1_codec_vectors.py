"""Fixed vectors: a strongSwan 5.9.8 IKEv1 Main mode, messages 1 to 4, in the clear.

Recorded here with tests/support/isakmp_capture.py (two charons in network
namespaces, ``version = 1``, PSK, proposal aes128-sha256-modp2048, IKE lifetime 24 h
plus strongSwan's 10 % margin), tcpdump on the initiator's veth, UDP 500 payloads as
hex, kept in tests/support/isakmp_vectors.py. Each must parse to the fields RFC 2408
section 3 and RFC 2409 Appendix A give them and re-encode byte for byte.
"""

from __future__ import annotations

import pytest

from tests.support.isakmp_vectors import (
    AGGRESSIVE_1,
    INFO_AUTH_FAILED,
    MAIN_1,
    MAIN_2,
    MAIN_3,
    MAIN_4,
)
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
    IdType,
    LifeType,
    NotifyType,
    P1Attr,
    P1Encr,
    P1Hash,
    PayloadType,
    ProtocolId,
    TransformId,
)
from vpnfleet.agent.ike.v1.message import IsakmpHeader
from vpnfleet.agent.ike.v1.payloads import (
    IdPayload,
    KePayload,
    NatDPayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    Transform,
    VendorIdPayload,
    describe,
    encode_message,
    parse_message,
    split_payloads,
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


def test_aggressive_mode_message_1() -> None:
    """RFC 2409 section 5.4: SA, KE, Ni, IDii in the first message; the ID is the
    FQDN with protocol and port 0 (RFC 2407 section 4.6.2)."""
    header, payloads = parse_message(AGGRESSIVE_1)
    assert header.exchange is ExchangeType.AGGRESSIVE and header.rcookie == bytes(8)
    assert describe(payloads) == "[ SA KE No ID V V V V V ]"
    assert payloads[0] == OFFER
    assert payloads[3] == IdPayload(IdType.FQDN, 0, 0, b"ours.example")
    assert encode_message(header, payloads) == AGGRESSIVE_1


def test_cleartext_informational_auth_failed() -> None:
    """RFC 2408 section 3.14: an Informational exchange (section 4.8) before keys
    exist, one Notify with the cookie pair as its 16-octet SPI."""
    header, payloads = parse_message(INFO_AUTH_FAILED)
    assert header.exchange is ExchangeType.INFORMATIONAL
    assert header.flags == Flag.NONE and header.message_id != 0
    assert payloads == [
        NotifyPayload(
            DOI_IPSEC,
            ProtocolId.ISAKMP,
            header.icookie + header.rcookie,
            NotifyType.AUTHENTICATION_FAILED,
        )
    ]
    assert encode_message(header, payloads) == INFO_AUTH_FAILED
