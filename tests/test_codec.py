"""The L2 format: every origin type round-trips; anything damaged is refused with a reason."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from athena_warm._codec import (
    HEADER_SIZE,
    VALUE_ROW,
    VALUE_SCALAR,
    VALUE_TUPLE,
    CorruptPayloadError,
    decode,
    encode,
    read_header,
)

EPOCH = "0123456789abcdef"
FP = "0123456789abcdef"
KEY = b"k" * 32


def roundtrip(data: dict[Any, Any], arity: int, kind: int, **kw: Any) -> dict[Any, Any]:
    blob = encode(data, fingerprint=FP, generation=7, epoch=EPOCH, created_at=1.7e9,
                  key_arity=arity,
                  value_kind=kind, extras={"query_id": "q-1"}, **kw)
    view, header, extras = decode(blob, fingerprint=FP, signing_key=kw.get("signing_key"))
    assert (header.generation, header.created_at, header.rows) == (7, 1.7e9, len(data))
    assert extras == {"query_id": "q-1"}
    return dict(view)


VALUES = ["text", "", "ünïcødé ✓", 0, -1, 2**63 - 1, -(2**63), 1.5, float("-inf"), True, False,
          None, Decimal("12.345"), Decimal("-0.00"), date(2024, 2, 29),
          datetime(2024, 2, 29, 13, 14, 15, 123456), datetime(2024, 1, 1, tzinfo=timezone.utc),
          (1, "a", None), [1, 2], {"nested": "map"}]


def test_scalar_values_of_every_type() -> None:
    data = {f"k{i}": v for i, v in enumerate(VALUES)}
    out = roundtrip(data, 1, VALUE_SCALAR)
    assert out == data
    for k, v in data.items():
        assert type(out[k]) is type(v), (k, v)


def test_keys_of_every_type() -> None:
    data = {v: i for i, v in enumerate(VALUES) if v.__hash__ is not None and v is not None}
    out = roundtrip(data, 1, VALUE_SCALAR)
    assert out == data and {type(k) for k in out} == {type(k) for k in data}


def test_tuple_keys_tuple_values_and_rows() -> None:
    tk = {("a", 1): ("x", Decimal("1.5"), None), ("b", 2): ("y", Decimal("2"), date(2020, 1, 1))}
    assert roundtrip(tk, 2, VALUE_TUPLE) == tk
    rows = {1: {"id": 1, "name": "a", "at": datetime(2020, 1, 1)}, 2: {"id": 2, "name": None,
                                                                      "at": None}}
    assert roundtrip(rows, 1, VALUE_ROW) == rows
    assert roundtrip({}, 2, VALUE_ROW) == {}
    assert roundtrip({}, 1, VALUE_SCALAR) == {}


def test_signed_roundtrip() -> None:
    data = {"a": 1}
    assert roundtrip(data, 1, VALUE_SCALAR, signing_key=KEY) == data


def blob(**kw: Any) -> bytes:
    return encode({"a": "b", "c": "d"}, fingerprint=FP, generation=1, epoch=EPOCH, created_at=1.0,
                  key_arity=1, value_kind=VALUE_SCALAR, **kw)


@pytest.mark.parametrize("mangle, signing_key, reason", [
    (lambda b: b[:-1], None, "truncated"),
    (lambda b: b[:10], None, "truncated"),
    (lambda b: b + b"x", None, "truncated or padded"),
    (lambda b: b"XXXX" + b[4:], None, "bad magic"),
    (lambda b: b[:4] + bytes([9]) + b[5:], None, "format version 9"),
    (lambda b: b[:5] + bytes([7]) + b[6:], None, "unknown codec 7"),
    (lambda b: b[:-3] + bytes([b[-3] ^ 0xFF]) + b[-2:], None, "checksum mismatch"),
    (lambda b: b, KEY, "unsigned payload"),
])
def test_damage_is_refused_with_a_reason(mangle: Any, signing_key: bytes | None,
                                          reason: str) -> None:
    with pytest.raises(CorruptPayloadError, match=reason):
        decode(mangle(blob()), fingerprint=FP, signing_key=signing_key)


def test_signature_checks() -> None:
    signed = blob(signing_key=KEY)
    with pytest.raises(CorruptPayloadError, match="another key, or tampered"):
        decode(signed, fingerprint=FP, signing_key=b"another key")
    tampered = signed[:-1] + bytes([signed[-1] ^ 1])
    with pytest.raises(CorruptPayloadError, match="another key, or tampered"):
        decode(tampered, fingerprint=FP, signing_key=KEY)
    # A tampered header (generation bumped) is caught by the signature too.
    bumped = signed[:24] + (99).to_bytes(8, "big") + signed[32:]
    with pytest.raises(CorruptPayloadError, match="tampered"):
        decode(bumped, fingerprint=FP, signing_key=KEY)
    with pytest.raises(CorruptPayloadError, match="no signing key is configured"):
        decode(signed, fingerprint=FP)


def test_a_blob_never_serves_another_declaration() -> None:
    with pytest.raises(CorruptPayloadError, match="fingerprint"):
        decode(blob(), fingerprint="fedcba9876543210")


def test_the_checksum_covers_the_header_and_the_header_reads_alone() -> None:
    b = bytearray(blob())
    b[40:48] = (5).to_bytes(8, "big")  # the rows field
    with pytest.raises(CorruptPayloadError, match="checksum mismatch"):
        decode(bytes(b), fingerprint=FP)
    h = read_header(blob())
    assert (h.rows, h.generation, h.fingerprint, h.signed) == (2, 1, FP, False)
    assert len(blob()) > HEADER_SIZE


def test_no_pickle_anywhere() -> None:
    import pathlib

    import athena_warm

    root = pathlib.Path(athena_warm.__file__).parent
    for path in root.rglob("*.py"):
        assert "pickle" not in path.read_text().replace("no pickle", "").replace(
            "Never pickle", "").replace("not picklable", "").replace("pickle dict(m)", ""), path
