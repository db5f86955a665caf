"""The operator's CLI, run as a subprocess against a real server and DuckDB (and a moto server
for Athena): the zero-gap switch, --hard, status of a damaged copy, Ctrl-C, --json schemas."""

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

from athena_warm import Cache, Mapping
from athena_warm.exceptions import OriginError
from tests.conftest import FakeClock
from tests.helpers import CountingOrigin

ROOT = Path(__file__).resolve().parent.parent

TOML = """
[defaults]
database = "analytics"
ttl = "1h"
max_stale = "1d"
ttl_jitter = 0

[mappings.customers]
sql = "SELECT customer_id, account_id FROM customers"
key = "customer_id"
value = "account_id"
"""


@pytest.fixture
def env(tmp_path: Path, lake: Path, redis_url: str) -> dict[str, str]:
    config = tmp_path / "mappings.toml"
    config.write_text(TOML)
    base = {k: v for k, v in os.environ.items() if not k.startswith("ATHENA_WARM_")}
    return {**base, "ATHENA_WARM_CONFIG": str(config), "ATHENA_WARM_REDIS_URL": redis_url,
            "ATHENA_WARM_ORIGIN": f"duckdb:{lake}"}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "athena_warm.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_zero_gap_switch_seen_from_a_reading_container(env: dict[str, str], lake: Path,
                                                       redis_url: str) -> None:
    assert cli(env, "warm", "customers").returncode == 0  # the fleet's copy is in L2
    reader = subprocess.Popen(
        [sys.executable, "-m", "tests.reader_worker", redis_url, str(lake), "60", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    switched = cli(env, "invalidate", "customers", "--refresh", "--json")
    assert switched.returncode == 0, switched.stderr
    assert json.loads(switched.stdout)["invalidated"][0] == {
        "name": "customers", "generation": 1, "refreshed": True, "hard": False, "rows": 1000,
        "query_id": None}
    out, _ = reader.communicate(timeout=60)
    got = json.loads(out.strip().splitlines()[-1])
    tiers = {tier for tier, _ in got["reads"]}
    generations = [g for _, g in got["reads"]]
    assert got["origin_queries"] == 0  # it never waited on the origin
    assert tiers <= {"l1", "l2"}  # never a miss
    assert generations[0] == 0 and generations[-1] == 1 and generations == sorted(generations)
    assert len(got["reads"]) > 50


def test_hard_invalidation_serves_no_older_copy(env: dict[str, str], duck: Any,
                                                redis_url: str) -> None:
    Mapping("customers", sql="SELECT customer_id, account_id FROM customers",
            database="analytics", key="customer_id", value="account_id", ttl="1h",
            max_stale="1d", ttl_jitter=0)
    clock = FakeClock()
    origin = CountingOrigin(duck)
    soft = Cache(origin=origin, l2=RedisL2(redis_url), clock=clock, check_interval=10,
                 retry_interval=0.2)
    old = soft.get("customers")
    origin.fail = OriginError("the table is being rewritten", origin="counting", state="FAILED")
    assert cli(env, "invalidate", "customers").returncode == 0
    clock.advance(10)
    assert soft.get("customers") is old  # soft: the old copy is served while refreshing fails
    assert cli(env, "invalidate", "customers", "--hard").returncode == 0
    clock.advance(10)
    with pytest.raises(OriginError, match="the table is being rewritten"):
        soft.get("customers")  # hard: never the older copy, not even as stale
    origin.fail = None
    time.sleep(0.3)  # the failure marker (a 0.2 s lease in Redis) expires
    clock.advance(10)
    assert soft.get("customers").meta.generation == 2


def test_status_flags_a_damaged_copy(env: dict[str, str], redis_server: Any) -> None:
    assert cli(env, "warm", "customers").returncode == 0
    ok = cli(env, "status", "--json")
    assert ok.returncode == 0
    (item,) = json.loads(ok.stdout)["mappings"]
    assert item["present"] and item["corrupt"] is None and item["servable"]
    admin = redis_server.client()
    (key,) = admin.keys("athena-warm:{customers}:*:*:0")
    value = admin.get(key)
    admin.set(key, value[:-3] + bytes([value[-3] ^ 1]) + value[-2:])
    bad = cli(env, "status")
    assert bad.returncode == 1
    assert "CORRUPT (checksum mismatch)" in bad.stdout
    (item,) = json.loads(cli(env, "status", "--json").stdout)["mappings"]
    assert item["corrupt"] == "checksum mismatch"


def test_json_schemas(env: dict[str, str]) -> None:
    listed = json.loads(cli(env, "list", "--json").stdout)["mappings"][0]
    assert set(listed) == {"name", "tables", "database", "key", "value", "ttl_s",
                           "max_stale_s", "fingerprint", "sql"}
    assert listed["tables"] == ["analytics.customers"]
    warmed = json.loads(cli(env, "warm", "--all", "--json").stdout)["warmed"][0]
    assert set(warmed) == {"name", "rows", "tier", "query_id", "nbytes", "published",
                           "not_published_because"}
    got = json.loads(cli(env, "get", "customers", "C0001", "--json").stdout)
    assert set(got) == {"name", "key", "found", "value", "tier", "generation", "rows",
                        "loaded_at"} and got["value"] == "A1" and got["tier"] == "l2"
    status = json.loads(cli(env, "status", "--json").stdout)
    assert set(status) == {"l2", "mappings"}
    assert {"name", "fingerprint", "l2", "reachable", "generation", "epoch", "floor", "present",
            "corrupt", "lease", "bytes", "copy_generation", "rows", "created_at", "signed",
            "age_s", "expires_in_s", "validated_at", "stale",
            "servable"} == set(status["mappings"][0])
    inv = json.loads(cli(env, "invalidate", "--all", "--json").stdout)["invalidated"][0]
    assert set(inv) == {"name", "generation", "refreshed", "hard", "rows", "query_id"}


def test_invalidate_without_l2_explains(env: dict[str, str]) -> None:
    no_l2 = {k: v for k, v in env.items() if k != "ATHENA_WARM_REDIS_URL"}
    r = cli(no_l2, "invalidate", "customers")
    assert r.returncode == 1
    assert "reaches other containers only through L2" in r.stderr
    assert "ATHENA_WARM_REDIS_URL" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert cli(no_l2, "invalidate").returncode == 2  # usage: no name
    assert "no L2 configured" in cli(no_l2, "status").stdout


def test_ctrl_c_stops_the_running_athena_query(env: dict[str, str], moto_server: str) -> None:
    import boto3
    import requests

    url = moto_server
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url}
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="athena-results")
    requests.post(url + "/moto-api/state-manager/set-transition", timeout=5,
                  json={"model_name": "athena::execution",
                        "transition": {"progression": "manual", "times": 10**6}})
    athena_env = {**env, **aws, "ATHENA_WARM_ORIGIN": "athena",
                  "ATHENA_WARM_S3_STAGING_DIR": "s3://athena-results/staging/",
                  "ATHENA_WARM_POLL_INTERVAL": "0.1s"}
    proc = subprocess.Popen([sys.executable, "-m", "athena_warm.cli", "warm", "customers"],
                            env=athena_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # progress, one line per change off a terminal
    assert "customers: query " in line and "QUEUED" in line, line
    query_id = line.split("query ")[1].split()[0]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert f"query {query_id} was stopped" in err
    athena = boto3.client("athena", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    state = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
    assert state["Status"]["State"] == "CANCELLED"


def test_a_refused_publish_says_why_in_one_printable_line(env: dict[str, str],
                                                          own_server: Any) -> None:
    """A user that may read but not write (NOPERM on SET): invalidate --refresh says that L2
    refused it, and nothing it prints quotes the binary payload."""
    admin = own_server.client()
    admin.execute_command("ACL", "SETUSER", "reader", "on", ">pw", "~athena-warm:*",
                          "resetchannels", "-@all", "+@connection", "+get", "+mget", "+getrange",
                          "+hmget", "+hset", "+hincrby", "+eval", "+evalsha", "+info", "+type",
                          "+pttl", "+incr", "+del", "+pexpire")
    reader = {**env, "ATHENA_WARM_REDIS_URL":
              f"redis://reader:pw@127.0.0.1:{own_server.port}/0"}
    r = cli(reader, "invalidate", "--refresh", "customers")
    assert r.returncode == 1, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "NOT bumped" in last and "L2 said" in last and "permission" in last.lower(), last
    assert "Traceback" not in r.stderr
    assert all(c.isprintable() or c in "\n\t" for c in r.stderr), r.stderr
    assert "\\x" not in r.stderr and len(max(r.stderr.splitlines(), key=len)) < 600
    r = cli(reader, "warm", "customers")
    assert r.returncode == 1 and "NO:" in r.stdout, r.stdout + r.stderr
