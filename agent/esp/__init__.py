"""ESP and AH data-plane core: SAs (``sa``, ``ah``), replay window, SPD and SAD. Bytes in,
bytes out; no I/O.

Leaf package: standard library and cryptography only; time is passed in as ``now``.
"""
