"""IKEv1 reauthentication and PSK rotation against a real strongSwan charon (Debian
5.9, ``version = 1``) in network namespaces: does phase 2 survive a new Main mode and
the old ISAKMP SA's phase 1 Delete, each side reauthenticating? Does our end find the
old key charon still uses among its accepted ones?

What charon 5.9 does (measured here, and in its source: ``adopt_children_job``): when
a Main mode completes with a peer it already holds an ISAKMP SA with (same hosts,
identities and config) it moves that SA's CHILD_SAs to the new one, and deletes the old
ISAKMP SA some seconds later; a phase 1 Delete then takes no CHILD_SA with it. So our
reauthentication starts no Quick mode, adopts our Quick mode SAs onto the new ISAKMP SA
and deletes the old one with a phase 1 Delete only: the child SAs stay at both ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.interop.test_interop_ikev1 import ESP, IKE, Lab
from tests.support.charon import PSK, interop_setup, skip_reason

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]


@pytest.fixture(name="lab")
def v1_lab() -> Iterator[Lab]:
    with interop_setup(log_level=1, aggressive_psk=True) as (topology, charon, directory):
        built = Lab(charon, topology.our_ns, directory)
        try:
            yield built
        finally:
            if built.ours is not None:
                built.ours.close()


def _established(lab: Lab) -> list[dict[str, Any]]:
    return [sa for sa in lab.charon.list_sas() if sa.get("state") == "ESTABLISHED"]


def _installed(sa: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (c["spi-in"], c["spi-out"])
        for c in sa.get("child-sas", {}).values()
        if c.get("state") == "INSTALLED"
    ]


def _until(check: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_our_reauthentication_keeps_the_child_at_both_ends(lab: Lab) -> None:
    """A new Main mode with no Quick mode; we adopt our child, delete the old ISAKMP SA
    (phase 1 Delete only): charon holds one ISAKMP SA, the new one, with the same child,
    still installed; a later Delete of the child over the new ISAKMP SA reaches it."""
    peer = lab.load(IKE, ESP, charon_initiates=False)
    first, child = lab.establish(charon_initiates=False)
    pair = (child["spi_out"], child["spi_in"])  # charon's (in, out)
    peer.command("reauth")
    second = peer.wait("IkeSaEstablished", timeout=15)
    assert second["spi_i"] != first["spi_i"]
    peer.command("adopt")
    assert peer.wait("Adopted")["spis"] == [child["spi_in"]]
    time.sleep(1.0)
    peer.command("delete_oldest")
    peer.wait("IkeSaDeleted", timeout=5)
    _until(lambda: len(_established(lab)) == 1)
    (sa,) = _established(lab)
    log = lab.charon.log_text()
    assert (sa["initiator-spi"], sa["responder-spi"]) == (second["spi_i"], second["spi_r"])
    assert _installed(sa) == [pair], (sa, log[-6000:])
    assert "adopting 1 children" in log, log[-6000:]
    assert not [e for e in peer.seen if e["event"] in ("ChildSaEstablished", "ChildSaDeleted")]
    # The child is now managed over the new ISAKMP SA: charon finds our Delete there.
    peer.command("delete_child")
    deleted = peer.wait("ChildSaDeleted", timeout=5)
    assert deleted["spi_in"] == child["spi_in"]
    _until(lambda: not _installed(_established(lab)[0]))
    assert not _installed(_established(lab)[0]), lab.charon.list_sas()


def test_charons_reauthentication_moves_its_child_without_a_quick_mode(lab: Lab) -> None:
    """charon 5.9 reauthenticates (``swanctl --rekey --reauth``) with a new Main mode
    and no Quick mode: it moves its CHILD_SA, SPIs unchanged, to the new ISAKMP SA and
    leaves the old one (REKEYING) without children, sending no Delete for a while. So
    the responder must adopt the child too (the engine does, when no INITIAL-CONTACT
    came): our Delete of the child over the new ISAKMP SA then reaches charon there."""
    peer = lab.load(IKE, ESP, charon_initiates=False)
    first, child = lab.establish(charon_initiates=False)
    pair = (child["spi_out"], child["spi_in"])
    lab.charon.swanctl("--rekey", "--ike", "net-ike", "--reauth")
    second = peer.wait("IkeSaEstablished", timeout=15)
    assert second["spi_i"] != first["spi_i"] and second["initial_contact"] is False
    time.sleep(3)
    while not peer.events.empty():
        peer.seen.append(peer.events.get())
    assert [e["event"] for e in peer.seen] == []  # no Quick mode, no Delete
    (new,) = _established(lab)
    assert (new["initiator-spi"], new["responder-spi"]) == (second["spi_i"], second["spi_r"])
    assert _installed(new) == [pair], new
    old = [sa for sa in lab.charon.list_sas() if sa["initiator-spi"] == first["spi_i"]]
    assert [sa.get("child-sas", {}) for sa in old] in ([], [{}]), old
    peer.command("adopt")
    assert peer.wait("Adopted")["spis"] == [child["spi_in"]]
    peer.command("delete_child")
    assert peer.wait("ChildSaDeleted", timeout=5)["spi_in"] == child["spi_in"]
    _until(lambda: not _installed(_established(lab)[0]))
    assert not _installed(_established(lab)[0]), lab.charon.list_sas()


@pytest.mark.parametrize(
    ("aggressive", "charon_initiates"),
    [(False, True), (True, False)],
    ids=["main-charon-initiates", "aggressive-we-initiate"],
)
def test_charon_on_the_old_key_meets_us_on_the_new_accepting_it(
    lab: Lab, aggressive: bool, charon_initiates: bool
) -> None:
    """PSK rotation halfway: we hold the new key and accept the old one charon still
    has. Where we cannot choose the key, we find charon's among ours: as the Main mode
    responder at message 5, as the Aggressive mode initiator at HASH_R (charon, the
    Aggressive mode responder, proves itself with its key first)."""
    peer = lab.load(
        IKE,
        ESP,
        charon_initiates=charon_initiates,
        aggressive=aggressive,
        our_psk="the new key after a rotation",
        accepted_psks=[PSK],
    )
    ike, child = lab.establish(charon_initiates=charon_initiates)
    (sa,) = _established(lab)
    assert (sa["initiator-spi"], sa["responder-spi"]) == (ike["spi_i"], ike["spi_r"])
    assert _installed(sa) == [(child["spi_out"], child["spi_in"])]
    assert not [e for e in peer.seen if e["event"] == "Dropped"]
