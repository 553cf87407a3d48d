"""Wireshark esp_sa UAT records for our SAs."""

from __future__ import annotations

import pytest

from vpnfleet.agent.esp.keys import esp_sa_record, tshark_esp_options
from vpnfleet.agent.esp.sa import InboundSa, OutboundSa, SaParams
from vpnfleet.agent.esp.transforms import Encryption, Integrity


def test_gcm_record_carries_the_salt_and_null_auth() -> None:
    key = bytes.fromhex("000102030405060708090a0b0c0d0e0f") + bytes.fromhex("cafebabe")
    sa = OutboundSa(
        SaParams(0xC0FFEE01, Encryption.AES128GCM16, key, src="192.0.2.1", dst="192.0.2.2"), 0.0
    )
    assert esp_sa_record(sa) == (
        '"IPv4","192.0.2.1","192.0.2.2","0xc0ffee01",'
        '"AES-GCM with 16 octet ICV [RFC4106]",'
        '"0x000102030405060708090a0b0c0d0e0fcafebabe","NULL",""'
    )


def test_cbc_hmac_records() -> None:
    names = {
        Integrity.HMAC_SHA2_256_128: "HMAC-SHA-256-128 [RFC4868]",
        Integrity.HMAC_SHA2_384_192: "HMAC-SHA-384-192 [RFC4868]",
        Integrity.HMAC_SHA2_512_256: "HMAC-SHA-512-256 [RFC4868]",
    }
    for integrity, name in names.items():
        params = SaParams(
            0x1234,
            Encryption.AES256,
            b"\x11" * 32,
            integrity,
            b"\x22" * integrity.key_length,
            src="2001:db8::1",
            dst="*",
        )
        record = esp_sa_record(InboundSa(params, 0.0))
        assert record == (
            f'"IPv6","2001:db8::1","*","0x00001234","AES-CBC [RFC3602]",'
            f'"0x{"11" * 32}","{name}","0x{"22" * integrity.key_length}"'
        )


def test_wildcards_and_tshark_options() -> None:
    params = SaParams(0x4321, Encryption.CHACHA20POLY1305, b"\x01" * 36)
    assert esp_sa_record(params, family="IPv6").startswith('"IPv6","*","*","0x00004321"')
    options = tshark_esp_options([params])
    assert options[:4] == [
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-o",
        "esp.enable_authentication_check:TRUE",
    ]
    assert options[5] == f"uat:esp_sa:{esp_sa_record(params)}"
    assert '"ChaCha20 with Poly1305 [RFC7634]"' in options[5]
    with pytest.raises(ValueError, match="family must be 'IPv4' or 'IPv6'"):
        esp_sa_record(params, family="ipv4")
