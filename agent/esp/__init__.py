"""ESP data-plane core: SAs, replay window, SPD and SAD. Bytes in, bytes out; no I/O.

Leaf package: standard library and cryptography only; time is passed in as ``now``.
"""
