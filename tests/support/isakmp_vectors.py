"""ISAKMP (IKEv1) byte vectors shared by the codec's unit and fuzz tests.

MAIN_1 .. MAIN_4 are a strongSwan 5.9.8 IKEv1 Main mode, messages 1 to 4 (the
cleartext ones), recorded with tests/support/isakmp_capture.py: two charons in
network namespaces, ``version = 1``, PSK, proposal aes128-sha256-modp2048, IKE
lifetime 24 h (strongSwan sends 95040 s: 10 % more). Each line's comment is the
direction on the veth and the datagram's size. AGGRESSIVE_1 and INFO_AUTH_FAILED
come from the same script with ``--aggressive``.

EVERY_PAYLOAD is one of each payload the codec knows (RFC 2408 sections 3.4-3.16,
RFC 3947, the draft NAT-T numbers) plus an unknown one, for round trips and as a
fuzz seed.
"""

from __future__ import annotations

import ipaddress

from vpnfleet.agent.ike.v1.attributes import Attribute
from vpnfleet.agent.ike.v1.constants import (
    DOI_IPSEC,
    SIT_IDENTITY_ONLY,
    AuthAlg,
    CertEncoding,
    Encapsulation,
    EspTransform,
    IdType,
    LifeType,
    ModeCfgAttr,
    ModeCfgType,
    NotifyType,
    P2Attr,
    PayloadType,
    ProtocolId,
)
from vpnfleet.agent.ike.v1.payloads import (
    AttributePayload,
    CertPayload,
    CertReqPayload,
    DeletePayload,
    HashPayload,
    IdPayload,
    KePayload,
    NatDPayload,
    NatOaPayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    SigPayload,
    Transform,
    UnknownPayload,
    VendorIdPayload,
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


# Aggressive mode, recorded with --aggressive: the initiator's first message, and the
# cleartext Informational the charon responder answers with, since it refuses
# Aggressive mode with PSK by default ("Aggressive Mode PSK disabled").
# 192.0.2.1 -> 192.0.2.2, 500 bytes
AGGRESSIVE_1 = bytes.fromhex(
    "46b69fdbcc40bafe00000000000000000110040000000000000001f40400003c000000010000000100000030"
    "01010001000000280101000080010007800e0080800200048004000e80030001800b0001000c000400017340"
    "0a0001047f2b89c83d9f555fe8850b13c955e02058a22ebc34b682eb3cfaf8cea8e97a50b6d91691b11232a5"
    "1f62849105a2352accb139de7d369e3f074f5688aad729e3d8ac54c585406a0f4b5437e988acf5b64b9d7181"
    "6d8072e0f66e84d798fe6b324d865e52046adc4a6446b3bf9d25bc3e4ab8bb612f138ceac9a98e8d10e0316d"
    "3257b945c212edb73920cd0b6995f5dc91b07d6162d3276f5323e37611baf8d67d4dac2493752ca02c066956"
    "e260fa005d0d3e673a9ab65d364c3c1a7169b561b033b153a46f46b78bdfd4e4091cedfdeb3afe57777e8a8c"
    "8f73ffdce0eac36535c4f50bcb061d3adb2343c085110d1de197f538a62e0b3364b8c9d88110dff205000024"
    "6a983cc5f016f57d7059b6fe6e94589413611d94d3dbb77a90ef7608798ab5cf0d000014020000006f757273"
    "2e6578616d706c650d00000c09002689dfd6b7120d000014afcad71368a1f1c96b8696fc775701000d000018"
    "4048b7d56ebce88525e7de7f00d6c2d3800000000d0000144a131c81070358455c5728f20e95452f00000014"
    "90cb80913ebb696e086381b5ec427b1f"
)
# 192.0.2.2 -> 192.0.2.1, 56 bytes
INFO_AUTH_FAILED = bytes.fromhex(
    "46b69fdbcc40bafe7197cbf0ae4831510b100500eb82ac7d000000380000001c000000010110001846b69fdb"
    "cc40bafe7197cbf0ae483151"
)

COOKIES = bytes.fromhex("0102030405060708 1112131415161718")
ESP_SA = SaPayload(
    DOI_IPSEC,
    SIT_IDENTITY_ONLY,
    (
        Proposal(
            1,
            ProtocolId.IPSEC_ESP,
            bytes.fromhex("c0ffee01"),
            (
                Transform(
                    1,
                    EspTransform.AES_CBC,
                    (
                        Attribute(P2Attr.LIFE_TYPE, LifeType.SECONDS),
                        Attribute(P2Attr.LIFE_DURATION, 3600),
                        Attribute(P2Attr.ENCAPSULATION, Encapsulation.UDP_TUNNEL),
                        Attribute(P2Attr.AUTH_ALG, AuthAlg.HMAC_SHA2_256),
                        Attribute(P2Attr.KEY_LENGTH, 256),
                    ),
                ),
                Transform(2, EspTransform.AES_GCM_16, (Attribute(P2Attr.KEY_LENGTH, 128),)),
            ),
        ),
        Proposal(2, ProtocolId.IPSEC_AH, bytes.fromhex("c0ffee02"), (Transform(1, 5),)),
    ),
)

EVERY_PAYLOAD: list[Payload] = [
    ESP_SA,
    KePayload(b"g" * 32),
    IdPayload(IdType.IPV4_ADDR_SUBNET, 17, 500, bytes.fromhex("0a010000 ffff0000")),
    IdPayload(IdType.FQDN, 0, 0, b"ours.example"),
    CertPayload(CertEncoding.X509_SIGNATURE, b"\x30\x82der"),
    CertReqPayload(CertEncoding.X509_SIGNATURE, b""),
    HashPayload(b"h" * 32),
    SigPayload(b"s" * 64),
    NoncePayload(b"n" * 32),
    NotifyPayload(DOI_IPSEC, ProtocolId.ISAKMP, COOKIES, NotifyType.R_U_THERE, b"\x00\x00\x00\x07"),
    NotifyPayload(DOI_IPSEC, ProtocolId.IPSEC_ESP, b"\x00\x00\x00\x01", NotifyType.INITIAL_CONTACT),
    DeletePayload(DOI_IPSEC, ProtocolId.IPSEC_ESP, (b"\x00\x00\x00\x01", b"\x00\x00\x00\x02")),
    DeletePayload(DOI_IPSEC, ProtocolId.ISAKMP, (COOKIES,)),
    VendorIdPayload(bytes.fromhex("afcad71368a1f1c96b8696fc77570100")),
    AttributePayload(
        ModeCfgType.REPLY,
        7,
        (
            Attribute(ModeCfgAttr.INTERNAL_IP4_ADDRESS, bytes([10, 3, 0, 1])),
            Attribute(ModeCfgAttr.XAUTH_STATUS, 1),
        ),
    ),
    NatDPayload(b"d" * 20),
    NatDPayload(b"d" * 20, PayloadType.NAT_D_DRAFT),
    NatOaPayload(ipaddress.ip_address("192.0.2.9")),
    NatOaPayload(ipaddress.ip_address("2001:db8::9"), PayloadType.NAT_OA_DRAFT),
    UnknownPayload(132, b"fragment"),
]
