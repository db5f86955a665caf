"""The L2 format: a versioned header and a zstd-compressed msgpack payload. Never pickle.

    header (88 bytes, big-endian)
      magic      4s   b"AWRM"
      version    B    FORMAT_VERSION
      codec      B    1 = msgpack + zstd
      flags      B    bit 0: signed (an HMAC-SHA256 of header and payload follows the header)
      reserved   B
      fingerprint 16s the declaration's fingerprint (a blob never serves another query)
      generation Q    the mapping's generation when the copy was made
      created_at d    epoch seconds
      rows       Q
      payload    Q    payload length in bytes
      checksum   16s  BLAKE2b-128 of the payload
      epoch      8s   the generation's epoch (a counter that was lost starts a new one)
      reserved   8s
    [mac 32s]         when signed
    payload           zstd(msgpack([key_arity, value_kind, row_names, key_cols, value_cols,
                                    extras]))

The payload is columnar (one list per key column and per value column), which compresses well
and decodes in one pass. str, int, float, bool and None are native msgpack; Decimal, date,
datetime and tuple travel as msgpack extension types. Anything that fails a check raises
CorruptPayloadError with the reason; it never reaches a caller. msgpack and zstandard are
imported on first use (the ``redis`` extra installs them).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from ._view import MappingView

MAGIC = b"AWRM"
FORMAT_VERSION = 2  # 2: the epoch beside the generation
CODEC_MSGPACK_ZSTD = 1
FLAG_SIGNED = 1
_HEADER = struct.Struct(">4sBBBB16sQdQQ16s8s8s")
HEADER_SIZE = _HEADER.size
MAC_SIZE = 32
ZSTD_LEVEL = 3
MAX_DECODED_BYTES = 4 * 2**30  # refuse to inflate a payload past 4 GiB

_EXT_DECIMAL, _EXT_DATE, _EXT_DATETIME, _EXT_TUPLE = 1, 2, 3, 4
VALUE_SCALAR, VALUE_TUPLE, VALUE_ROW = 0, 1, 2


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


def _default(obj: Any) -> Any:
    import msgpack

    if isinstance(obj, Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
    if isinstance(obj, datetime):
        return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, date):
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, tuple):
        return msgpack.ExtType(_EXT_TUPLE, _packb(list(obj)))
    raise TypeError(f"cannot store a {type(obj).__name__} in L2")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_DECIMAL:
        return Decimal(data.decode())
    if code == _EXT_DATE:
        return date.fromisoformat(data.decode())
    if code == _EXT_DATETIME:
        return datetime.fromisoformat(data.decode())
    if code == _EXT_TUPLE:
        return tuple(_unpackb(data))
    raise CorruptPayloadError(f"unknown msgpack extension type {code}")


def _packb(obj: Any) -> bytes:
    import msgpack

    out: bytes = msgpack.packb(obj, default=_default, strict_types=True, use_bin_type=True)
    return out


def _unpackb(data: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


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
    raw = _packb([key_arity, value_kind, row_names, key_cols, value_cols, extras or {}])
    payload = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
    flags = FLAG_SIGNED if signing_key else 0
    header = _HEADER.pack(
        MAGIC, FORMAT_VERSION, CODEC_MSGPACK_ZSTD, flags, 0, fingerprint.encode().ljust(16)[:16],
        generation, created_at, len(data), len(payload),
        hashlib.blake2b(payload, digest_size=16).digest(), _epoch_bytes(epoch), b"",
    )
    mac = hmac.new(signing_key, header + payload, hashlib.sha256).digest() if signing_key else b""
    return header + mac + payload


def _epoch_bytes(epoch: str) -> bytes:
    try:
        raw = bytes.fromhex(epoch)
    except ValueError:
        raw = b""
    if len(raw) != 8:
        raise ValueError(f"epoch {epoch!r}: expected 16 hex digits")
    return raw


def read_header(blob: bytes, *, partial: bool = False) -> Header:
    """Parse and check the header only (cheap: for status and the has-it-changed check).
    ``partial``: ``blob`` is only the start of a payload (no length check)."""
    if len(blob) < HEADER_SIZE:
        raise CorruptPayloadError(f"truncated: {len(blob)} bytes, shorter than the header")
    (magic, version, codec, flags, _, fp, generation, created_at, rows, size, _, epoch, _) = (
        _HEADER.unpack_from(blob)
    )
    if magic != MAGIC:
        raise CorruptPayloadError("not an athena-warm payload (bad magic)")
    if version != FORMAT_VERSION:
        raise CorruptPayloadError(f"format version {version}; this athena-warm reads "
                                  f"{FORMAT_VERSION}")
    if codec != CODEC_MSGPACK_ZSTD:
        raise CorruptPayloadError(f"unknown codec {codec}")
    signed = bool(flags & FLAG_SIGNED)
    expected = HEADER_SIZE + (MAC_SIZE if signed else 0) + size
    if not partial and len(blob) != expected:
        raise CorruptPayloadError(f"truncated or padded: {len(blob)} bytes, header says {expected}")
    return Header(fingerprint=fp.decode("ascii", "replace").strip(), generation=generation,
                  epoch=epoch.hex(),
                  created_at=created_at, rows=rows, signed=signed, payload_size=size)


def decode(
    blob: bytes, *, fingerprint: str, signing_key: bytes | None = None
) -> tuple[MappingView, Header, dict[str, Any]]:
    """Check everything, then build the read-only mapping (``meta`` is left to the caller).
    Returns (mapping, header, extras)."""
    import zstandard

    header = read_header(blob)
    if header.fingerprint != fingerprint:
        raise CorruptPayloadError(
            f"fingerprint {header.fingerprint!r} where {fingerprint!r} was expected"
        )
    offset = HEADER_SIZE
    if signing_key is not None:
        if not header.signed:
            raise CorruptPayloadError("unsigned payload, but a signing key is configured")
        mac = blob[offset:offset + MAC_SIZE]
        payload = blob[offset + MAC_SIZE:]
        good = hmac.new(signing_key, blob[:HEADER_SIZE] + payload, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, good):
            raise CorruptPayloadError("signature does not match (another key, or tampered)")
    else:
        if header.signed:
            raise CorruptPayloadError(
                "signed payload, but no signing key is configured (ATHENA_WARM_SIGNING_KEY)"
            )
        payload = blob[offset:]
    checksum = _HEADER.unpack_from(blob)[10]
    if hashlib.blake2b(payload, digest_size=16).digest() != checksum:
        raise CorruptPayloadError("checksum mismatch")
    try:
        raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=MAX_DECODED_BYTES)
        key_arity, value_kind, row_names, key_cols, value_cols, extras = _unpackb(raw)
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
    except Exception as exc:  # zstd, msgpack or shape errors: all corruption
        raise CorruptPayloadError(f"payload does not decode: {type(exc).__name__}: {exc}") from None
    if len(view) != header.rows:
        raise CorruptPayloadError(f"{len(view)} rows decoded, header says {header.rows}")
    return view, header, extras
