"""The README's examples run as written on the demo's data: the quick start's handler (with
the DuckDB origin, through the local invoker) and the TOML declarations (through the CLI)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def block(lang: str, after: str) -> str:
    """The first ```lang block after the heading or text ``after``."""
    start = README.index(after)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(README, start)
    assert m is not None, f"no {lang} block after {after!r}"
    return m.group(1)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from athena_warm._demo import write_sample_data

    root = tmp_path_factory.mktemp("demo-data")
    write_sample_data(root, 2000)
    return root


def expected(demo_data: Path, customer: str) -> Any:
    import duckdb

    table = demo_data / "analytics" / "customer_mapping" / "part-0.parquet"
    con = duckdb.connect()
    try:
        row = con.execute(f"SELECT account_id, active FROM '{table}' WHERE customer_id = ?",
                          [customer]).fetchone()
    finally:
        con.close()
    assert row is not None
    return row[0] if row[1] else None


def test_the_quick_start_runs_as_written(demo_data: Path, tmp_path: Path) -> None:
    code = block("python", "## Quick start")
    app = tmp_path / "app.py"
    app.write_text(code)
    runner = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import app; "
        "from athena_warm.local import invoke; "
        "print(json.dumps([invoke(app.handler, {'customer_id': c}, timeout=30) "
        "for c in ('C0000001', 'C0000002')]))")
    env = {**os.environ, "ATHENA_WARM_ORIGIN": f"duckdb:{demo_data}",
           "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_NAMESPACE": "Readme",
           "POWERTOOLS_SERVICE_NAME": "readme"}
    r = subprocess.run([sys.executable, "-c", runner, str(tmp_path)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == [{"account_id": expected(demo_data, c)} for c in ("C0000001", "C0000002")]


def test_the_toml_example_runs_as_written(demo_data: Path, tmp_path: Path) -> None:
    config = tmp_path / "mappings.toml"
    config.write_text(block("toml", "The same declarations can live in a TOML file"))
    customer = next(c for c in (f"C{i:07d}" for i in range(1, 50))
                    if expected(demo_data, c) is not None)
    r = subprocess.run([sys.executable, "-m", "athena_warm.cli", "--config", str(config),
                        "--origin", f"duckdb:{demo_data}", "get", "customer_mapping", customer],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(expected(demo_data, customer))


def test_the_readmes_links_lead_somewhere() -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if target.startswith(("http://", "https://")):
            continue
        assert (ROOT / target).exists(), target
