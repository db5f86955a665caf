"""One load per machine: the node tier (files in /tmp) in front of the fleet's shared tier.

On Lambda Managed Instances the processes of one execution environment share ``/tmp`` but not
memory. ``node_tier()`` decides whether they share copies through it: ``ATHENA_WARM_NODE_DIR``
(a directory, or ``off``), on by default (``/tmp/athena-warm``) when the runtime says it is a
Managed Instance (``AWS_LAMBDA_INITIALIZATION_TYPE=lambda-managed-instances``).

Without a fleet tier, the node tier (``FileTier``) is the shared tier: one process per machine
queries the origin, its siblings read the file. With one, ``NodeTier`` puts it in front: the
generation, the leases and the notes are the fleet's; a copy is checked against the fleet's by
its header (a small read), and downloaded by one process per machine (the others wait on a file
lock, then read the file); a copy published by one process is kept in the file too. When the
fleet's tier cannot be reached, the machine falls back on its own: its generation, its leases
(so still one origin query per machine) and its copies.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Literal

from ._codec import CorruptPayloadError, read_header
from ._config import resolve
from ._files import FileTier
from .l2 import MAX_CHUNKS, Generation, Lease, Pointer, SharedTier, WriteOutcome

__all__ = ["NodeTier", "node_dir"]

MANAGED_INSTANCES = "lambda-managed-instances"
DEFAULT_DIR = "/tmp/athena-warm"  # Lambda's only writable directory; made mode 0700


def node_dir(value: str | None = None) -> str | None:
    """The node tier's directory: ``value`` > ``$ATHENA_WARM_NODE_DIR`` > /tmp/athena-warm on
    a Managed Instance; None when off (``off``, ``false``, ``0``, or not a Managed Instance)."""
    raw = resolve(value, "NODE_DIR", None)
    if raw is None:
        managed = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == MANAGED_INSTANCES
        return DEFAULT_DIR if managed else None
    return None if raw.strip().lower() in ("", "off", "false", "0", "no", "none") else raw


class NodeTier:
    """A SharedTier: the machine's files (``local``) in front of the fleet's tier (``remote``)."""

    name = "node"

    def __init__(self, local: FileTier, remote: SharedTier, *,
                 fetch_timeout: float = 30.0) -> None:
        self.local = local
        self.remote = remote
        self.fetch_timeout = fetch_timeout
        self._seen = threading.local()  # what head() found, for the read() that follows
        self._local_leases: dict[tuple[str, str, str], None] = {}

    def close(self) -> None:
        close = getattr(self.remote, "close", None)
        if callable(close):
            close()

    def _remote_up(self) -> bool:
        reachable = getattr(self.remote, "reachable", None)
        return bool(reachable()) if callable(reachable) else True

    # -- the generation ----------------------------------------------------------------------------

    def generation(self, mapping: str) -> tuple[Generation, str] | None:
        got = self.remote.generation(mapping)
        return got if got is not None else self.local.generation(mapping)

    def bump(self, mapping: str, *, hard: bool = False) -> Generation:
        gen = self.remote.bump(mapping, hard=hard)
        with contextlib.suppress(Exception):  # what this machine uses while the fleet's is down
            self.local.bump(mapping, hard=hard)
        return gen

    # -- copies ------------------------------------------------------------------------------------

    def head(self, mapping: str, fingerprint: str, size: int) -> bytes | None:
        self._seen.head = None
        theirs = self.remote.head(mapping, fingerprint, size)
        ours = self.local.head(mapping, fingerprint, size)
        if theirs is None:
            return ours  # the fleet's tier has none or cannot say: the machine's (still checked)
        self._seen.head = (mapping, fingerprint, theirs)
        return theirs

    def read(self, mapping: str, fingerprint: str, *,
             max_chunks: int = MAX_CHUNKS) -> bytes | None:
        seen = getattr(self._seen, "head", None)
        self._seen.head = None
        if seen is None or seen[:2] != (mapping, fingerprint):  # no head just before
            got = self.local.read(mapping, fingerprint, max_chunks=max_chunks)
            return got if got is not None else \
                self.remote.read(mapping, fingerprint, max_chunks=max_chunks)
        theirs: bytes = seen[2]
        got = self.local.read(mapping, fingerprint, max_chunks=max_chunks)
        if got is not None and got.startswith(theirs):
            return got  # the machine already holds the fleet's copy
        with self._fetching(mapping, fingerprint):
            got = self.local.read(mapping, fingerprint, max_chunks=max_chunks)
            if got is not None and got.startswith(theirs):
                return got  # a sibling downloaded it while this process waited
            blob = self.remote.read(mapping, fingerprint, max_chunks=max_chunks)
            if blob is not None:
                self._keep(mapping, fingerprint, blob)
            return blob

    @contextlib.contextmanager
    def _fetching(self, mapping: str, fingerprint: str) -> Iterator[None]:
        """One download per machine: the others wait (up to fetch_timeout), then read."""
        import fcntl

        try:
            folder = self.local.root / mapping / fingerprint
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(folder / ".fetch", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield  # no lock to be had: download anyway
            return
        try:
            deadline = time.monotonic() + self.fetch_timeout
            while time.monotonic() < deadline:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)

    def _keep(self, mapping: str, fingerprint: str, blob: bytes) -> None:
        """Store the fleet's copy in the machine's files, described by its own header."""
        try:
            header = read_header(blob, partial=True)
        except CorruptPayloadError:
            return  # the caller's checks will say what is wrong with it
        self.local.store(mapping, fingerprint, blob, Pointer(
            secrets.token_hex(6), 1, header.epoch, header.generation,
            int(header.created_at * 1000)))

    def write(self, mapping: str, fingerprint: str, blob: bytes, *, ttl: float,
              created_at: float, generation: Generation, token: str | None) -> WriteOutcome | None:
        outcome = self.remote.write(mapping, fingerprint, blob, ttl=ttl, created_at=created_at,
                                    generation=generation, token=token)
        if outcome == "written":
            self._keep(mapping, fingerprint, blob)
        elif outcome is None:
            return self.local.write(mapping, fingerprint, blob, ttl=ttl, created_at=created_at,
                                    generation=generation, token=token)
        return outcome

    def renew(self, mapping: str, fingerprint: str, note: str, *, created_ms: int,
              ttl: float) -> bool | None:
        got = self.remote.renew(mapping, fingerprint, note, created_ms=created_ms, ttl=ttl)
        return got if got is not None else \
            self.local.renew(mapping, fingerprint, note, created_ms=created_ms, ttl=ttl)

    def note(self, mapping: str, fingerprint: str) -> str | None:
        got = self.remote.note(mapping, fingerprint)
        return got if got is not None else self.local.note(mapping, fingerprint)

    # -- leases: the fleet's; the machine's while the fleet's tier cannot be reached ---------------

    def acquire(self, mapping: str, fingerprint: str, token: str, *, ttl: float,
                at: float) -> Lease | Literal[False] | None:
        got = self.remote.acquire(mapping, fingerprint, token, ttl=ttl, at=at)
        if got is not None:
            return got
        got = self.local.acquire(mapping, fingerprint, token, ttl=ttl, at=at)
        if isinstance(got, Lease):
            if len(self._local_leases) >= 256:
                del self._local_leases[next(iter(self._local_leases))]
            self._local_leases[(mapping, fingerprint, token)] = None
        return got

    def info(self, mapping: str, fingerprint: str) -> Lease | None:
        tier: SharedTier = self.remote if self._remote_up() else self.local
        return tier.info(mapping, fingerprint)

    def _home(self, mapping: str, fingerprint: str, token: str) -> SharedTier:
        return self.local if (mapping, fingerprint, token) in self._local_leases else self.remote

    def update(self, mapping: str, fingerprint: str, lease: Lease, *,
               ttl: float | None = None) -> bool:
        return self._home(mapping, fingerprint, lease.token).update(
            mapping, fingerprint, lease, ttl=ttl)

    def release(self, mapping: str, fingerprint: str, token: str) -> bool:
        done = self._home(mapping, fingerprint, token).release(mapping, fingerprint, token)
        self._local_leases.pop((mapping, fingerprint, token), None)
        return done
