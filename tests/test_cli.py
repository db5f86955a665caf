"""The CLI and the demo, run as a user runs them: as subprocesses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

TOML = """
[mappings.customers]
sql = "SELECT customer_id, account_id, n FROM customers WHERE n < ?"
params = [100]
database = "analytics"
key = "customer_id"
value = "account_id"
ttl = "24h"

[mappings.by_number]
sql = "SELECT n, customer_id FROM customers"
database = "analytics"
key = "n"
value = "customer_id"
"""


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "athena_warm.cli", *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "mappings.toml"
    p.write_text(TOML)
    return p


def test_demo(tmp_path: Path) -> None:
    r = cli("demo", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "200,000 customers" in out
    lines = [ln for ln in out.splitlines() if re.match(r"^[AB]\s+\d+\s+#\d+", ln)]
    assert len(lines) == 12
    pids = {ln.split()[0]: ln.split()[1] for ln in lines}
    assert set(pids) == {"A", "B"} and pids["A"] != pids["B"]  # two processes
    tiers = [(ln.split()[0], ln.split()[4]) for ln in lines]
    assert tiers.count(("A", "origin")) == 2 and tiers.count(("B", "origin")) == 1
    assert sum(1 for _, t in tiers if t == "l1") == 9
    assert "first load in this container" in out
    # at A's first TTL the table is unchanged: kept with no query; after the update, reloaded
    assert "#9 " in next(ln for ln in lines if "table unchanged: kept, no query" in ln)
    reload = next(ln for ln in lines if "the table changed: reloaded" in ln)
    assert "#12" in reload and "C0008700 -> A99999" in reload  # the updated row
    # the execution counter of the seed document counts invocations per container
    a_counts = [int(ln.split()[7]) for ln in lines if ln.startswith("A")]
    assert a_counts == list(range(1, 9))
    assert (tmp_path / "analytics" / "customer_mapping" / "part-0.parquet").is_file()


def test_list(config: Path) -> None:
    r = cli("--config", str(config), "list")
    assert r.returncode == 0, r.stderr
    assert re.search(r"customers\s+analytics\s+customer_id\s+account_id\s+1d\s+1d", r.stdout)
    r = cli("--config", str(config), "list", "--json")
    data = json.loads(r.stdout)
    assert [m["name"] for m in data["mappings"]] == ["by_number", "customers"]


def test_get_and_warm(config: Path, lake: Path) -> None:
    base = ["--config", str(config), "--origin", f"duckdb:{lake}"]
    r = cli(*base, "get", "customers", "C0005", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["value"] == "A5" and data["found"] and data["tier"] == "origin"
    assert data["rows"] == 100
    r = cli(*base, "get", "by_number", "42")  # numeric keys are matched as numbers
    assert r.returncode == 0 and r.stdout.startswith("C0042")
    r = cli(*base, "get", "customers", "C9999")
    assert r.returncode == 1 and "not found" in r.stderr
    r = cli(*base, "warm", "--all", "--json")
    assert r.returncode == 0, r.stderr
    assert {w["name"]: w["rows"] for w in json.loads(r.stdout)["warmed"]} == {
        "by_number": 1000, "customers": 100}


def test_errors_and_exit_codes(config: Path, lake: Path) -> None:
    r = cli("--config", str(config), "--origin", f"duckdb:{lake}", "get", "nope", "k")
    assert r.returncode == 1
    assert "unknown mapping 'nope'" in r.stderr and "'by_number', 'customers'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # one line, no traceback
    r = cli("list")
    assert r.returncode == 2 and "--config" in r.stderr
    r = cli("frobnicate")
    assert r.returncode == 2
    r = cli()
    assert r.returncode == 2
    r = cli("--config", str(config), "--origin", "duckdb:/no/such/dir", "get", "customers", "x")
    assert r.returncode == 2 and "neither a folder" in r.stderr


def test_demo_with_l2(tmp_path: Path) -> None:
    r = cli("demo", "--dir", str(tmp_path), "--rows", "20000", "--l2")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if re.match(r"^[AB]\s+\d+\s+#\d+", ln)]
    tiers = [(ln.split()[0], ln.split()[4]) for ln in lines]
    assert ("B", "origin") not in tiers  # container B never queried the origin
    assert tiers.count(("B", "l2")) == 1 and tiers.count(("A", "origin")) == 2
    assert "the fleet's copy from L2: no query" in r.stdout
    # A found the table unchanged at its TTL; B kept its copy on A's check, with no query
    kept = [ln.split()[0] for ln in lines if "table unchanged: kept, no query" in ln]
    assert kept == ["A", "B"]
