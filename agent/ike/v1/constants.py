"""ISAKMP / IKEv1 registry numbers (RFC 2407, 2408, 2409 and their extensions).

Only numbers live here, as in agent/ike/constants.py; what they mean to the stack
lives in the codec and the key schedule. Oakley group numbers are the same IANA
registry as IKEv2's key exchange methods, so they are ``DhGroup`` from the IKEv2
constants, not a second definition.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

ISAKMP_HEADER_LENGTH = 28  # RFC 2408 section 3.1
GENERIC_PAYLOAD_HEADER_LENGTH = 4  # RFC 2408 section 3.2
ISAKMP_MAJOR_VERSION = 1
ISAKMP_MINOR_VERSION = 0
ISAKMP_VERSION = (ISAKMP_MAJOR_VERSION << 4) | ISAKMP_MINOR_VERSION  # 0x10

DOI_ISAKMP = 0  # RFC 2408 section 3.4: the generic ISAKMP DOI (Notify, Delete)
DOI_IPSEC = 1  # RFC 2407 section 4.2

# RFC 2407 section 4.2: the IPsec DOI Situation bitmap.
SIT_IDENTITY_ONLY = 1
SIT_SECRECY = 2
SIT_INTEGRITY = 4


class ExchangeType(IntEnum):
    """RFC 2408 section 3.1 and RFC 2409 section 5; TRANSACTION is Mode Config's."""

    NONE = 0
    BASE = 1
    IDENTITY_PROTECTION = 2  # Main mode
    AUTHENTICATION_ONLY = 3
    AGGRESSIVE = 4
    INFORMATIONAL = 5
    TRANSACTION = 6  # draft-ietf-ipsec-isakmp-mode-cfg-05 section 3.1
    QUICK = 32  # RFC 2409 section 5.5
    NEW_GROUP = 33  # RFC 2409 section 5.6


class PayloadType(IntEnum):
    """RFC 2408 section 3.1 Next Payload values, RFC 3947 sections 3.2 and 5.2."""

    NONE = 0
    SA = 1
    PROPOSAL = 2
    TRANSFORM = 3
    KE = 4
    ID = 5
    CERT = 6
    CERTREQ = 7
    HASH = 8
    SIG = 9
    NONCE = 10
    NOTIFY = 11
    DELETE = 12
    VENDOR_ID = 13
    ATTRIBUTE = 14  # draft-ietf-ipsec-isakmp-mode-cfg-05 section 3.2
    NAT_D = 20  # RFC 3947 section 3.2
    NAT_OA = 21  # RFC 3947 section 5.2
    # The numbers of draft-ietf-ipsec-nat-t-ike-02/03, still sent by peers that
    # negotiated a draft NAT-T vendor ID (strongSwan parses them too).
    NAT_D_DRAFT = 130
    NAT_OA_DRAFT = 131


class Flag(IntFlag):
    """RFC 2408 section 3.1 header flags."""

    NONE = 0
    ENCRYPTION = 1
    COMMIT = 2
    AUTH_ONLY = 4


class ProtocolId(IntEnum):
    """RFC 2407 section 4.4.1 security protocol identifiers."""

    ISAKMP = 1
    IPSEC_AH = 2
    IPSEC_ESP = 3
    IPCOMP = 4


class TransformId(IntEnum):
    """RFC 2407 section 4.4.2: the one transform of PROTO_ISAKMP."""

    KEY_IKE = 1


class NotifyType(IntEnum):
    """RFC 2408 section 3.14.1 errors, RFC 2407 section 4.6.3 and RFC 3706 status."""

    INVALID_PAYLOAD_TYPE = 1
    DOI_NOT_SUPPORTED = 2
    SITUATION_NOT_SUPPORTED = 3
    INVALID_COOKIE = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_MINOR_VERSION = 6
    INVALID_EXCHANGE_TYPE = 7
    INVALID_FLAGS = 8
    INVALID_MESSAGE_ID = 9
    INVALID_PROTOCOL_ID = 10
    INVALID_SPI = 11
    INVALID_TRANSFORM_ID = 12
    ATTRIBUTES_NOT_SUPPORTED = 13
    NO_PROPOSAL_CHOSEN = 14
    BAD_PROPOSAL_SYNTAX = 15
    PAYLOAD_MALFORMED = 16
    INVALID_KEY_INFORMATION = 17
    INVALID_ID_INFORMATION = 18
    INVALID_CERT_ENCODING = 19
    INVALID_CERTIFICATE = 20
    CERT_TYPE_UNSUPPORTED = 21
    INVALID_CERT_AUTHORITY = 22
    INVALID_HASH_INFORMATION = 23
    AUTHENTICATION_FAILED = 24
    INVALID_SIGNATURE = 25
    ADDRESS_NOTIFICATION = 26
    NOTIFY_SA_LIFETIME = 27
    CERTIFICATE_UNAVAILABLE = 28
    UNSUPPORTED_EXCHANGE_TYPE = 29
    UNEQUAL_PAYLOAD_LENGTHS = 30
    CONNECTED = 16384  # RFC 2408 section 3.14.1 status
    RESPONDER_LIFETIME = 24576  # RFC 2407 section 4.6.3.1
    REPLAY_STATUS = 24577  # RFC 2407 section 4.6.3.2
    INITIAL_CONTACT = 24578  # RFC 2407 section 4.6.3.3
    R_U_THERE = 36136  # RFC 3706 section 5.3
    R_U_THERE_ACK = 36137

    @property
    def is_error(self) -> bool:
        """RFC 2408 section 3.14.1: 1..8191 are errors, 16384 and above status."""
        return self.value < 8192


class IdType(IntEnum):
    """RFC 2407 section 4.6.2.1 identification types."""

    IPV4_ADDR = 1
    FQDN = 2
    USER_FQDN = 3
    IPV4_ADDR_SUBNET = 4
    IPV6_ADDR = 5
    IPV6_ADDR_SUBNET = 6
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11


class CertEncoding(IntEnum):
    """RFC 2408 section 3.9 certificate encodings."""

    NONE = 0
    PKCS7_X509 = 1
    PGP = 2
    DNS_SIGNED_KEY = 3
    X509_SIGNATURE = 4
    X509_KEY_EXCHANGE = 5
    KERBEROS = 6
    CRL = 7
    ARL = 8
    SPKI = 9
    X509_ATTRIBUTE = 10


# -- phase 1: RFC 2409 Appendix A --------------------------------------------------


class P1Attr(IntEnum):
    """RFC 2409 Appendix A attribute classes (ISAKMP SA transform attributes)."""

    ENCRYPTION = 1
    HASH = 2
    AUTH_METHOD = 3
    GROUP = 4
    GROUP_TYPE = 5
    GROUP_PRIME = 6
    GROUP_GENERATOR_ONE = 7
    GROUP_GENERATOR_TWO = 8
    GROUP_CURVE_A = 9
    GROUP_CURVE_B = 10
    LIFE_TYPE = 11
    LIFE_DURATION = 12
    PRF = 13
    KEY_LENGTH = 14
    FIELD_SIZE = 15
    GROUP_ORDER = 16


P1_BASIC_ATTRIBUTES = frozenset(
    {
        P1Attr.ENCRYPTION,
        P1Attr.HASH,
        P1Attr.AUTH_METHOD,
        P1Attr.GROUP,
        P1Attr.GROUP_TYPE,
        P1Attr.LIFE_TYPE,
        P1Attr.PRF,
        P1Attr.KEY_LENGTH,
        P1Attr.FIELD_SIZE,
    }
)
"""The "B" (basic) classes of RFC 2409 Appendix A: only the TV form is allowed."""


class P1Encr(IntEnum):
    """RFC 2409 Appendix A encryption algorithms; AES-CBC from RFC 3602 section 5."""

    DES_CBC = 1
    IDEA_CBC = 2
    BLOWFISH_CBC = 3
    RC5_R16_B64_CBC = 4
    DES3_CBC = 5
    CAST_CBC = 6
    AES_CBC = 7


class P1Hash(IntEnum):
    """RFC 2409 Appendix A hash algorithms; SHA-2 from RFC 4868 section 2.4."""

    MD5 = 1
    SHA1 = 2
    TIGER = 3
    SHA2_256 = 4
    SHA2_384 = 5
    SHA2_512 = 6


class AuthMethod(IntEnum):
    """RFC 2409 Appendix A authentication methods; ECDSA from RFC 4754 section 8;
    XAUTH from draft-ietf-ipsec-isakmp-xauth-06 section 8 (private use range)."""

    PSK = 1
    DSS_SIG = 2
    RSA_SIG = 3
    RSA_ENC = 4
    RSA_ENC_REVISED = 5
    ECDSA_256 = 9
    ECDSA_384 = 10
    ECDSA_521 = 11
    XAUTH_INIT_PSK = 65001
    XAUTH_RESP_PSK = 65002
    XAUTH_INIT_RSA = 65005
    XAUTH_RESP_RSA = 65006


class LifeType(IntEnum):
    """RFC 2409 Appendix A and RFC 2407 section 4.5 (the same two values)."""

    SECONDS = 1
    KILOBYTES = 2


# -- phase 2: RFC 2407 sections 4.4 and 4.5 ----------------------------------------


class P2Attr(IntEnum):
    """RFC 2407 section 4.5 IPsec SA attributes; ECN from RFC 3168 section 9.2.1,
    extended sequence numbers from RFC 4304 section 2."""

    LIFE_TYPE = 1
    LIFE_DURATION = 2
    GROUP = 3
    ENCAPSULATION = 4
    AUTH_ALG = 5
    KEY_LENGTH = 6
    KEY_ROUNDS = 7
    COMPRESS_DICTIONARY_SIZE = 8
    COMPRESS_PRIVATE_ALGORITHM = 9
    ECN_TUNNEL = 10
    EXTENDED_SEQUENCE_NUMBER = 11


P2_BASIC_ATTRIBUTES = frozenset(
    {
        P2Attr.LIFE_TYPE,
        P2Attr.GROUP,
        P2Attr.ENCAPSULATION,
        P2Attr.AUTH_ALG,
        P2Attr.KEY_LENGTH,
        P2Attr.KEY_ROUNDS,
        P2Attr.COMPRESS_DICTIONARY_SIZE,
        P2Attr.ECN_TUNNEL,
        P2Attr.EXTENDED_SEQUENCE_NUMBER,
    }
)
"""The "B" classes of RFC 2407 section 4.5: only the TV form is allowed."""


class Encapsulation(IntEnum):
    """RFC 2407 section 4.5 and RFC 3947 section 5.1; the draft numbers are those of
    draft-ietf-ipsec-nat-t-ike-02/03, still offered by peers of the draft vendor IDs."""

    TUNNEL = 1
    TRANSPORT = 2
    UDP_TUNNEL = 3
    UDP_TRANSPORT = 4
    UDP_TUNNEL_DRAFT = 61443
    UDP_TRANSPORT_DRAFT = 61444


class AuthAlg(IntEnum):
    """RFC 2407 section 4.5 authentication algorithms; SHA-2 from RFC 4868 section 2.4,
    AES-XCBC from RFC 3566, GMAC from RFC 4543."""

    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    DES_MAC = 3
    KPDK = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7
    HMAC_RIPEMD = 8
    AES_XCBC_MAC = 9
    SIG_RSA = 10
    AES_128_GMAC = 11
    AES_192_GMAC = 12
    AES_256_GMAC = 13


class EspTransform(IntEnum):
    """RFC 2407 section 4.4.4 ESP transform IDs (IANA "IPsec ESP Transform
    Identifiers"); AES-CBC from RFC 3602, CTR RFC 3686, CCM RFC 4309, GCM RFC 4106."""

    DES_IV64 = 1
    DES = 2
    DES3 = 3
    RC5 = 4
    IDEA = 5
    CAST = 6
    BLOWFISH = 7
    IDEA3 = 8
    DES_IV32 = 9
    RC4 = 10
    NULL = 11
    AES_CBC = 12
    AES_CTR = 13
    AES_CCM_8 = 14
    AES_CCM_12 = 15
    AES_CCM_16 = 16
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20
    NULL_AUTH_AES_GMAC = 23


class AhTransform(IntEnum):
    """RFC 2407 section 4.4.3 AH transform IDs (IANA "IPsec AH Transform Identifiers");
    SHA-2 from RFC 4868 section 2.4, AES-XCBC from RFC 3566, GMAC from RFC 4543. Each
    goes with the Authentication Algorithm attribute of the same algorithm (section 4.5)."""

    MD5 = 2
    SHA1 = 3
    DES = 4
    SHA2_256 = 5
    SHA2_384 = 6
    SHA2_512 = 7
    RIPEMD = 8
    AES_XCBC_MAC = 9
    RSA = 10
    AES_128_GMAC = 11
    AES_192_GMAC = 12
    AES_256_GMAC = 13


class IpcompTransform(IntEnum):
    """RFC 2407 section 4.4.5 IPCOMP transform IDs."""

    OUI = 1
    DEFLATE = 2
    LZS = 3


# -- Mode Config (draft-ietf-ipsec-isakmp-mode-cfg-05) and XAUTH ---------------------


class ModeCfgType(IntEnum):
    """draft-ietf-ipsec-isakmp-mode-cfg-05 section 3.2: the ATTRIBUTE payload's type."""

    REQUEST = 1
    REPLY = 2
    SET = 3
    ACK = 4


class ModeCfgAttr(IntEnum):
    """draft-ietf-ipsec-isakmp-mode-cfg-05 section 3.2 and
    draft-ietf-ipsec-isakmp-xauth-06 section 3.2 attribute types."""

    INTERNAL_IP4_ADDRESS = 1
    INTERNAL_IP4_NETMASK = 2
    INTERNAL_IP4_DNS = 3
    INTERNAL_IP4_NBNS = 4
    INTERNAL_ADDRESS_EXPIRY = 5
    INTERNAL_IP4_DHCP = 6
    APPLICATION_VERSION = 7
    INTERNAL_IP6_ADDRESS = 8
    INTERNAL_IP6_NETMASK = 9
    INTERNAL_IP6_DNS = 10
    INTERNAL_IP6_NBNS = 11
    INTERNAL_IP6_DHCP = 12
    INTERNAL_IP4_SUBNET = 13
    SUPPORTED_ATTRIBUTES = 14
    INTERNAL_IP6_SUBNET = 15
    XAUTH_TYPE = 16520
    XAUTH_USER_NAME = 16521
    XAUTH_USER_PASSWORD = 16522
    XAUTH_PASSCODE = 16523
    XAUTH_MESSAGE = 16524
    XAUTH_CHALLENGE = 16525
    XAUTH_DOMAIN = 16526
    XAUTH_STATUS = 16527
    XAUTH_NEXT_PIN = 16528
    XAUTH_ANSWER = 16529


# -- vendor IDs ---------------------------------------------------------------------

VID_NAT_T_RFC3947 = bytes.fromhex("4a131c81070358455c5728f20e95452f")
"""RFC 3947 section 3.1: MD5 of "RFC 3947"."""

VID_DPD = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")
"""RFC 3706 section 5.1: the DPD vendor ID (its last two octets are version 1.0)."""

# Sent by strongSwan 5.9 in Main mode messages 1 and 2 (measured here, see
# tests/unit/ike_v1/test_v1_codec_vectors.py); the names are what each stands for.
VID_XAUTH = bytes.fromhex("09002689dfd6b712")
"""draft-ietf-ipsec-isakmp-xauth-06 section 3.1: XAUTH supported."""

VID_FRAGMENTATION = bytes.fromhex("4048b7d56ebce88525e7de7f00d6c2d380000000")
"""IKEv1 fragmentation (Cisco's scheme): MD5 of "FRAGMENTATION" and four flag octets."""

VID_NAT_T_DRAFT_02N = bytes.fromhex("90cb80913ebb696e086381b5ec427b1f")
"""draft-ietf-ipsec-nat-t-ike-02: MD5 of "draft-ietf-ipsec-nat-t-ike-02\\n"."""
