"""Hostile L2 payloads (issue 10): without a signing key anyone who can write the cache can
compute a valid checksum, so these payloads pass it. Deep nesting, decompression bombs, huge
declared sizes, million-chunk pointers and flipped header bits must each be a logged miss:
never a crash, a hang, or memory the function does not have. Values of every supported type
round-trip exactly; a fuzzer checks that nothing but the original value or CorruptPayloadError
comes out of the decoder."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athena_warm._codec import (
    _CHECKSUM_AT,
    _HEADER,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    VALUE_SCALAR,
    CorruptPayloadError,
    _checksum,
    decode,
    encode,
)
from tests.helpers import same

FP = "0123456789abcdef"
EPOCH = "00112233445566aa"
ROOT = Path(__file__).resolve().parent.parent
FUZZ_EXAMPLES = int(os.environ.get("ATHENA_WARM_FUZZ_EXAMPLES", "400"))


def forge(raw: bytes | None = None, *, payload: bytes | None = None, rows: int = 1,
          decoded: int | None = None, created_at: float = 1.7e9, generation: int = 0) -> bytes:
    """A blob with a valid checksum around any msgpack ``raw`` (or any zstd ``payload``)."""
    import zstandard

    if payload is None:
        assert raw is not None
        payload = zstandard.ZstdCompressor().compress(raw)
    header = bytearray(_HEADER.pack(
        MAGIC, FORMAT_VERSION, 1, 0, 0, FP.encode(), generation, created_at, rows, len(payload),
        len(raw) if decoded is None and raw is not None else (decoded or 0),
        bytes.fromhex(EPOCH), b"\0" * 16))
    header[_CHECKSUM_AT:] = _checksum(bytes(header), payload)
    return bytes(header) + payload


def blob_of(data: dict[Any, Any], **kw: Any) -> bytes:
    return encode(data, fingerprint=FP, generation=3, epoch=EPOCH, created_at=1.7e9,
                  key_arity=1, value_kind=VALUE_SCALAR, extras={}, **kw)


def in_child(code: str, blob: bytes, tmp_path: Path, **env: str) -> dict[str, Any]:
    """Decode ``blob`` in a child process: it must survive; returns what it printed."""
    path = tmp_path / "blob"
    path.write_bytes(blob)
    script = (
        "import json, resource, sys, time\n"
        "from athena_warm._codec import decode, CorruptPayloadError\n"
        f"blob = open({str(path)!r}, 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = time.perf_counter()\n"
        "try:\n"
        f"    {code}\n"
        "    outcome = 'decoded'\n"
        "except CorruptPayloadError as exc:\n"
        "    outcome = 'corrupt: ' + exc.reason\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'outcome': outcome, 'grew_mb': (after - before) / 1024,\n"
        "                  'seconds': time.perf_counter() - t}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env={**os.environ, **env})
    assert out.returncode == 0, f"the reader died ({out.returncode}): {out.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"child reader: {result}")
    return result


# -- 1. deep nesting -------------------------------------------------------------------------------


def _nested_tuples(levels: int) -> bytes:
    import msgpack

    inner = msgpack.packb([1])
    for _ in range(levels):
        inner = msgpack.packb([msgpack.ExtType(4, inner)])
    return msgpack.packb([1, 0, [], [["k"]], [[msgpack.ExtType(4, inner)]], {}])


@pytest.mark.parametrize("levels", [40, 400, 5000])
def test_deep_nesting_is_refused_in_a_reader_that_survives(tmp_path: Path, levels: int) -> None:
    got = in_child(f"decode(blob, fingerprint={FP!r})", forge(_nested_tuples(levels)), tmp_path)
    assert got["outcome"].startswith("corrupt: ") and "nested deeper" in got["outcome"]


def test_deep_plain_arrays_are_refused(tmp_path: Path) -> None:
    raw = b"\x96\x01\x00\x90\x91\x91\xa1k\x91\x91" + b"\x91" * 100_000 + b"\xc0\x80"
    got = in_child(f"decode(blob, fingerprint={FP!r})", forge(raw), tmp_path)
    assert got["outcome"].startswith("corrupt: ")


# -- 2. bombs and huge declared sizes --------------------------------------------------------------


def _zeros_frame(size: int, *, content_size: bool) -> bytes:
    import zstandard

    cobj = zstandard.ZstdCompressor(write_content_size=content_size).compressobj(
        size=size if content_size else -1)
    chunk = b"\0" * (1 << 20)
    out = [cobj.compress(chunk) for _ in range(size >> 20)]
    out.append(cobj.flush())
    return b"".join(out)


@pytest.mark.parametrize("declared, content_size", [
    (2**30, True),  # honest: refused by the bound before a byte is inflated
    (2**20, True),  # lying header, frame says 1 GiB: refused on the frame's size
    (2**20, False),  # lying header, frame says nothing: capped while streaming
])
def test_a_decompression_bomb_is_refused_within_memory(tmp_path: Path, declared: int,
                                                       content_size: bool) -> None:
    payload = _zeros_frame(2**30, content_size=content_size)
    assert len(payload) < 64 * 1024  # 1 GiB of zeros in a few KiB
    got = in_child(f"decode(blob, fingerprint={FP!r}, max_bytes=512 * 2**20)",
                   forge(payload=payload, decoded=declared), tmp_path)
    assert got["outcome"].startswith("corrupt: ")
    assert got["grew_mb"] < 64, got  # a 512 MB function: the reader stays small
    assert got["seconds"] < 5, got


def test_an_array_of_128_mib_of_nils_is_refused(tmp_path: Path) -> None:
    n = 128 * 2**20
    payload = _zeros_frame(0, content_size=True)  # replaced below: a real nil array
    import zstandard

    cobj = zstandard.ZstdCompressor().compressobj(size=n + 5)
    parts = [cobj.compress(b"\xdd" + n.to_bytes(4, "big"))]
    parts += [cobj.compress(b"\xc0" * (1 << 20)) for _ in range(n >> 20)]
    parts.append(cobj.flush())
    payload = b"".join(parts)
    got = in_child(f"decode(blob, fingerprint={FP!r}, max_bytes=1024 * 2**20)",
                   forge(payload=payload, decoded=n + 5, rows=n), tmp_path)
    assert got["outcome"].startswith("corrupt: ") and got["grew_mb"] < 64, got


def test_millions_of_tiny_objects_are_refused() -> None:
    import msgpack

    raw = msgpack.packb([1, 0, [], [list(range(10))], [[None] * 200_000], {}])
    with pytest.raises(CorruptPayloadError):
        decode(forge(raw, rows=10), fingerprint=FP)


# -- 4. the header is covered --------------------------------------------------------------------


@pytest.mark.parametrize("field, offset", [("generation", 24 + 7), ("created_at", 32 + 1),
                                           ("rows", 40 + 7)])
def test_a_flipped_header_bit_is_caught(field: str, offset: int) -> None:
    b = bytearray(blob_of({"a": 1, "b": 2}))
    b[offset] ^= 0x01
    with pytest.raises(CorruptPayloadError):
        decode(bytes(b), fingerprint=FP)


def test_out_of_range_header_values_are_refused() -> None:
    import msgpack

    raw = msgpack.packb([1, 0, [], [["k"]], [[1]], {}])
    for bad in (dict(created_at=float("nan")), dict(created_at=-1.0),
                dict(created_at=1e12), dict(generation=2**60)):
        with pytest.raises(CorruptPayloadError, match="out of range"):
            decode(forge(raw, **bad), fingerprint=FP)  # type: ignore[arg-type]


# -- 6. every value type round-trips --------------------------------------------------------------

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(), st.binary(max_size=64),
    st.decimals(allow_nan=False, places=None).filter(lambda d: len(d.as_tuple().digits) <= 38),
    st.dates(), st.datetimes(), st.datetimes(timezones=st.just(timezone.utc)),
    st.datetimes(timezones=st.just(timezone(timedelta(hours=-7, minutes=-30)))),
    st.times(), st.timedeltas(), st.uuids(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner),
    st.dictionaries(st.text(max_size=5), inner, max_size=4)), max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=8) | st.integers() | st.uuids() | st.dates(), VALUES,
                       max_size=8))
def test_every_supported_value_round_trips(data: dict[Any, Any]) -> None:
    view, header, _ = decode(blob_of(data), fingerprint=FP)
    assert header.rows == len(data) and same(dict(view), data)


def test_the_edge_values_round_trip() -> None:
    data = {
        "int64 max": 2**63 - 1, "uint64 max": 2**64 - 1, "beyond": 2**200, "below": -(2**100),
        "nan": float("nan"), "-0.0": -0.0, "inf": float("inf"), "-inf": float("-inf"),
        "decimal(38)": Decimal("12345678901234567890123456789.012345678"),
        "year 1": date(1, 1, 1), "year 9999": datetime(9999, 12, 31, 23, 59, 59, 999999),
        "aware": datetime(2024, 2, 29, 12, tzinfo=timezone(timedelta(hours=5, minutes=45))),
        "time": dtime(23, 59, 59, 999999), "interval": timedelta(days=-3, microseconds=7),
        "uuid": uuid.UUID(int=2**128 - 1), "bytes": b"\x00\xff", "unicode": "\u0000\U0010ffff",
        "array": [1, [2, [3]]], "map": {"a": 1, "b": None}, "row": {"x": 1, "y": "hi"},
        ("tuple", 1): (1, "two", None),
    }
    view, _, _ = decode(blob_of(data), fingerprint=FP)
    assert same(dict(view), data)


def test_values_nested_deeper_than_the_limit_are_not_stored() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(TypeError, match="nested deeper"):
        blob_of({"k": deep})


# -- the fuzzer: only the original value or CorruptPayloadError -----------------------------------


VALID = [blob_of({f"k{i}": v for i, v in enumerate(
    [1, "x", None, 1.5, Decimal("2.5"), date(2024, 1, 1), (1, 2), [1, {"a": b"z"}]])}),
    blob_of({}), blob_of({"only": "one"})]
KEY = b"signing-key"
VALID_SIGNED = [blob_of({"a": 1, "b": (2, 3)}, signing_key=KEY)]


FUZZ_PEAK_BYTES = 8 * 2**20  # the bound on one hostile decode's traced memory
FUZZ_SECONDS = 1.0  # and on its time (generous: this machine is shared)
FUZZ_STATS: dict[str, float] = {"cases": 0, "peak": 0, "seconds": 0.0}


@contextlib.contextmanager
def _bounded() -> Iterator[None]:
    """Measure one decode: its peak traced memory and its time, and hold them to the bounds."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        FUZZ_STATS["cases"] += 1
        FUZZ_STATS["peak"] = max(FUZZ_STATS["peak"], peak)
        FUZZ_STATS["seconds"] = max(FUZZ_STATS["seconds"], seconds)
        assert peak < FUZZ_PEAK_BYTES, f"a fuzz decode traced {peak} bytes"
        assert seconds < FUZZ_SECONDS, f"a fuzz decode took {seconds:.2f} s"


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bytes, bytes | None]:
    signed = draw(st.booleans())
    original = draw(st.sampled_from(VALID_SIGNED if signed else VALID))
    b = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "truncate", "splice", "insert", "size"]))
        if how == "flip" and b:
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif how == "truncate":
            del b[draw(st.integers(0, len(b))):]
        elif how == "splice" and b:
            i = draw(st.integers(0, len(b)))
            b[i:i] = draw(st.binary(max_size=32))
        elif how == "insert":
            other = draw(st.sampled_from(VALID))
            i = draw(st.integers(0, len(b)))
            b[i:] = other[i:]
        elif how == "size" and len(b) >= HEADER_SIZE:
            start = draw(st.sampled_from([40, 48, 56]))  # rows, payload, decoded
            b[start:start + 8] = draw(st.integers(0, 2**64 - 1)).to_bytes(8, "big")
    return original, bytes(b), KEY if signed else None


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated())
def test_fuzz_mutations_decode_to_the_original_or_a_corrupt_miss(
        case: tuple[bytes, bytes, bytes | None]) -> None:
    original, blob, key = case
    try:
        with _bounded():
            view, _, _ = decode(blob, fingerprint=FP, signing_key=key, max_bytes=64 * 2**20)
    except CorruptPayloadError:
        return
    # The original, or (a splice can rebuild one) another valid copy whole.
    candidates = [decode(b, fingerprint=FP, signing_key=key)[0]
                  for b in (original, *(VALID_SIGNED if key else VALID))]
    assert any(same(dict(view), dict(c)) for c in candidates)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.binary(max_size=512) | st.builds(lambda b: MAGIC + bytes([FORMAT_VERSION]) + b,
                                           st.binary(max_size=512)))
def test_fuzz_arbitrary_bytes_are_a_corrupt_miss(blob: bytes) -> None:
    with pytest.raises(CorruptPayloadError), _bounded():
        decode(blob, fingerprint=FP)


def test_the_fuzz_cases_stayed_within_memory_and_time() -> None:
    """Every decode the fuzz tests above made (run before this one) was measured: the peak
    memory it traced and its time, each under the stated bound."""
    if not FUZZ_STATS["cases"]:
        pytest.skip("run with the fuzz tests")
    print(f"fuzz: {FUZZ_STATS['cases']} decodes, peak {FUZZ_STATS['peak'] / 1024:.1f} KiB "
          "traced (Python allocations; zstd's own buffers are bounded by the declared size), "
          f"slowest {FUZZ_STATS['seconds'] * 1000:.1f} ms")
    assert FUZZ_STATS["peak"] < FUZZ_PEAK_BYTES and FUZZ_STATS["seconds"] < FUZZ_SECONDS


def test_fuzzing_stays_within_memory_and_time() -> None:
    """The bound the fuzz cases are held to, measured over the forged worst cases in-process:
    peak traced memory and time per decode."""
    cases = [forge(_nested_tuples(300)), forge(payload=_zeros_frame(2**26, content_size=True),
                                               decoded=2**20)]
    tracemalloc.start()
    start = time.perf_counter()
    for blob in cases:
        with pytest.raises(CorruptPayloadError):
            decode(blob, fingerprint=FP, max_bytes=64 * 2**20)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"hostile decodes: peak {peak / 2**20:.1f} MiB traced, {seconds * 1000:.0f} ms")
    assert peak < 16 * 2**20 and seconds < 2
