"""A shared tier in a directory: the processes of one machine share copies through files.

On Lambda Managed Instances, one execution environment runs several Python processes (one per
concurrent request; 16 per vCPU by default), each with its own memory and its own
initialization, all sharing ``/tmp``. ``FileTier`` is the SharedTier contract over that
directory: the same generations with epochs, fenced publishes and leases as Redis, so one
process per environment loads a mapping and its siblings read the file.

Layout under ``root`` (mode 0700)::

    <name>/.lock            flock'ed (exclusive) around every read-modify-write below
    <name>/gen.json         {"e": epoch, "g": "<number>", "hard": "<floor>"}
    <name>/<fp>/copy        "<pointer>\\n" + the encoded copy (the L2 format, checksummed)
    <name>/<fp>/lease.json  {"fence": N, "until_ms": T, "lease": "<token> <json>" | null}
    <name>/<fp>/note        the revalidation note

A file is written whole to a temporary name in the same directory, fsync'ed, then renamed over
the old one, so a reader (which takes no lock) sees the old file or the new one, never a torn
one; a file that is torn or damaged anyway (a full disk, another program) reads as a miss.
Times that cross processes are epoch seconds (``clock``). Everything fails open: an OSError is
a miss (None), as for an unreachable server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from ._events import emit
from .exceptions import L2Error
from .l2 import (
    MAX_CHUNKS,
    MAX_LEASE_BYTES,
    MIN_CHUNK_BYTES,
    Generation,
    Lease,
    Pointer,
    WriteOutcome,
    new_epoch,
    parse_generation,
)

__all__ = ["FileTier"]

T = TypeVar("T")
MAX_SMALL_BYTES = MAX_LEASE_BYTES + 256
_POINTER_MAX = 128


class FileTier:
    """A SharedTier in a local directory, for the processes of one machine."""

    name = "node"

    def __init__(self, root: str | Path, *, clock: Callable[[], float] = time.time,
                 lock_timeout: float = 5.0) -> None:
        self.root = Path(root)
        self.clock = clock  # epoch seconds: lease expiries cross processes
        self.lock_timeout = lock_timeout
        self._warned = False
        self._root_ok = False

    def key(self, mapping: str, *parts: str) -> str:
        return str(self.root.joinpath(mapping, *parts))

    # -- plumbing --------------------------------------------------------------------------------

    def _run(self, what: str, mapping: str, fn: Callable[[], T], default: T) -> T:
        try:
            self._check_root()
            return fn()
        except OSError as exc:
            if not self._warned:  # once per process: a full or read-only disk repeats
                self._warned = True
                emit(logging.WARNING, "l2_error",
                     "athena-warm: the node tier in %s failed at %s of %s (%s: %s); each "
                     "process loads on its own until it works again", self.root, what,
                     mapping, type(exc).__name__, exc,
                     extra={"mapping": mapping, "tier": "node"})
            return default

    def _check_root(self) -> None:
        """The directory is ours alone: created 0700, or found owned by this user, not a
        symlink, not writable by others (else another user could plant copies in it)."""
        if self._root_ok:
            return
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(self.root)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or \
                st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise PermissionError(f"{self.root} is not a directory of this user's alone "
                                  "(a symlink, another owner, or writable by others): set "
                                  "ATHENA_WARM_NODE_DIR to a private directory")
        self._root_ok = True

    @contextlib.contextmanager
    def _locked(self, mapping: str) -> Iterator[Path]:
        """The mapping's directory, under its exclusive lock (waits up to lock_timeout)."""
        import fcntl

        folder = self.root / mapping
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{folder}/.lock held for over "
                                           f"{self.lock_timeout} s") from None
                    time.sleep(0.002)
            yield folder
        finally:
            os.close(fd)  # closing releases the lock

    @staticmethod
    def _read(path: Path, limit: int) -> bytes | None:
        """The file's bytes; None when absent; b"" when bigger than ``limit`` (damage)."""
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size > limit:
                    return b""
                return f.read(limit + 1)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            return b""

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        """Write whole, fsync, rename over: readers see the old file or the new one."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def flush(self) -> None:
        """Lose everything (for tests)."""
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the generation ----------------------------------------------------------------------------

    def _generation_locked(self, folder: Path) -> tuple[Generation, str]:
        raw = self._read(folder / "gen.json", MAX_SMALL_BYTES)
        value = _json(raw)
        got = parse_generation(value.get("e"), value.get("g"), value.get("hard")) \
            if isinstance(value, dict) else None
        if got is not None:
            return got, "ok"
        fresh = Generation(new_epoch(), 0, 0)
        self._write(folder / "gen.json", _gen_body(fresh))
        return fresh, "new" if raw is None else "repaired"

    def generation(self, mapping: str) -> tuple[Generation, str] | None:
        def op() -> tuple[Generation, str]:
            with self._locked(mapping) as folder:
                return self._generation_locked(folder)

        return self._run("generation check", mapping, op, None)

    def bump(self, mapping: str, *, hard: bool = False) -> Generation:
        try:
            self._check_root()
            with self._locked(mapping) as folder:
                gen, _ = self._generation_locked(folder)
                number = gen.number + 1
                bumped = Generation(gen.epoch, number, number if hard else gen.floor)
                self._write(folder / "gen.json", _gen_body(bumped))
                return bumped
        except OSError as exc:
            raise L2Error(f"could not bump the generation of {mapping!r} in {self.root} "
                          f"({type(exc).__name__}: {exc}); this machine's processes were NOT "
                          "told to reload. Run it again.") from exc

    # -- copies ------------------------------------------------------------------------------------

    def _copy(self, mapping: str, fingerprint: str,
              limit: int) -> tuple[Pointer, bytes] | None:
        raw = self._read(self.root / mapping / fingerprint / "copy", limit + _POINTER_MAX)
        if not raw:
            return None
        line, sep, blob = raw.partition(b"\n")
        ptr = Pointer.decode(line) if sep and len(line) <= _POINTER_MAX else None
        return None if ptr is None or not blob else (ptr, blob)

    def read(self, mapping: str, fingerprint: str, *,
             max_chunks: int = MAX_CHUNKS) -> bytes | None:
        limit = max(1, min(max_chunks, MAX_CHUNKS)) * MIN_CHUNK_BYTES

        def op() -> bytes | None:
            got = self._copy(mapping, fingerprint, limit)
            return None if got is None else got[1]

        return self._run("read", mapping, op, None)

    def head(self, mapping: str, fingerprint: str, size: int) -> bytes | None:
        def op() -> bytes | None:
            path = self.root / mapping / fingerprint / "copy"
            try:
                with open(path, "rb") as f:
                    raw = f.read(_POINTER_MAX + 1 + size)
            except (FileNotFoundError, IsADirectoryError):
                return None
            line, sep, blob = raw.partition(b"\n")
            if not sep or Pointer.decode(line) is None or not blob:
                return None
            return blob[:size]

        return self._run("read", mapping, op, None)

    def pointer(self, mapping: str, fingerprint: str) -> Pointer | None:
        """What the stored copy is (its first line), or None."""
        def op() -> Pointer | None:
            try:
                with open(self.root / mapping / fingerprint / "copy", "rb") as f:
                    line = f.readline(_POINTER_MAX + 1).rstrip(b"\n")
            except (FileNotFoundError, IsADirectoryError):
                return None
            return Pointer.decode(line)

        return self._run("read", mapping, op, None)

    def store(self, mapping: str, fingerprint: str, blob: bytes, pointer: Pointer) -> bool:
        """Keep a copy another tier holds (no fencing: it was fenced there)."""
        def op() -> bool:
            self._write(self.root / mapping / fingerprint / "copy",
                        pointer.encode().encode() + b"\n" + blob)
            return True

        return self._run("write", mapping, op, False)

    def write(self, mapping: str, fingerprint: str, blob: bytes, *, ttl: float,
              created_at: float, generation: Generation, token: str | None) -> WriteOutcome | None:
        created_ms = int(created_at * 1000)

        def op() -> WriteOutcome:
            with self._locked(mapping) as folder:
                current, _ = self._generation_locked(folder)
                if current.epoch != generation.epoch or generation.number < current.number:
                    return "invalidated"
                old = self.pointer(mapping, fingerprint)
                lease = self._lease(folder / fingerprint)[0]
                holder = token is not None and lease is not None and lease.token == token
                if not holder and old is not None and \
                        not old.older_than(generation.epoch, generation.number, created_ms):
                    return "fenced"
                ptr = Pointer(secrets.token_hex(6), 1, generation.epoch, generation.number,
                              created_ms)
                self._write(folder / fingerprint / "copy", ptr.encode().encode() + b"\n" + blob)
                return "written"

        return self._run("write", mapping, op, None)

    def renew(self, mapping: str, fingerprint: str, note: str, *, created_ms: int,
              ttl: float) -> bool | None:
        def op() -> bool:
            with self._locked(mapping) as folder:
                ptr = self.pointer(mapping, fingerprint)
                if ptr is None or ptr.created_ms != created_ms:
                    return False
                self._write(folder / fingerprint / "note",
                            json.dumps({"note": note}).encode())
                return True

        return self._run("renew", mapping, op, None)

    def note(self, mapping: str, fingerprint: str) -> str | None:
        def op() -> str | None:
            value = _json(self._read(self.root / mapping / fingerprint / "note",
                                     MAX_SMALL_BYTES))
            note = value.get("note") if isinstance(value, dict) else None
            return note if isinstance(note, str) else None

        return self._run("note read", mapping, op, None)

    # -- leases ------------------------------------------------------------------------------------

    def _lease(self, folder: Path) -> tuple[Lease | None, int, int]:
        """(the live lease or None, its fencing number, its expiry in ms)."""
        body = _json(self._read(folder / "lease.json", MAX_SMALL_BYTES))
        if not isinstance(body, dict):
            return None, 0, 0
        fence, until = body.get("fence"), body.get("until_ms")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62
                   for v in (fence, until)):
            return None, 0, 0
        assert isinstance(fence, int) and isinstance(until, int)
        raw = body.get("lease")
        lease = Lease.decode(raw) if isinstance(raw, str) else None
        if lease is None or until <= self._now_ms():
            return None, fence, until
        return lease, fence, until

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _put_lease(self, folder: Path, lease: Lease | None, fence: int, until_ms: int) -> None:
        self._write(folder / "lease.json", json.dumps(
            {"fence": fence, "until_ms": until_ms,
             "lease": None if lease is None else lease.encode()}).encode())

    def acquire(self, mapping: str, fingerprint: str, token: str, *, ttl: float,
                at: float) -> Lease | Literal[False] | None:
        def op() -> Lease | Literal[False]:
            with self._locked(mapping) as folder:
                current, fence, _ = self._lease(folder / fingerprint)
                if current is not None:
                    return False
                lease = Lease(token=token, fence=max(fence + 1, self._now_ms()), at=at)
                self._put_lease(folder / fingerprint, lease, lease.fence,
                                self._now_ms() + _ms(ttl))
                return lease

        return self._run("lease", mapping, op, None)

    def info(self, mapping: str, fingerprint: str) -> Lease | None:
        return self._run("lease read", mapping,
                         lambda: self._lease(self.root / mapping / fingerprint)[0], None)

    def update(self, mapping: str, fingerprint: str, lease: Lease, *,
               ttl: float | None = None) -> bool:
        def op() -> bool:
            with self._locked(mapping) as folder:
                current, fence, until = self._lease(folder / fingerprint)
                if current is None or current.token != lease.token:
                    return False
                until = until if ttl is None else self._now_ms() + _ms(ttl)
                self._put_lease(folder / fingerprint, lease, fence, until)
                return True

        return self._run("lease update", mapping, op, False)

    def release(self, mapping: str, fingerprint: str, token: str) -> bool:
        def op() -> bool:
            with self._locked(mapping) as folder:
                current, fence, _ = self._lease(folder / fingerprint)
                if current is None or current.token != token:
                    return False
                self._put_lease(folder / fingerprint, None, fence, 0)
                return True

        return self._run("lease release", mapping, op, False)


def _json(raw: bytes | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _gen_body(gen: Generation) -> bytes:
    return json.dumps({"e": gen.epoch, "g": str(gen.number), "hard": str(gen.floor)}).encode()


def _ms(seconds: float) -> int:
    return max(1, int(min(seconds, 2**40) * 1000))
