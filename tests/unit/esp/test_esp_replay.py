"""Anti-replay window (RFC 4303 section 3.4.3, RFC 6479) and ESN inference (Appendix A)."""

from __future__ import annotations

import random

import pytest

from vpnfleet.agent.esp.replay import ReplayVerdict, ReplayWindow

FRESH, REPLAYED, STALE = ReplayVerdict.FRESH, ReplayVerdict.REPLAYED, ReplayVerdict.STALE


def accept(window: ReplayWindow, seq: int) -> ReplayVerdict:
    verdict = window.check(seq)
    if verdict is FRESH:
        assert window.update(seq)
    return verdict


def test_in_order_then_replay() -> None:
    window = ReplayWindow(64)
    for seq in range(1, 200):
        assert accept(window, seq) is FRESH
    assert window.top == 199
    assert window.check(199) is REPLAYED
    assert window.check(150) is REPLAYED


def test_zero_is_never_valid() -> None:
    assert ReplayWindow().check(0) is STALE
    assert not ReplayWindow().update(0)


def test_left_of_window_is_stale_and_edge_is_inside() -> None:
    window = ReplayWindow(1024)
    assert accept(window, 5000) is FRESH
    # The window holds top-1023 .. top.
    assert window.check(5000 - 1023) is FRESH
    assert window.check(5000 - 1024) is STALE
    assert accept(window, 5000 - 1023) is FRESH
    assert window.check(5000 - 1023) is REPLAYED


def test_out_of_order_inside_window() -> None:
    window = ReplayWindow(128)
    for seq in (10, 5, 7, 100, 6, 99, 130):
        assert accept(window, seq) is FRESH
    for seq in (10, 5, 7, 100, 6, 99, 130):
        assert window.check(seq) is REPLAYED
    assert window.check(8) is FRESH
    assert window.check(2) is STALE  # 130 - 128 = 2 is just outside


def test_check_alone_changes_nothing() -> None:
    window = ReplayWindow()
    assert window.check(10) is FRESH
    assert window.top == 0
    assert window.check(10) is FRESH


def test_update_refuses_duplicates() -> None:
    window = ReplayWindow()
    assert window.update(3)
    assert not window.update(3)


def test_big_jump_clears_the_ring() -> None:
    window = ReplayWindow(64)
    for seq in range(1, 65):
        accept(window, seq)
    assert accept(window, 1_000_000) is FRESH
    # Every number inside the new window but never seen is fresh, not left-over bits.
    for seq in range(1_000_000 - 63, 1_000_000):
        assert window.check(seq) is FRESH


@pytest.mark.parametrize("size", [64, 128, 1024, 4096])
def test_matches_a_set_model(size: int) -> None:
    rng = random.Random(size)
    window = ReplayWindow(size)
    seen: set[int] = set()
    top = 0
    for _ in range(20000):
        seq = max(1, top + rng.randint(-2 * size, 40))
        if seq > top:
            expected = FRESH
        elif seq + size <= top:
            expected = STALE
        elif seq in seen:
            expected = REPLAYED
        else:
            expected = FRESH
        assert accept(window, seq) is expected, (seq, top)
        if expected is FRESH:
            seen.add(seq)
            top = max(top, seq)


@pytest.mark.parametrize("size", [0, 32, 100, -64])
def test_bad_sizes_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="positive multiple of 64"):
        ReplayWindow(size)


def test_size_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="must be an int"):
        ReplayWindow(1024.0)  # type: ignore[arg-type]


# --- RFC 4303 Appendix A2.2: inferring the high 32 bits --------------------------------


def window_at(top: int, size: int = 1024) -> ReplayWindow:
    window = ReplayWindow(size)
    assert window.update(top)
    return window


def test_esn_case_a_same_subspace() -> None:
    window = window_at((7 << 32) | 5000)
    assert window.infer_esn(4990) == (7 << 32) | 4990
    assert window.infer_esn(6000) == (7 << 32) | 6000


def test_esn_case_a_low_number_means_next_subspace() -> None:
    # Left of the window's bottom (5000 - 1023) is read as having wrapped forward.
    window = window_at((7 << 32) | 5000)
    assert window.infer_esn(10) == (8 << 32) | 10


def test_esn_case_b_window_straddles_the_wrap() -> None:
    window = window_at((7 << 32) | 100)
    # Near the top of the 32-bit space: still the previous subspace, inside the window.
    assert window.infer_esn(0xFFFFFF00) == (6 << 32) | 0xFFFFFF00
    assert window.infer_esn(150) == (7 << 32) | 150


def test_esn_across_the_wrap_in_sequence() -> None:
    window = window_at(0xFFFFFFE0, 64)
    for full in range(0xFFFFFFF0, 0x100000010):
        seq = window.infer_esn(full & 0xFFFFFFFF)
        assert seq == full
        assert window.check(seq) is FRESH
        window.update(seq)
    assert window.top == 0x10000000F


def test_esn_before_any_wrap_cannot_go_negative() -> None:
    window = ReplayWindow(1024)
    assert window.infer_esn(0xFFFFFFF0) is None
    assert window.infer_esn(1) == 1
