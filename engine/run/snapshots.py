"""Texts many runs record alike (a server's pool, a served flow), kept once and hard-linked into each run's folder.

A server records the same `pool.json` and `flow.flow` with every request it answers. Creating
a file is the dearest thing a served call does on a disk like ext4 (0.05 to 0.25 ms of kernel
time, against 0.01 ms for a hard link), so each distinct text is written once, under its
digest, in the home's `snapshots/` folder, and linked into each run as its own file name.
Readers see an ordinary file. Where a link cannot be made (a file system without hard links,
another device, an inode at its link limit), the text is written again: a snapshot saves
time, it is never needed.

Run records are never edited in place (a summary is replaced by a rename, which leaves the
linked files alone), so runs that share a snapshot cannot change each other's record.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path


def write_file(path: Path | str, data: bytes | str, durable: bool = False) -> None:
    """`data` into `path` (created or truncated) with plain system calls: a server writes a run's files on every
    request, and a buffered text file costs several times the write itself."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(path: Path | str) -> None:
    """Make a folder's entries durable (a file's own fsync does not make its name durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Snapshots:
    """The snapshot folder of one home; nothing is created until a text is placed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        #: digest -> the snapshot this process links to (a fresh one replaces it when it is full of links)
        self._known: dict[str, str] = {}

    def place(self, text: str, dest: str, durable: bool) -> None:
        """Make `dest` (a new file in a run's folder) hold `text`: a link to its snapshot, else a plain write.

        When `durable`, a new snapshot is fsynced with its folder before anything links to it;
        the link itself becomes durable with the run folder's own fsync.
        """
        data = text.encode("utf-8")
        digest = hashlib.blake2b(data, digest_size=16).hexdigest() + os.path.splitext(dest)[1]
        for fresh in (False, True):
            source = self._known.get(digest) if not fresh else None
            try:
                if source is None:
                    source = self._snapshot(digest, data, durable, fresh)
                os.link(source, dest)
            except FileExistsError:
                raise
            except OSError:
                self._known.pop(digest, None)  # at its link limit, gone, or links are not possible here
                continue
            self._known[digest] = source
            return
        write_file(dest, data)

    def _snapshot(self, digest: str, data: bytes, durable: bool, fresh: bool) -> str:
        """The snapshot file for `digest`: the shared one (made if missing), or, when `fresh`, a new one of this process."""
        path = f"{self.folder}/{digest}"
        if fresh:
            stem, ext = os.path.splitext(digest)
            path = f"{self.folder}/{stem}-{secrets.token_hex(4)}{ext}"
        elif os.path.exists(path):
            return path
        os.makedirs(self.folder, exist_ok=True)
        tmp = f"{path}.{secrets.token_hex(4)}.tmp"  # another process may be making the same snapshot: each its own name
        write_file(tmp, data, durable)
        os.replace(tmp, path)  # whole or absent, never torn
        if durable:
            sync_folder(self.folder)
        return path
