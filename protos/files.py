"""Writing a file so that a crash, a planted link or a shared directory cannot hurt it:
one writer for the controller and the agent alike.

:func:`write_atomically` writes a temporary file with an unpredictable name beside the
target, created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (so nothing planted under that
name, a symlink least of all, is ever opened) at mode 0600 and then set to the mode
asked for with ``fchmod`` (the umask neither widens nor narrows it); it writes until
every byte is down, fsyncs, renames over the target and fsyncs the directory, so a crash
leaves the old content or the new, never half of one.

A private file (a mode with no group or other bits: keys, PSKs, plans) is only written
into a directory that its owner (or root) alone can write to: in a directory others
can write to, they could swap the file or its name between our writing and its reader.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

PRIVATE = 0o600
"""Mode of secret files: keys, PSKs, plans, journals."""

PUBLIC = 0o644
"""Mode of files anyone may read: certificates, CSRs."""

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeDirectoryError(PermissionError):
    """A private file was to be written into a directory others can write to, or that
    another user owns. An :class:`OSError` (EACCES), so callers that report failed
    writes report this one too; its message names the directory, its mode and the fix."""

    def __init__(self, directory: Path, reason: str) -> None:
        message = (
            f"refusing to write a private file in {directory}: {reason}; anyone who can "
            "write there could replace or redirect what is written. Use a directory only "
            f"you can write to (e.g. chmod 700 {directory})"
        )
        super().__init__(errno.EACCES, message, str(directory))
        self.message = message

    def __str__(self) -> str:
        return self.message


class PrivateFileError(PermissionError):
    """A secret file that cannot be used: missing, not a regular file, or open to its
    group or others (its content must then be taken as known, as ssh does with keys).
    The message says what is wrong and how to fix it."""


def read_private(path: Path, what: str) -> bytes:
    """The content of the secret file ``path`` (``what`` names it in errors): a regular
    file that only its owner may access. The checks are made on the file opened, not on
    its name, so nothing can be swapped in between."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise PrivateFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PrivateFileError(f"{what} {path} is not a regular file")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PrivateFileError(
                f"{what} {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
            )
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except PrivateFileError:
        raise
    except OSError as exc:
        raise PrivateFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def mode_of(path: Path, default: int = PUBLIC) -> int:
    """The permission bits ``path`` has, to keep them when it is rewritten; ``default``
    when there is no such file."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return default


def check_private_directory(directory: Path) -> None:
    """Raise :class:`UnsafeDirectoryError` unless only its owner can write to
    ``directory`` and that owner is the current user or root. A sticky bit does not
    make a shared directory private: the file's name can still be taken first."""
    info = os.stat(directory)
    mode = stat.S_IMODE(info.st_mode)
    writers = [
        who for who, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if mode & bit
    ]
    if writers:
        raise UnsafeDirectoryError(
            directory, f"it has mode {mode:04o} (writable by {' and '.join(writers)})"
        )
    if info.st_uid not in (os.geteuid(), 0):
        raise UnsafeDirectoryError(
            directory, f"it belongs to user id {info.st_uid}, not to this user ({os.geteuid()})"
        )


def make_private_directory(directory: Path) -> Path:
    """Create ``directory`` (and missing parents) mode 0700 if it is not there, check
    that it is private (:func:`check_private_directory`) and return it."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_private_directory(directory)
    return directory


def fsync_directory(directory: Path) -> None:
    """Make the renames and unlinks done in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # a regular file never does this; do not spin if one does
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def write_atomically(
    path: Path, data: bytes, mode: int = PRIVATE, *, overwrite: bool = True
) -> None:
    """Put ``data`` at ``path`` with ``mode``, atomically (see the module's docstring).

    With ``overwrite=False`` an existing ``path`` is left alone and
    :class:`FileExistsError` raised. A private ``mode`` needs a private directory
    (:func:`check_private_directory`). The directory must exist.
    """
    directory = path.parent
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        check_private_directory(directory)
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, _CREATE, PRIVATE)
    try:
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists, whatever it is
            os.unlink(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(directory)
