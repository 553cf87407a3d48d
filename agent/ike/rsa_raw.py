"""RSA PKCS #1 v1.5 signatures over given bytes, with no DigestInfo, made by OpenSSL.

Why this module exists: IKEv1 signature authentication with RSA (RFC 2409 section 5.1,
Authentication Method RSA_SIG = 3) puts HASH_I or HASH_R itself in a PKCS #1 "type 1"
block: 00 01 FF..FF 00 HASH (RFC 8017 section 9.2 without its step 2, the DigestInfo);
strongSwan calls the scheme SIGN_RSA_EMSA_PKCS1_NULL. The cryptography library signs
PKCS #1 v1.5 only with a DigestInfo (even Prehashed), and an RSA private-key operation
written in Python would leak the key through its timing. OpenSSL's EVP_PKEY_sign with
RSA_PKCS1_PADDING and no signature digest set pads exactly so, with OpenSSL's blinded,
constant-time private-key operation: this module calls it through ctypes on the
system's libcrypto.so.3 (Debian 12's libssl3, which python3 itself depends on).

Verifying needs no such help: ``RSAPublicKey.recover_data_from_signature(signature,
PKCS1v15(), None)`` returns the signed bytes (agent/ike/v1/auth.py).

Every OpenSSL object made here is freed on every path; OpenSSL's failures become
LocalError carrying its own error strings. The library is loaded at the first signature,
so a host without it fails there, with a message saying so, not at import.
"""

from __future__ import annotations

import ctypes
import functools
from ctypes import POINTER, byref, c_char_p, c_int, c_long, c_size_t, c_ulong, c_void_p
from typing import Any

from .errors import LocalError

LIBCRYPTO = "libcrypto.so.3"

_EVP_PKEY_RSA = 6
"""NID_rsaEncryption, EVP_PKEY_get_base_id's value for an RSA key (openssl/obj_mac.h).
An RSASSA-PSS-only key (NID_rsassaPss) is refused: it may not sign with PKCS #1 v1.5."""
_RSA_PKCS1_PADDING = 1
"""openssl/rsa.h: PKCS #1 v1.5 padding, block type 1 when signing."""


class _LibCrypto:
    """The libcrypto functions used here, each with its C signature declared (a pointer
    left to ctypes' default int return type would be cut to 32 bits)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        def bind(name: str, restype: Any, *argtypes: Any) -> Any:
            function = getattr(lib, name)
            function.restype = restype
            function.argtypes = argtypes
            return function

        self.ERR_clear_error = bind("ERR_clear_error", None)
        self.ERR_get_error = bind("ERR_get_error", c_ulong)
        self.ERR_error_string_n = bind("ERR_error_string_n", None, c_ulong, c_char_p, c_size_t)
        # EVP_PKEY *d2i_AutoPrivateKey(EVP_PKEY **a, const unsigned char **pp, long length)
        self.d2i_AutoPrivateKey = bind(
            "d2i_AutoPrivateKey", c_void_p, c_void_p, POINTER(c_char_p), c_long
        )
        self.EVP_PKEY_get_base_id = bind("EVP_PKEY_get_base_id", c_int, c_void_p)
        self.OBJ_nid2sn = bind("OBJ_nid2sn", c_char_p, c_int)
        self.EVP_PKEY_free = bind("EVP_PKEY_free", None, c_void_p)
        self.EVP_PKEY_CTX_new = bind("EVP_PKEY_CTX_new", c_void_p, c_void_p, c_void_p)
        self.EVP_PKEY_CTX_free = bind("EVP_PKEY_CTX_free", None, c_void_p)
        self.EVP_PKEY_sign_init = bind("EVP_PKEY_sign_init", c_int, c_void_p)
        self.EVP_PKEY_CTX_set_rsa_padding = bind(
            "EVP_PKEY_CTX_set_rsa_padding", c_int, c_void_p, c_int
        )
        # int EVP_PKEY_sign(EVP_PKEY_CTX *ctx, unsigned char *sig, size_t *siglen,
        #                   const unsigned char *tbs, size_t tbslen)
        self.EVP_PKEY_sign = bind(
            "EVP_PKEY_sign", c_int, c_void_p, c_void_p, POINTER(c_size_t), c_char_p, c_size_t
        )

    def errors(self) -> str:
        """OpenSSL's error queue of this thread as text (each error once), emptied."""
        found: dict[str, None] = {}
        while code := int(self.ERR_get_error()):
            text = ctypes.create_string_buffer(256)
            self.ERR_error_string_n(code, text, len(text))
            found[text.value.decode(errors="replace")] = None
        return "; ".join(found) or "OpenSSL gave no reason"

    def key_type(self, nid: int) -> str:
        name = self.OBJ_nid2sn(nid)
        return f"{name.decode()} (NID {nid})" if name else f"NID {nid}"


@functools.cache
def _libcrypto() -> _LibCrypto:
    try:
        return _LibCrypto(ctypes.CDLL(LIBCRYPTO))
    except (OSError, AttributeError) as exc:
        raise LocalError(
            f"RSA signatures without DigestInfo need OpenSSL 3's {LIBCRYPTO} "
            f"(Debian: libssl3): {exc}"
        ) from None


def sign_pkcs1_null(private_key_der: bytes, data: bytes) -> bytes:
    """The RSA signature of ``data`` itself in a PKCS #1 v1.5 type 1 block, no DigestInfo
    (RFC 8017 section 8.2.1 with EMSA-PKCS1-v1_5 minus step 2), as long as the modulus.

    ``private_key_der``: the RSA private key, DER (PKCS #8, or PKCS #1 RSAPrivateKey),
    unencrypted. ``data`` may be at most the modulus length less 11 octets."""
    lib = _libcrypto()
    lib.ERR_clear_error()
    cursor = c_char_p(private_key_der)  # d2i moves this pointer, not the bytes
    pkey = lib.d2i_AutoPrivateKey(None, byref(cursor), len(private_key_der))
    if not pkey:
        raise LocalError(f"the RSA private key does not load: {lib.errors()}")
    try:
        kind = int(lib.EVP_PKEY_get_base_id(pkey))
        if kind != _EVP_PKEY_RSA:
            raise LocalError(
                f"PKCS #1 v1.5 signing needs an RSA private key, not {lib.key_type(kind)}"
            )
        ctx = lib.EVP_PKEY_CTX_new(pkey, None)
        if not ctx:
            raise LocalError(f"EVP_PKEY_CTX_new failed: {lib.errors()}")
        try:
            return _sign(lib, ctx, data)
        finally:
            lib.EVP_PKEY_CTX_free(ctx)
    finally:
        lib.EVP_PKEY_free(pkey)


def _sign(lib: _LibCrypto, ctx: int, data: bytes) -> bytes:
    if lib.EVP_PKEY_sign_init(ctx) <= 0:
        raise LocalError(f"EVP_PKEY_sign_init failed: {lib.errors()}")
    # No EVP_PKEY_CTX_set_signature_md: OpenSSL then pads ``data`` as it is.
    if lib.EVP_PKEY_CTX_set_rsa_padding(ctx, _RSA_PKCS1_PADDING) <= 0:
        raise LocalError(f"setting PKCS #1 v1.5 padding failed: {lib.errors()}")
    size = c_size_t(0)
    if lib.EVP_PKEY_sign(ctx, None, byref(size), data, len(data)) <= 0:
        raise LocalError(f"RSA signature size query failed: {lib.errors()}")
    signature = ctypes.create_string_buffer(size.value)
    if lib.EVP_PKEY_sign(ctx, signature, byref(size), data, len(data)) <= 0:
        raise LocalError(f"RSA PKCS #1 v1.5 signing of {len(data)} octets failed: {lib.errors()}")
    return signature.raw[: size.value]
