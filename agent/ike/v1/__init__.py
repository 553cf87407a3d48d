"""IKEv1 core (RFC 2407, 2408, 2409): the ISAKMP codec, keys and the SA state machines.

Sans-I/O like the IKEv2 core beside it: no sockets, no clock, no asyncio.
"""
