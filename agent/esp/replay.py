"""Anti-replay window for inbound ESP SAs.

RFC 4303 section 3.4.3 describes the receiver's window; RFC 6479 shows how to keep it as
a ring of bitmap blocks so that advancing the window clears whole blocks instead of
shifting every bit. The window here holds ``size`` sequence numbers to the left of (and
including) the highest one accepted so far; the ring has one block more than the window
needs, so the block being cleared on a slide never holds a bit that is still inside the
window.

Use ``check()`` before the ICV is verified and ``update()`` only after it verified
(RFC 4303 section 3.4.3: a forged packet must not move the window).

With extended sequence numbers only the low 32 bits travel in the packet;
``infer_esn()`` reconstructs the high 32 bits from the window (RFC 4303 Appendix A2.2).
"""

from __future__ import annotations

from enum import IntEnum

_BLOCK_BITS = 64
_BLOCK_SHIFT = 6
_BLOCK_MASK = _BLOCK_BITS - 1
_LOW_MASK = 0xFFFFFFFF

DEFAULT_WINDOW_SIZE = 1024


class ReplayVerdict(IntEnum):
    """Outcome of ``ReplayWindow.check``."""

    FRESH = 0
    """Never seen and inside (or right of) the window: go on and verify the ICV."""
    REPLAYED = 1
    """Inside the window and already received."""
    STALE = 2
    """Left of the window (or zero): too old to tell, so dropped (RFC 4303 3.4.3)."""


class ReplayWindow:
    """A sliding anti-replay window of ``size`` sequence numbers kept as a bitmap ring.

    Sequence numbers are full values (64-bit with ESN); the first valid one is 1.
    """

    __slots__ = ("_blocks", "_ring", "size", "top")

    def __init__(self, size: int = DEFAULT_WINDOW_SIZE) -> None:
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"replay window size must be an int, got {type(size).__name__}")
        if size < _BLOCK_BITS or size % _BLOCK_BITS:
            raise ValueError(
                f"replay window size must be a positive multiple of {_BLOCK_BITS}, got {size}"
            )
        self.size = size
        # RFC 6479 section 2: one spare block so a slide never erases live bits.
        self._blocks = size // _BLOCK_BITS + 1
        self._ring = [0] * self._blocks
        self.top = 0
        """Highest sequence number accepted so far (0 before the first packet)."""

    def check(self, seq: int) -> ReplayVerdict:
        """Tell whether ``seq`` may be accepted; changes nothing."""
        top = self.top
        if seq > top:
            return ReplayVerdict.FRESH
        if seq == 0 or seq + self.size <= top:
            return ReplayVerdict.STALE
        if self._ring[(seq >> _BLOCK_SHIFT) % self._blocks] & (1 << (seq & _BLOCK_MASK)):
            return ReplayVerdict.REPLAYED
        return ReplayVerdict.FRESH

    def update(self, seq: int) -> bool:
        """Record ``seq`` as received (after its ICV verified).

        Returns False, changing nothing, if ``seq`` is not acceptable any more (so a
        caller that interleaves several packets between check and update stays safe).
        """
        top = self.top
        ring = self._ring
        blocks = self._blocks
        if seq > top:
            # Right of the window: slide, clearing the blocks passed over (at most all).
            index = seq >> _BLOCK_SHIFT
            moved = index - (top >> _BLOCK_SHIFT)
            if moved >= blocks:
                ring[:] = [0] * blocks
            else:
                for step in range(index - moved + 1, index + 1):
                    ring[step % blocks] = 0
            self.top = seq
            ring[index % blocks] |= 1 << (seq & _BLOCK_MASK)
            return True
        if seq == 0 or seq + self.size <= top:
            return False
        slot = (seq >> _BLOCK_SHIFT) % blocks
        bit = 1 << (seq & _BLOCK_MASK)
        if ring[slot] & bit:
            return False
        ring[slot] |= bit
        return True

    def infer_esn(self, seq_low: int) -> int | None:
        """The full 64-bit sequence number for the received low 32 bits.

        RFC 4303 Appendix A2.2: with Tl/Th the low/high halves of the window's top and
        W its size, case A (Tl >= W - 1, the window lies within one 2^32 subspace)
        and case B (the window straddles a wrap). Returns None when the inferred high
        half would be negative (a low number left of a window that has not wrapped yet).
        """
        top_low = self.top & _LOW_MASK
        top_high = self.top >> 32
        bottom = (top_low - self.size + 1) & _LOW_MASK
        if top_low >= self.size - 1:
            high = top_high if seq_low >= bottom else top_high + 1
        else:
            high = top_high - 1 if seq_low >= bottom else top_high
        if high < 0 or high > _LOW_MASK:
            return None
        return (high << 32) | seq_low
