"""IANA "Internet Key Exchange Version 2 (IKEv2) Parameters" registry numbers.

Only numbers live here; what they mean to the stack lives in transforms.py and the
codec. RFC 7296 section 3 unless noted.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

IKE_HEADER_LENGTH = 28
GENERIC_PAYLOAD_HEADER_LENGTH = 4
IKE_MAJOR_VERSION = 2
IKE_MINOR_VERSION = 0
NON_ESP_MARKER = b"\x00\x00\x00\x00"  # RFC 3948 section 2.2 / RFC 7296 section 2.23
ZERO_SPI = bytes(8)  # a responder SPI not yet chosen (section 3.1)


class ExchangeType(IntEnum):
    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37
    IKE_SESSION_RESUME = 38  # RFC 5723
    IKE_INTERMEDIATE = 43  # RFC 9242


class HeaderFlag(IntFlag):
    """RFC 7296 section 3.1 flags octet."""

    NONE = 0
    INITIATOR = 0x08
    VERSION = 0x10
    RESPONSE = 0x20


class PayloadType(IntEnum):
    NONE = 0
    SA = 33
    KE = 34
    IDI = 35
    IDR = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40
    NOTIFY = 41
    DELETE = 42
    VENDOR_ID = 43
    TSI = 44
    TSR = 45
    SK = 46
    CP = 47
    EAP = 48
    GSPM = 49  # RFC 6467
    SKF = 53  # RFC 7383


class ProtocolId(IntEnum):
    """Security protocol identifiers (RFC 7296 section 3.3.1)."""

    NONE = 0
    IKE = 1
    AH = 2
    ESP = 3


class TransformType(IntEnum):
    ENCR = 1
    PRF = 2
    INTEG = 3
    DH = 4  # "Key Exchange Method" since RFC 9370
    ESN = 5


class EncrId(IntEnum):
    DES_IV64 = 1
    DES = 2
    DES3 = 3
    NULL = 11
    AES_CBC = 12
    AES_CTR = 13
    AES_CCM_8 = 14
    AES_CCM_12 = 15
    AES_CCM_16 = 16
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20
    CHACHA20_POLY1305 = 28  # RFC 7634


class PrfId(IntEnum):
    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    AES128_XCBC = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7
    AES128_CMAC = 8


class IntegId(IntEnum):
    NONE = 0
    HMAC_MD5_96 = 1
    HMAC_SHA1_96 = 2
    AES_XCBC_96 = 5
    AES_128_GMAC = 9  # RFC 4543: AH integrity (ESP's GMAC is an ENCR transform)
    AES_192_GMAC = 10
    AES_256_GMAC = 11
    HMAC_SHA2_256_128 = 12
    HMAC_SHA2_384_192 = 13
    HMAC_SHA2_512_256 = 14


class DhGroup(IntEnum):
    NONE = 0
    MODP_1024 = 2
    MODP_1536 = 5
    MODP_2048 = 14
    MODP_3072 = 15
    MODP_4096 = 16
    ECP_256 = 19
    ECP_384 = 20
    ECP_521 = 21
    CURVE25519 = 31
    CURVE448 = 32


class EsnId(IntEnum):
    NO_ESN = 0
    ESN = 1


class TransformAttributeType(IntEnum):
    KEY_LENGTH = 14  # always TV format (RFC 7296 section 3.3.5)


class IdType(IntEnum):
    ID_IPV4_ADDR = 1
    ID_FQDN = 2
    ID_RFC822_ADDR = 3
    ID_IPV6_ADDR = 5
    ID_DER_ASN1_DN = 9
    ID_DER_ASN1_GN = 10
    ID_KEY_ID = 11


class CertEncoding(IntEnum):
    PKCS7_X509 = 1
    X509_SIGNATURE = 4
    CRL = 7
    HASH_URL_X509 = 12
    HASH_URL_BUNDLE = 13


class AuthMethod(IntEnum):
    RSA_SIGNATURE = 1
    SHARED_KEY_MIC = 2
    DSS_SIGNATURE = 3
    ECDSA_SHA256_P256 = 9
    ECDSA_SHA384_P384 = 10
    ECDSA_SHA512_P521 = 11
    NULL = 13  # RFC 7619
    DIGITAL_SIGNATURE = 14  # RFC 7427


class HashAlgorithm(IntEnum):
    """RFC 7427 SIGNATURE_HASH_ALGORITHMS values."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5  # RFC 8420 (Ed25519)


class TsType(IntEnum):
    TS_IPV4_ADDR_RANGE = 7
    TS_IPV6_ADDR_RANGE = 8


class CfgType(IntEnum):
    CFG_REQUEST = 1
    CFG_REPLY = 2
    CFG_SET = 3
    CFG_ACK = 4


class CfgAttributeType(IntEnum):
    INTERNAL_IP4_ADDRESS = 1
    INTERNAL_IP4_NETMASK = 2
    INTERNAL_IP4_DNS = 3
    INTERNAL_IP4_NBNS = 4
    INTERNAL_IP4_DHCP = 6
    APPLICATION_VERSION = 7
    INTERNAL_IP6_ADDRESS = 8
    INTERNAL_IP6_DNS = 10
    INTERNAL_IP6_DHCP = 12
    INTERNAL_IP4_SUBNET = 13
    SUPPORTED_ATTRIBUTES = 14
    INTERNAL_IP6_SUBNET = 15


class NotifyType(IntEnum):
    # Error types (RFC 7296 section 3.10.1), below 16384.
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    TEMPORARY_FAILURE = 43
    CHILD_SA_NOT_FOUND = 44
    # Status types, 16384 and above.
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    HTTP_CERT_LOOKUP_SUPPORTED = 16392
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    MOBIKE_SUPPORTED = 16396
    MULTIPLE_AUTH_SUPPORTED = 16404
    REDIRECT_SUPPORTED = 16406
    IKEV2_FRAGMENTATION_SUPPORTED = 16430  # RFC 7383
    SIGNATURE_HASH_ALGORITHMS = 16431  # RFC 7427

    @property
    def is_error(self) -> bool:
        return self.value < 16384


def enum_name(enum: type[IntEnum], value: int) -> str:
    """Name of ``value`` in ``enum``, or the bare number when unregistered."""
    try:
        return enum(value).name
    except ValueError:
        return str(value)


def enum_or_int(enum: type[IntEnum], value: int) -> int:
    """The enum member when registered (for readable reprs), else the bare number."""
    try:
        return enum(value)
    except ValueError:
        return value
