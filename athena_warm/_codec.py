"""The L2 format: a versioned header and a zstd-compressed msgpack payload. Never pickle.

    header (88 bytes, big-endian)
      magic      4s   b"AWRM"
      version    B    FORMAT_VERSION
      codec      B    1 = msgpack + zstd
      flags      B    bit 0: signed (an HMAC-SHA256 of header and payload follows the header)
      reserved   B
      fingerprint 16s the declaration's fingerprint (a blob never serves another query)
      generation Q    the mapping's generation when the copy was made
      created_at d    epoch seconds (when the copy's query started)
      rows       Q
      payload    Q    payload length in bytes (compressed)
      decoded    Q    the payload's length once decompressed
      epoch      8s   the generation's epoch (a counter that was lost starts a new one)
      checksum   16s  BLAKE2b-128 of the header (this field zeroed) and the payload
    [mac 32s]         when signed: HMAC-SHA256 of the header and the payload
    payload           zstd(msgpack([key_arity, value_kind, row_names, key_cols, value_cols,
                                    extras]))

Decoding is bounded before anything is allocated: the declared sizes must be within
``max_bytes / EXPANSION`` (``max_bytes`` is the L1 bound, what this function may hold in memory;
a msgpack byte may become up to EXPANSION bytes of Python objects), the checksum (or the HMAC)
must cover what the header claims, the zstd frame must declare exactly the declared size (so
nothing larger is allocated), arrays and maps are no longer than the declared rows, and nesting
deeper than ``MAX_DEPTH`` is refused. Anything that fails a check raises
CorruptPayloadError with the reason; it never reaches a caller. msgpack and zstandard are
imported on first use (the ``redis`` extra installs them).

Values: str, int of any size, float, bool, None and bytes are native (ints beyond 64 bits as an
extension); Decimal, date, datetime (naive or aware), time, timedelta, UUID and tuple travel as
msgpack extension types; lists and dicts (Athena arrays, maps and rows) nest up to MAX_DEPTH.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from ._view import MappingView

MAGIC = b"AWRM"
FORMAT_VERSION = 3  # 2: the epoch beside the generation; 3: the checksum covers the header
CODEC_MSGPACK_ZSTD = 1
FLAG_SIGNED = 1
_HEADER = struct.Struct(">4sBBBB16sQdQQQ8s16s")
_CHECKSUM_AT = _HEADER.size - 16
HEADER_SIZE = _HEADER.size
MAC_SIZE = 32
ZSTD_LEVEL = 3
DEFAULT_MAX_BYTES = 2**30  # without a bound from the caller: 1 GiB decoded at most
MAX_DEPTH = 16  # nesting of values (tuples, arrays, maps, rows) the encoder writes at most
MAX_INT_DIGITS = 1000
EXPANSION = 16  # a decoded byte may become about this many bytes of Python objects

_EXT_DECIMAL, _EXT_DATE, _EXT_DATETIME, _EXT_TUPLE = 1, 2, 3, 4
_EXT_TIME, _EXT_TIMEDELTA, _EXT_UUID, _EXT_BIGINT = 5, 6, 7, 8
VALUE_SCALAR, VALUE_TUPLE, VALUE_ROW = 0, 1, 2
_CONTAINERS = (list, dict, tuple)


class CorruptPayloadError(Exception):
    """An L2 payload failed a check; ``reason`` says which. Internal: read as a miss."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Header:
    fingerprint: str
    generation: int
    epoch: str
    created_at: float
    rows: int
    signed: bool
    payload_size: int
    decoded_size: int = 0

    @property
    def total_size(self) -> int:
        return HEADER_SIZE + (MAC_SIZE if self.signed else 0) + self.payload_size


# -- values ----------------------------------------------------------------------------------------

def _default(obj: Any) -> Any:
    import msgpack

    if isinstance(obj, Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
    if isinstance(obj, datetime):
        return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, date):
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, time):
        return msgpack.ExtType(_EXT_TIME, obj.isoformat().encode())
    if isinstance(obj, timedelta):
        return msgpack.ExtType(_EXT_TIMEDELTA,
                               f"{obj.days}:{obj.seconds}:{obj.microseconds}".encode())
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(_EXT_UUID, obj.bytes)
    if isinstance(obj, tuple):
        return msgpack.ExtType(_EXT_TUPLE, _packb(list(obj)))
    if isinstance(obj, int) and not isinstance(obj, bool):
        return msgpack.ExtType(_EXT_BIGINT, str(obj).encode())
    raise TypeError(f"cannot store a {type(obj).__name__} in L2")


_depth = threading.local()


def _ext_hook(code: int, data: bytes) -> Any:
    try:
        if code == _EXT_TUPLE:
            level = getattr(_depth, "level", 0)
            if level >= MAX_DEPTH:
                raise CorruptPayloadError(f"values nested deeper than {MAX_DEPTH} levels")
            _depth.level = level + 1
            try:
                return tuple(_unpackb(data))
            finally:
                _depth.level = level
        text = data.decode("ascii") if code != _EXT_UUID else ""
        if code == _EXT_DECIMAL:
            return Decimal(text)
        if code == _EXT_DATE:
            return date.fromisoformat(text)
        if code == _EXT_DATETIME:
            return datetime.fromisoformat(text)
        if code == _EXT_TIME:
            return time.fromisoformat(text)
        if code == _EXT_TIMEDELTA:
            days, seconds, micros = (int(p) for p in text.split(":"))
            return timedelta(days=days, seconds=seconds, microseconds=micros)
        if code == _EXT_UUID:
            return uuid.UUID(bytes=data)
        if code == _EXT_BIGINT:
            if len(text) > MAX_INT_DIGITS:
                raise CorruptPayloadError(f"an integer of more than {MAX_INT_DIGITS} digits")
            return int(text)
    except CorruptPayloadError:
        raise
    except Exception as exc:
        raise CorruptPayloadError(f"extension type {code} does not decode: {exc}") from None
    raise CorruptPayloadError(f"unknown msgpack extension type {code}")


def _packb(obj: Any) -> bytes:
    import msgpack

    try:
        out: bytes = msgpack.packb(obj, default=_default, strict_types=True, use_bin_type=True)
    except OverflowError:  # an int beyond 64 bits: msgpack does not ask `default` for those
        out = msgpack.packb(_widen(obj, 0), default=_default, strict_types=True,
                            use_bin_type=True)
    return out


def _widen(obj: Any, depth: int) -> Any:
    """``obj`` with every int beyond 64 bits made an extension (the rare slow path)."""
    import msgpack

    if depth > MAX_DEPTH + 8:
        raise TypeError(f"cannot store values nested deeper than {MAX_DEPTH} levels in L2")
    if type(obj) is int and not -(2**63) <= obj < 2**64:
        return msgpack.ExtType(_EXT_BIGINT, str(obj).encode())
    if type(obj) is list:
        return [_widen(v, depth + 1) for v in obj]
    if type(obj) is dict:
        return {_widen(k, depth + 1): _widen(v, depth + 1) for k, v in obj.items()}
    if type(obj) is tuple:
        return msgpack.ExtType(_EXT_TUPLE, _packb(list(obj)))
    return obj


def _count_list(value: list[Any]) -> list[Any]:
    _depth.containers = getattr(_depth, "containers", 0) + 1
    return value


def _count_map(value: dict[Any, Any]) -> dict[Any, Any]:
    _depth.containers = getattr(_depth, "containers", 0) + 1
    return value


def _unpackb(data: bytes, *, max_len: int = 2**31 - 1) -> Any:
    """Unpack, counting the arrays and maps made (so a payload of scalars, the usual one, is not
    scanned for nesting: only one with more containers than its columns is)."""
    import msgpack

    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False,
                           max_array_len=max_len, max_map_len=max_len, list_hook=_count_list,
                           object_hook=_count_map)


def _too_deep(values: list[Any], limit: int) -> bool:
    """Whether any value nests lists, dicts or tuples deeper than ``limit`` (iterative: a
    hostile payload cannot exhaust the stack here)."""
    if not _has_containers(values):
        return False
    stack = [(v, 1) for v in values if type(v) in _CONTAINERS]
    while stack:
        v, level = stack.pop()
        if level > limit:
            return True
        inner = v.values() if type(v) is dict else v
        stack.extend((x, level + 1) for x in inner if type(x) in _CONTAINERS)
        if type(v) is dict:
            stack.extend((k, level + 1) for k in v if type(k) is tuple)
    return False


def _has_containers(values: list[Any]) -> bool:
    return not set(map(type, values)).isdisjoint(_CONTAINERS)


# -- the format ------------------------------------------------------------------------------------

def encode(
    data: MappingView | dict[Any, Any],
    *,
    fingerprint: str,
    generation: int,
    epoch: str,
    created_at: float,
    key_arity: int,
    value_kind: int,
    extras: dict[str, Any] | None = None,
    signing_key: bytes | None = None,
) -> bytes:
    import zstandard

    if key_arity == 1:
        key_cols: list[list[Any]] = [list(data)]
    else:
        key_cols = [list(c) for c in zip(*data, strict=True)] or [[] for _ in range(key_arity)]
    values = list(data.values())
    row_names: list[str] = []
    if value_kind == VALUE_SCALAR:
        value_cols = [values]
    elif value_kind == VALUE_TUPLE:
        value_cols = [list(c) for c in zip(*values, strict=True)]
    else:
        row_names = list(values[0]) if values else []
        value_cols = [[row[n] for row in values] for n in row_names]
    for col in (*key_cols, *value_cols):
        if _too_deep(col, MAX_DEPTH):
            raise TypeError(f"cannot store values nested deeper than {MAX_DEPTH} levels in L2")
    raw = _packb([key_arity, value_kind, row_names, key_cols, value_cols, extras or {}])
    payload = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(raw)
    flags = FLAG_SIGNED if signing_key else 0
    header = bytearray(_HEADER.pack(
        MAGIC, FORMAT_VERSION, CODEC_MSGPACK_ZSTD, flags, 0, fingerprint.encode().ljust(16)[:16],
        generation, created_at, len(data), len(payload), len(raw), _epoch_bytes(epoch),
        b"\0" * 16,
    ))
    header[_CHECKSUM_AT:] = _checksum(bytes(header), payload)
    mac = hmac.new(signing_key, bytes(header) + payload, hashlib.sha256).digest() \
        if signing_key else b""
    return bytes(header) + mac + payload


def _checksum(header: bytes, payload: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(header[:_CHECKSUM_AT])
    h.update(b"\0" * 16)
    h.update(payload)
    return h.digest()


def _epoch_bytes(epoch: str) -> bytes:
    try:
        raw = bytes.fromhex(epoch)
    except ValueError:
        raw = b""
    if len(raw) != 8:
        raise ValueError(f"epoch {epoch!r}: expected 16 hex digits")
    return raw


def read_header(blob: bytes, *, partial: bool = False,
                max_bytes: int = DEFAULT_MAX_BYTES) -> Header:
    """Parse and check the header only (cheap: for status and the has-it-changed check): its
    claims are checked against ``max_bytes``, not yet against the checksum. ``partial``:
    ``blob`` is only the start of a payload (no length check)."""
    if len(blob) < HEADER_SIZE:
        raise CorruptPayloadError(f"truncated: {len(blob)} bytes, shorter than the header")
    (magic, version, codec, flags, _, fp, generation, created_at, rows, size, decoded, epoch,
     _) = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptPayloadError("not an athena-warm payload (bad magic)")
    if version != FORMAT_VERSION:
        raise CorruptPayloadError(f"format version {version}; this athena-warm reads "
                                  f"{FORMAT_VERSION}")
    if codec != CODEC_MSGPACK_ZSTD:
        raise CorruptPayloadError(f"unknown codec {codec}")
    if decoded > max_bytes // EXPANSION or size > max_bytes // EXPANSION:
        raise CorruptPayloadError(
            f"declares {decoded:,} bytes decoded ({size:,} compressed): decoded, it would not "
            f"fit in {max_bytes:,} bytes (the L1 bound; {max_bytes // EXPANSION:,} decoded "
            "bytes at most)")
    if rows > decoded or size > decoded + decoded // 64 + 1024:
        raise CorruptPayloadError(f"declares {rows:,} rows / {size:,} compressed bytes in "
                                  f"{decoded:,} decoded bytes: impossible")
    if not 0 <= created_at < 1e11 or generation >= 2**53:  # NaN fails the first test too
        raise CorruptPayloadError("created_at or generation out of range")
    signed = bool(flags & FLAG_SIGNED)
    header = Header(fingerprint=fp.decode("ascii", "replace").strip(), generation=generation,
                    epoch=epoch.hex(), created_at=created_at, rows=rows, signed=signed,
                    payload_size=size, decoded_size=decoded)
    if not partial and len(blob) != header.total_size:
        raise CorruptPayloadError(
            f"truncated or padded: {len(blob)} bytes, header says {header.total_size}")
    return header


def decode(
    blob: bytes, *, fingerprint: str, signing_key: bytes | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[MappingView, Header, dict[str, Any]]:
    """Check everything, then build the read-only mapping (``meta`` is left to the caller).
    Returns (mapping, header, extras)."""
    header = read_header(blob, max_bytes=max_bytes)
    if header.fingerprint != fingerprint:
        raise CorruptPayloadError(
            f"fingerprint {header.fingerprint!r} where {fingerprint!r} was expected"
        )
    head = blob[:HEADER_SIZE]
    offset = HEADER_SIZE
    if signing_key is not None:
        if not header.signed:
            raise CorruptPayloadError("unsigned payload, but a signing key is configured")
        mac = blob[offset:offset + MAC_SIZE]
        payload = blob[offset + MAC_SIZE:]
        good = hmac.new(signing_key, head + payload, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, good):
            raise CorruptPayloadError("signature does not match (another key, or tampered)")
    else:
        if header.signed:
            raise CorruptPayloadError(
                "signed payload, but no signing key is configured (ATHENA_WARM_SIGNING_KEY)"
            )
        payload = blob[offset:]
    if not hmac.compare_digest(_checksum(head, payload), head[_CHECKSUM_AT:]):
        raise CorruptPayloadError("checksum mismatch")
    raw = _decompress(payload, header.decoded_size)
    _depth.level = _depth.containers = 0
    try:
        # No array or map is longer than the declared rows (a column has one per row), or
        # 64 Ki for a nested value: a payload of millions of tiny objects is refused early.
        key_arity, value_kind, row_names, key_cols, value_cols, extras = _unpackb(
            raw, max_len=max(header.rows, 65536))
        del raw
        structural = 4 + len(key_cols) + len(value_cols) + 1  # the lists, and extras
        if _depth.containers > structural:  # values hold arrays, maps or tuples: look deeper
            for col in (*key_cols, *value_cols):
                if _too_deep(col, MAX_DEPTH):
                    raise CorruptPayloadError(f"values nested deeper than {MAX_DEPTH} levels")
        if key_arity == 1:
            keys: Any = key_cols[0]
        else:
            keys = zip(*key_cols, strict=True)
        if value_kind == VALUE_SCALAR:
            values: Any = value_cols[0]
        elif value_kind == VALUE_TUPLE:
            values = zip(*value_cols, strict=True)
        else:
            values = (dict(zip(row_names, r, strict=True)) for r in zip(*value_cols, strict=True))
        view = MappingView(zip(keys, values, strict=True))
    except CorruptPayloadError:
        raise
    except Exception as exc:  # msgpack or shape errors: all corruption
        raise CorruptPayloadError(f"payload does not decode: {type(exc).__name__}: {exc}") from None
    if len(view) != header.rows:
        raise CorruptPayloadError(f"{len(view)} rows decoded, header says {header.rows}")
    return view, header, extras


def _decompress(payload: bytes, declared: int) -> bytes:
    """Inflate exactly ``declared`` bytes: a frame that does not declare its size, or declares
    another, is refused before anything is allocated."""
    import zstandard

    try:
        content = zstandard.frame_content_size(payload)
        if content < 0:
            raise CorruptPayloadError("the zstd frame does not declare its size")
        if content != declared:
            raise CorruptPayloadError(f"the frame holds {content} bytes, the header says "
                                      f"{declared}")
        # The frame declares exactly the size the header declares, which is within the bound:
        # one allocation of that size, and zstd refuses a frame whose content differs.
        raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=declared)
    except CorruptPayloadError:
        raise
    except Exception as exc:
        raise CorruptPayloadError(f"payload does not decompress: {exc}") from None
    if len(raw) != declared:
        raise CorruptPayloadError(f"decompressed to {len(raw):,} bytes, the header says "
                                  f"{declared:,}")
    return raw
