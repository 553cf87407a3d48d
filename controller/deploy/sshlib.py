"""asyncssh, imported once without the warnings its DSA support raises on import.

asyncssh still wraps DSA keys, which cryptography marks deprecated; bootstrap neither
offers nor accepts DSA, and the warning would reach every operator's terminal.
"""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh

__all__ = ["asyncssh"]
