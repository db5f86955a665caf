"""The fleet, with real processes against a real server, counting queries at the origin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from athena_warm.adapters.redis import RedisL2

from athena_warm import Cache
from tests.helpers import CountingOrigin, declare

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # fleets of real processes




def spawn(**opts: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.fleet_worker", json.dumps(opts)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_fleet(admin: Any, workers: list[dict[str, Any]], *, timeout: float = 120,
              outputs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Start the workers, let them go at once; every call's result (``outputs``: each
    worker's whole report)."""
    procs = [spawn(name=str(i), **w) for i, w in enumerate(workers)]
    deadline = time.monotonic() + timeout
    while int(admin.get("test:ready") or 0) < len(procs):
        assert time.monotonic() < deadline, "the workers did not get ready"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    admin.set("test:go", 1)  # all at once
    results: list[dict[str, Any]] = []
    for p in procs:
        out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
        assert p.returncode == 0, err[-2000:]
        report = json.loads(out.strip().splitlines()[-1])
        results.extend(report["results"])
        if outputs is not None:
            outputs.append(report)
    return results


def publish_stale_copy(duck: Any, l2: Any, age: float) -> None:
    """Put a copy made ``age`` seconds ago in L2, as a container of an hour ago did."""
    declare()
    Cache(origin=CountingOrigin(duck), l2=l2,
          wall_clock=lambda: time.time() - age).get("customers")


@pytest.fixture(params=["redis", "s3"])
def shared(request: pytest.FixtureRequest, redis_url: str,
           monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The fleet's shared tier: Redis, or S3 alone (a moto server; Redis then only counts
    queries and starts the workers). Options for the workers, and this process's tier."""
    if request.param == "redis":
        return {"opts": {}, "tier": RedisL2(redis_url)}
    import boto3
    from athena_warm.adapters.s3 import S3Tier

    moto = request.getfixturevalue("moto_serial")
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto}.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="fleet-cache")
    return {"opts": {"s3": moto}, "tier": S3Tier("s3://fleet-cache/aw")}


def test_twenty_processes_on_an_expired_mapping_run_one_query(
    duck: Any, redis_url: str, redis_server: Any, lake: Path, shared: dict[str, Any]
) -> None:
    admin = redis_server.client()
    publish_stale_copy(duck, shared["tier"], age=3700)  # older than the 1 h TTL
    # moto answers S3 one request at a time (tests/moto_serial.py), ~5 ms each on this
    # machine: 80 callers' requests queue there, so the origin is slower for that tier.
    delay = 1.0 if not shared["opts"] else 5.0
    results = run_fleet(admin, [dict(url=redis_url, lake=str(lake), threads=4, delay=delay,
                                     **shared["opts"])] * 20)
    assert int(admin.get("test:queries")) == 1  # exactly one origin query for the fleet
    assert len(results) == 80 and all("error" not in r for r in results), results
    tiers = [r["tier"] for r in results]
    assert tiers.count("origin") == 1
    # Nobody else waited for the refresh: they served the stale copy from L2 or memory.
    waits = sorted(r["seconds"] for r in results if r["tier"] != "origin")
    print(f"{shared['tier'].name}: median wait {waits[len(waits) // 2] * 1000:.0f} ms, "
          f"max {waits[-1] * 1000:.0f} ms; the refresh took {delay} s")
    assert waits[len(waits) // 2] < delay * 0.9, waits


def test_with_no_copy_anywhere_one_queries_and_the_rest_wait(
    redis_url: str, redis_server: Any, lake: Path
) -> None:
    admin = redis_server.client()
    results = run_fleet(admin, [dict(url=redis_url, lake=str(lake), threads=4, delay=1.0)] * 20)
    assert int(admin.get("test:queries")) == 1
    assert len(results) == 80 and all("error" not in r for r in results), results
    tiers = [r["tier"] for r in results]
    assert tiers.count("origin") == 1 and set(tiers) <= {"origin", "l2", "l1"}
    # The waiters take the copy promptly once it is published (they look every 20-50 ms).
    published = next(r["done_at"] for r in results if r["tier"] == "origin")
    lags = sorted(r["done_at"] - published for r in results if r["tier"] != "origin")
    print(f"waiters returned {lags[len(lags) // 2] * 1000:.0f} ms (median), "
          f"{lags[-1] * 1000:.0f} ms (max) after the copy was published")
    assert lags[len(lags) // 2] < 0.5, lags  # loose: the machine is shared and noisy


def test_a_holder_killed_mid_refresh_is_taken_over_once(
    redis_url: str, redis_server: Any, lake: Path, shared: dict[str, Any]
) -> None:
    admin = redis_server.client()
    admin.set("test:go", 1)
    holder = spawn(url=redis_url, lake=str(lake), delay=60, refresh_timeout=3, **shared["opts"])
    deadline = time.monotonic() + 60
    while int(admin.get("test:queries") or 0) < 1:  # it holds the lease and is querying
        assert time.monotonic() < deadline and holder.poll() is None
        time.sleep(0.05)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate()
    started = time.monotonic()
    taker = spawn(url=redis_url, lake=str(lake), delay=0.1, refresh_timeout=3,
                  **shared["opts"])
    out, err = taker.communicate(timeout=60)
    assert taker.returncode == 0, err[-2000:]
    (result,) = json.loads(out.strip().splitlines()[-1])["results"]
    assert result["tier"] == "origin", result
    assert int(admin.get("test:queries")) == 2  # exactly one more query
    assert time.monotonic() - started >= 1.0  # it waited for the dead holder's lease to end


def test_hand_over_across_two_processes(
    redis_url: str, redis_server: Any, lake: Path, moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3
    import requests

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_server}.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="athena-results")
    # Queries take 12 status checks per step (queued, running): longer than A's 2 seconds.
    requests.post(moto_server + "/moto-api/state-manager/set-transition", timeout=5,
                  json={"model_name": "athena::execution",
                        "transition": {"progression": "manual", "times": 12}})
    admin = redis_server.client()
    admin.set("test:go", 1)
    opts = dict(url=redis_url, lake=str(lake), athena=True, moto=moto_server)
    a = spawn(**opts, remaining=2.0)
    out, err = a.communicate(timeout=60)
    assert a.returncode == 0, err[-2000:]
    (first,) = json.loads(out.strip().splitlines()[-1])["results"]
    assert first["error"].startswith("DeadlineError") and "was started" in first["error"], first
    assert int(admin.get("test:queries")) == 1
    b = spawn(**opts, remaining=60)
    out, err = b.communicate(timeout=90)
    assert b.returncode == 0, err[-2000:]
    (second,) = json.loads(out.strip().splitlines()[-1])["results"]
    assert second.get("tier") == "origin" and second["rows"] == 1000, second
    assert int(admin.get("test:queries")) == 1  # B collected A's query; none started again
