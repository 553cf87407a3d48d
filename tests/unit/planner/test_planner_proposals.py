"""strongSwan proposal notation -> IANA transforms (RFC 7296 section 3.3.2 numbers)."""

from __future__ import annotations

import pytest

from vpnfleet.controller.planner import (
    IkeVersion,
    Proposal,
    ProposalError,
    ProposalKind,
    Transform,
    parse_proposal,
)
from vpnfleet.controller.planner.proposals import KNOWN_TOKENS, common_proposal

ENCR, PRF, INTEG, DH, ESN = 1, 2, 3, 4, 5


def types(p: Proposal, kind: int) -> list[Transform]:
    return [t for t in p.transforms if t.type == kind]


# Every token, with the transform it stands for (IANA "IKEv2 Parameters" registry).
TOKENS = [
    ("aes128", Transform(ENCR, 12, 128)),
    ("aes256", Transform(ENCR, 12, 256)),
    ("aes128gcm16", Transform(ENCR, 20, 128)),
    ("aes256gcm16", Transform(ENCR, 20, 256)),
    ("chacha20poly1305", Transform(ENCR, 28, 0)),
    ("sha256", Transform(INTEG, 12)),
    ("sha384", Transform(INTEG, 13)),
    ("sha512", Transform(INTEG, 14)),
    ("prfsha256", Transform(PRF, 5)),
    ("prfsha384", Transform(PRF, 6)),
    ("prfsha512", Transform(PRF, 7)),
    ("modp2048", Transform(DH, 14)),
    ("ecp256", Transform(DH, 19)),
    ("ecp384", Transform(DH, 20)),
    ("x25519", Transform(DH, 31)),
    ("curve25519", Transform(DH, 31)),
    ("esn", Transform(ESN, 1)),
    ("noesn", Transform(ESN, 0)),
]


# Tokens only IKEv1 peers' IKE proposals may hold (RFC 2409 Appendix A's phase 1 hash),
# which AH proposals of either version may hold too (RFC 2404).
IKEV1_ONLY_TOKENS = [("sha1", Transform(INTEG, 2))]

# Tokens only AH proposals may hold: AUTH_AES_*_GMAC (RFC 4543; IANA "Transform Type 3").
AH_ONLY_TOKENS = [
    ("aes128gmac", Transform(INTEG, 9)),
    ("aes192gmac", Transform(INTEG, 10)),
    ("aes256gmac", Transform(INTEG, 11)),
]


def test_the_table_covers_every_known_token() -> None:
    assert sorted(t for t, _ in TOKENS + IKEV1_ONLY_TOKENS + AH_ONLY_TOKENS) == sorted(KNOWN_TOKENS)


def test_sha1_is_an_ikev1_phase_1_hash_and_an_ah_integrity_only() -> None:
    """AUTH_HMAC_SHA1_96 with its PRF, PRF_HMAC_SHA1 (RFC 2409 section 5: the PRF is the
    HMAC of the hash); refused for IKEv2 peers' IKE SAs and in ESP (no data plane for
    it); AH takes it for peers of either version (RFC 2404)."""
    p = parse_proposal("aes128-sha1-modp2048", ProposalKind.IKE, IkeVersion.V1)
    assert p.transforms == (
        Transform(ENCR, 12, 128),
        Transform(PRF, 2),
        Transform(INTEG, 2),
        Transform(DH, 14),
    )
    with pytest.raises(ProposalError, match="'sha1' is for IKEv1 peers \\(ike_version: 1\\) only"):
        parse_proposal("aes128-sha1-modp2048", ProposalKind.IKE)
    with pytest.raises(ProposalError, match="'sha1' is for IKE and AH proposals only"):
        parse_proposal("aes128-sha1", ProposalKind.ESP, IkeVersion.V1)
    for version in IkeVersion:
        assert parse_proposal("sha1", ProposalKind.AH, version).transforms == (
            Transform(INTEG, 2),
            Transform(ESN, 0),
        )


@pytest.mark.parametrize(("token", "transform"), TOKENS)
def test_each_token(token: str, transform: Transform) -> None:
    if transform.type == ENCR:
        aead = transform.id in (20, 28)
        ike = f"{token}-prfsha256-x25519" if aead else f"{token}-sha256-x25519"
        esp = token if aead else f"{token}-sha256"
    elif transform.type == INTEG:
        ike, esp = f"aes256-{token}-x25519", f"aes256-{token}"
    elif transform.type == PRF:
        ike, esp = f"aes256gcm16-{token}-x25519", ""
    elif transform.type == DH:
        ike, esp = f"aes256gcm16-prfsha256-{token}", f"aes256gcm16-{token}"
    else:
        ike, esp = "", f"aes256gcm16-{token}"
    if ike:
        assert transform in parse_proposal(ike, ProposalKind.IKE).transforms
    if esp:
        assert transform in parse_proposal(esp, ProposalKind.ESP).transforms


def test_ike_aead_proposal() -> None:
    p = parse_proposal("aes256gcm16-prfsha384-x25519", ProposalKind.IKE)
    assert p.text == "aes256gcm16-prfsha384-x25519"
    assert p.transforms == (Transform(ENCR, 20, 256), Transform(PRF, 6), Transform(DH, 31))


def test_ike_prf_follows_integrity_when_not_given() -> None:
    p = parse_proposal("aes128-sha384-ecp256", ProposalKind.IKE)
    assert types(p, PRF) == [Transform(PRF, 6)]
    p = parse_proposal("aes128-sha256-sha512-ecp256", ProposalKind.IKE)
    assert types(p, PRF) == [Transform(PRF, 5), Transform(PRF, 7)]


def test_explicit_prf_wins_over_integrity() -> None:
    p = parse_proposal("aes128-sha256-prfsha512-modp2048", ProposalKind.IKE)
    assert types(p, PRF) == [Transform(PRF, 7)]


def test_esp_defaults_to_no_esn() -> None:
    # RFC 7296 section 3.3.3: ESN is mandatory in ESP proposals.
    assert types(parse_proposal("aes256gcm16", ProposalKind.ESP), ESN) == [Transform(ESN, 0)]
    assert types(parse_proposal("aes256-sha256-esn", ProposalKind.ESP), ESN) == [Transform(ESN, 1)]


def test_alternatives_of_one_type_keep_their_order() -> None:
    p = parse_proposal("aes256-aes128-sha256-x25519-ecp256", ProposalKind.IKE)
    assert types(p, ENCR) == [Transform(ENCR, 12, 256), Transform(ENCR, 12, 128)]
    assert types(p, DH) == [Transform(DH, 31), Transform(DH, 19)]


def test_case_and_spaces_are_forgiven_but_the_text_is_kept() -> None:
    p = parse_proposal(" AES256GCM16 ", ProposalKind.ESP)
    assert p.text == " AES256GCM16 "
    assert types(p, ENCR) == [Transform(ENCR, 20, 256)]


def test_same_text_gives_the_same_object() -> None:
    assert parse_proposal("aes256-sha256", ProposalKind.ESP) is parse_proposal(
        "aes256-sha256", ProposalKind.ESP
    )


IKE, ESP = ProposalKind.IKE, ProposalKind.ESP
BAD = [
    ("aes256-sha257-x25519", IKE, "unknown algorithm 'sha257' (did you mean 'sha256'?)"),
    ("aes256gcm16-sha256-prfsha256-x25519", IKE, "AEAD encryption carries its own integrity"),
    ("aes256gcm16-sha256", ESP, "AEAD encryption carries its own integrity; remove 'sha256'"),
    ("aes256-sha256", IKE, "no DH group"),
    ("aes256gcm16-x25519", IKE, "needs an explicit PRF"),
    ("aes256-x25519", IKE, "no integrity algorithm"),
    ("aes256", ESP, "no integrity algorithm"),
    ("sha256-x25519", IKE, "no encryption algorithm"),
    ("aes256gcm16-aes256-sha256", ESP, "mixes AEAD and non-AEAD"),
    ("aes256gcm16-prfsha256-x25519-esn", IKE, "'esn' (ESN) only applies to ESP"),
    ("aes256gcm16-prfsha256", ESP, "'prfsha256' (a PRF) only applies to IKE"),
    ("aes256--sha256", ESP, "empty algorithm"),
    ("aes256-aes256-sha256", ESP, "'aes256' is written twice"),
    ("", ESP, "empty proposal"),
    ("aes256gcm", ESP, "unknown algorithm 'aes256gcm' (did you mean 'aes256gcm16'?)"),
]


@pytest.mark.parametrize(("text", "kind", "message"), BAD)
def test_bad_proposals(text: str, kind: ProposalKind, message: str) -> None:
    with pytest.raises(ProposalError) as info:
        parse_proposal(text, kind)
    # The message quotes the whole proposal and says what is wrong.
    assert f"{kind.upper()} proposal {text!r}" in str(info.value)
    assert message in str(info.value)


def test_common_proposal() -> None:
    gcm = parse_proposal("aes256gcm16-prfsha384-x25519", ProposalKind.IKE)
    cbc = parse_proposal("aes256-sha256-modp2048", ProposalKind.IKE)
    cbc_multi = parse_proposal("aes128-aes256-sha256-ecp256-modp2048", ProposalKind.IKE)
    assert common_proposal((gcm, cbc), (cbc,)) is cbc
    # Alternatives within one proposal: a transform of each type in common is enough.
    assert common_proposal((cbc,), (cbc_multi,)) is cbc
    assert common_proposal((gcm,), (cbc,)) is None
    # PFS (a DH group in ESP) on one side only does not agree.
    pfs = parse_proposal("aes256gcm16-x25519", ProposalKind.ESP)
    assert common_proposal((parse_proposal("aes256gcm16", ProposalKind.ESP),), (pfs,)) is None
