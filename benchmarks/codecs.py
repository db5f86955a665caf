"""Which L2 codec: size and speed of candidate formats on the demo's 200k-row mapping.

    python benchmarks/codecs.py [--rows 200000]

Needs the bench extra (orjson, lz4, pyarrow). Decoding includes building the key -> value dict.
orjson has no Decimal/date/datetime decoding, so it would need type tags of its own; Arrow IPC
needs pyarrow (40+ MB) in the Lambda package. athena-warm ships msgpack + zstd.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from collections.abc import Callable
from typing import Any

from _common import demo_rows


def best(fn: Callable[[], Any], n: int = 5) -> tuple[float, Any]:
    out, t = None, float("inf")
    for _ in range(n):
        s = time.perf_counter()
        out = fn()
        t = min(t, time.perf_counter() - s)
    return t * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args()
    import lz4.frame
    import msgpack
    import orjson
    import pyarrow as pa
    import zstandard

    decl, result = demo_rows(args.rows)
    data = {r[0]: r[1] for r in result.rows}
    keys, values = list(data), list(data.values())
    zc, zd = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    rows: list[tuple[str, int, float, float]] = []

    def add(name: str, enc: Callable[[], bytes], dec: Callable[[bytes], dict[Any, Any]]) -> None:
        e_ms, blob = best(enc)
        d_ms, back = best(lambda: dec(blob))
        assert back == data, name
        rows.append((name, len(blob), e_ms, d_ms))

    add("pickle (protocol 5)", lambda: pickle.dumps(data, protocol=5), pickle.loads)
    add("json", lambda: json.dumps(data).encode(), json.loads)
    for cname, comp, decomp in [("zstd-3", zc.compress, zd.decompress),
                                ("lz4", lz4.frame.compress, lz4.frame.decompress)]:
        add(f"msgpack two lists + {cname}", lambda c=comp: c(msgpack.packb([keys, values])),
            lambda b, d=decomp: dict(zip(*msgpack.unpackb(d(b)), strict=True)))
        add(f"orjson two lists + {cname}", lambda c=comp: c(orjson.dumps([keys, values])),
            lambda b, d=decomp: dict(zip(*orjson.loads(d(b)), strict=True)))
    for comp_name in ("zstd", "lz4"):
        def enc(c: str = comp_name) -> bytes:
            table = pa.table({"k": keys, "v": values})
            sink = pa.BufferOutputStream()
            opts = pa.ipc.IpcWriteOptions(compression=c)
            with pa.ipc.new_stream(sink, table.schema, options=opts) as w:
                w.write_table(table)
            return bytes(sink.getvalue().to_pybytes())

        def dec(b: bytes) -> dict[Any, Any]:
            t = pa.ipc.open_stream(b).read_all()
            return dict(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True))

        add(f"arrow IPC + {comp_name}", enc, dec)

    from athena_warm._codec import VALUE_SCALAR, decode, encode

    add("athena-warm (msgpack + zstd-3, header, checksum)",
        lambda: encode(data, fingerprint=decl.fingerprint, generation=0, epoch="0" * 16,
                       created_at=0.0,
                       key_arity=1, value_kind=VALUE_SCALAR),
        lambda b: dict(decode(b, fingerprint=decl.fingerprint)[0]))
    json_size = rows[1][1]
    print(f"{len(data):,} rows (customer_id -> account_id), best of 5; Python and the libraries "
          "as installed")
    w = max(len(r[0]) for r in rows)
    print(f"{'codec':{w}}  {'bytes':>10}  {'vs json':>7}  {'encode':>9}  {'decode':>9}")
    for name, size, e, d in rows:
        print(f"{name:{w}}  {size:10,}  {size / json_size:6.1%}  {e:6.1f} ms  {d:6.1f} ms")


if __name__ == "__main__":
    main()
