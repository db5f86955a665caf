"""The node tier: processes of one machine (a Lambda Managed Instance's execution environment)
share copies through files. Real processes on one directory, with and without a fleet tier;
configuration; a torn or damaged file; a directory another user could write."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from athena_warm.adapters.redis import RedisL2

from athena_warm import Cache
from athena_warm._files import FileTier
from athena_warm._node import DEFAULT_DIR, NodeTier, node_dir
from athena_warm.l2 import open_l2
from tests.conftest import FakeClock
from tests.helpers import CountingOrigin, declare
from tests.servers import free_port
from tests.test_fleet import run_fleet

# -- configuration -------------------------------------------------------------------------------


def test_on_by_default_only_on_managed_instances(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    assert node_dir() is None and open_l2() is None
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "lambda-managed-instances")
    assert node_dir() == DEFAULT_DIR
    monkeypatch.setenv("ATHENA_WARM_NODE_DIR", "off")
    assert node_dir() is None
    monkeypatch.setenv("ATHENA_WARM_NODE_DIR", str(tmp_path))
    alone = open_l2()
    assert isinstance(alone, FileTier) and alone.root == tmp_path
    monkeypatch.setenv("ATHENA_WARM_REDIS_URL", "redis://127.0.0.1:6379/0")
    front = open_l2()
    assert isinstance(front, NodeTier) and isinstance(front.remote, RedisL2)
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
    monkeypatch.delenv("ATHENA_WARM_NODE_DIR")
    assert isinstance(open_l2(), RedisL2)


def test_a_directory_others_can_write_is_refused(tmp_path: Path, duck: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    shared = tmp_path / "everyone"
    shared.mkdir()
    shared.chmod(0o777)
    declare()
    origin = CountingOrigin(duck)
    with caplog.at_level(logging.WARNING, logger="athena_warm"):
        cache = Cache(origin=origin, l2=FileTier(shared))
        assert len(cache.get("customers")) == 1000 and origin.calls == 1  # served anyway
    assert "not a directory of this user's alone" in caplog.text
    assert sorted(os.listdir(shared)) == []  # nothing was written there


def test_the_root_is_made_private(tmp_path: Path, duck: Any) -> None:
    declare()
    Cache(origin=CountingOrigin(duck), l2=FileTier(tmp_path / "node")).get("customers")
    assert (tmp_path / "node").stat().st_mode & 0o777 == 0o700


# -- damage --------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["torn", "flipped", "no pointer", "empty"])
def test_a_torn_or_damaged_file_is_a_logged_miss_and_is_replaced(
        tmp_path: Path, duck: Any, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    declare()
    tier = FileTier(tmp_path / "node")
    m = Cache(origin=CountingOrigin(duck), l2=tier).get("customers")
    path = tmp_path / "node" / "customers" / m.meta.fingerprint / "copy"
    raw = path.read_bytes()
    line, _, blob = raw.partition(b"\n")
    path.write_bytes({"torn": raw[: len(raw) // 2],
                      "flipped": line + b"\n" + blob[:-10] + bytes(b ^ 0xFF for b in blob[-10:]),
                      "no pointer": blob, "empty": b""}[damage])
    origin = CountingOrigin(duck)
    with caplog.at_level(logging.WARNING, logger="athena_warm"):
        got = Cache(origin=origin, l2=tier).get("customers")
    assert dict(got) == dict(m) and origin.calls == 1
    if damage in ("torn", "flipped"):  # the pointer parsed: the copy's checks caught it
        assert "copy of customers is unusable" in caplog.text
    assert path.read_bytes() != raw[: len(raw) // 2]  # replaced by the reload
    assert Cache(origin=CountingOrigin(duck), l2=tier).get("customers").meta.tier == "l2"


# -- in front of the fleet's tier -----------------------------------------------------------------


class Counting:
    def __init__(self, tier: Any) -> None:
        self.tier, self.reads = tier, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tier, name)

    def read(self, *a: Any, **kw: Any) -> Any:
        got = self.tier.read(*a, **kw)
        self.reads += got is not None
        return got


def test_in_front_of_redis_one_download_per_machine(tmp_path: Path, duck: Any,
                                                     redis_url: str) -> None:
    declare()
    clock, wall = FakeClock(), FakeClock(1.7e9)
    Cache(origin=CountingOrigin(duck), l2=RedisL2(redis_url), clock=clock,
          wall_clock=wall).get("customers")  # another machine published it
    remote = Counting(RedisL2(redis_url))
    machine = [Cache(origin=CountingOrigin(duck), l2=NodeTier(FileTier(tmp_path), remote),
                     clock=clock, wall_clock=wall) for _ in range(4)]
    for cache in machine:
        assert cache.get("customers").meta.tier == "l2"
    assert remote.reads == 1  # the first process downloaded; its siblings read the file


def test_a_new_copy_in_the_fleet_replaces_the_machines(tmp_path: Path, duck: Any,
                                                         redis_url: str) -> None:
    declare()
    clock, wall = FakeClock(), FakeClock(1.7e9)
    node = NodeTier(FileTier(tmp_path), RedisL2(redis_url))
    a = Cache(origin=CountingOrigin(duck), l2=node, clock=clock, wall_clock=wall)
    a.get("customers")
    elsewhere = Cache(origin=CountingOrigin(duck), l2=RedisL2(redis_url), clock=clock,
                      wall_clock=wall)
    assert elsewhere.invalidate("customers") == 1
    elsewhere.get("customers")  # another machine reloaded generation 1
    fresh = Cache(origin=CountingOrigin(duck), l2=node, clock=clock, wall_clock=wall)
    got = fresh.get("customers")
    assert got.meta.tier == "l2" and got.meta.generation == 1
    pointer = node.local.pointer("customers", got.meta.fingerprint)
    assert pointer is not None and pointer.number == 1  # the file holds the new one now


def test_with_the_fleet_tier_down_the_machine_still_loads_once(tmp_path: Path,
                                                               duck: Any) -> None:
    declare()
    dead = RedisL2(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.1)
    origins = [CountingOrigin(duck) for _ in range(3)]
    caches = [Cache(origin=o, l2=NodeTier(FileTier(tmp_path), dead)) for o in origins]
    for cache in caches:
        assert len(cache.get("customers")) == 1000
    assert [o.calls for o in origins] == [1, 0, 0]


# -- real processes on one directory --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.one_server_kind
def test_sixteen_processes_on_one_directory_run_one_query(
        redis_url: str, redis_server: Any, lake: Path, tmp_path: Path) -> None:
    admin = redis_server.client()
    reports: list[dict[str, Any]] = []
    results = run_fleet(admin, [dict(url=redis_url, lake=str(lake), delay=0.5, no_l2=True,
                                     node=str(tmp_path / "node"))] * 16, outputs=reports)
    assert int(admin.get("test:queries")) == 1
    assert len(results) == 16 and all("error" not in r for r in results), results
    tiers = [r["tier"] for r in results]
    assert tiers.count("origin") == 1 and set(tiers) == {"origin", "l2"}
    last = max(r["seconds"] for r in results)
    print(f"16 processes, no L2, 0.5 s origin: 1 query; all had it within {last:.2f} s; "
          f"RSS {min(r['rss_mb'] for r in reports):.0f}-{max(r['rss_mb'] for r in reports):.0f}"
          " MB per process")


@pytest.mark.slow
def test_sixteen_processes_in_front_of_redis_download_once(
        redis_url: str, redis_server: Any, lake: Path, tmp_path: Path, duck: Any) -> None:
    admin = redis_server.client()
    declare()
    Cache(origin=CountingOrigin(duck), l2=RedisL2(redis_url)).get("customers")  # published
    results = run_fleet(admin, [dict(url=redis_url, lake=str(lake), node=str(tmp_path / "n"),
                                     count_reads=True)] * 16)
    assert int(admin.get("test:queries") or 0) == 0
    assert all(r.get("tier") == "l2" for r in results), results
    assert int(admin.get("test:l2reads")) == 1  # one download for the 16 processes
    meta = json.loads(json.dumps(results[0]))
    assert meta["rows"] == 1000
