"""One nftables table of the agent's own, written through the ``nft`` command.

Every change is one ``nft -f -`` transaction: replacing the table declares it (so that
deleting it cannot fail), deletes it and adds it again with the new body, all or
nothing; the kernel never holds half a table, nor a moment without one. Other tables
(the host's firewall, kube-proxy's, Docker's) are never touched; :func:`list_ruleset`
only reads them, once at start.
"""

from __future__ import annotations

import asyncio
import errno
import json
import shutil
from typing import Any

NFT = "nft"
NFT_TIMEOUT = 30.0


class NftError(OSError):
    """``nft`` refused a change or could not be run; the message says why."""


async def list_ruleset() -> Any:
    """The namespace's whole ruleset as ``nft -j list ruleset`` gives it (read only, to
    check that the host's own firewall lets IKE through)."""
    path = shutil.which(NFT)
    if path is None:
        raise NftError(errno.ENOENT, "the nft command is not installed (package nftables)")
    proc = await asyncio.create_subprocess_exec(
        path,
        "-j",
        "list",
        "ruleset",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), NFT_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise NftError(errno.ETIMEDOUT, "nft -j list ruleset did not finish") from None
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip()
        raise NftError(errno.EINVAL, f"nft -j list ruleset: {message}")
    try:
        return json.loads(out or b"{}")
    except ValueError as exc:
        raise NftError(errno.EINVAL, f"nft -j list ruleset: not JSON: {exc}") from None


class NftTable:
    """``table FAMILY NAME`` in the network namespace the process runs in."""

    def __init__(self, name: str, family: str = "inet") -> None:
        self.name = name
        self.family = family

    @property
    def spec(self) -> str:
        return f"{self.family} {self.name}"

    async def replace(self, body: str) -> None:
        """Make the table hold exactly ``body`` (chains and their rules)."""
        script = f"table {self.spec}\ndelete table {self.spec}\ntable {self.spec} {{\n{body}}}\n"
        await self._run(["-f", "-"], script)

    async def delete(self) -> None:
        """Remove the table; one that is not there is not an error."""
        await self._run(["-f", "-"], f"table {self.spec}\ndelete table {self.spec}\n")

    async def _run(self, args: list[str], script: str) -> None:
        path = shutil.which(NFT)
        if path is None:
            raise NftError(errno.ENOENT, "the nft command is not installed (package nftables)")
        proc = await asyncio.create_subprocess_exec(
            path,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(script.encode()), NFT_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise NftError(errno.ETIMEDOUT, f"nft {' '.join(args)} did not finish") from None
        if proc.returncode != 0:
            message = err.decode(errors="replace").strip()
            raise NftError(errno.EINVAL, f"nft on table {self.spec}: {message}")
