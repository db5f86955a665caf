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


@pytest.mark.slow
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


@pytest.mark.slow
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


# -- what an operator runs into (issue 14) -----------------------------------------------------

APP = '''
import pathlib
import athena_warm

print("the function's own output at import")  # must not reach the CLI's stdout


class Marking:
    """An origin that leaves a mark when it is queried."""

    name = "marking"

    def query(self, sql, params, **kw):
        pathlib.Path({mark!r}).write_text("queried")
        raise RuntimeError("this origin only leaves marks")


athena_warm.configure(origin=Marking())
athena_warm.Mapping("m", sql="SELECT 1 AS k, 2 AS v", key="k", value="v")
athena_warm.prewarm("m")  # what a function does at init: not when the CLI reads it
'''


def one_line_error(r: subprocess.CompletedProcess[str], code: int, *says: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    ours = [ln for ln in r.stderr.strip().splitlines() if "the function's own output" not in ln]
    assert "Traceback" not in r.stderr and len(ours) == 1, r.stderr
    for text in says:
        assert text in r.stderr, r.stderr


def test_the_cli_reads_an_app_without_its_side_effects(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    app = tmp_path / "function.py"
    app.write_text(APP.format(mark=str(mark)))
    r = cli("--app", str(app), "list", "--json")
    assert r.returncode == 0, r.stderr
    assert [m["name"] for m in json.loads(r.stdout)["mappings"]] == ["m"]  # only JSON
    assert "the function's own output" in r.stderr
    assert not mark.exists()  # prewarm did not run: no query, nothing published
    # a usage error is found before any query
    one_line_error(cli("get", "--app", str(app), "m", "a", "b"), 2, "1-column key")
    assert not mark.exists()


def test_options_before_or_after_the_command(config: Path) -> None:
    before = cli("--config", str(config), "list", "--json")
    after = cli("list", "--config", str(config), "--json")
    assert before.returncode == after.returncode == 0 and before.stdout == after.stdout


def test_version_and_help() -> None:
    r = cli("--version")
    assert r.returncode == 0 and re.fullmatch(r"athena-warm \d+\.\d+\.\d+\s*", r.stdout)
    r = cli("--help")
    for text in ("ATHENA_WARM_REDIS_URL", "ATHENA_WARM_S3_URL", "AWS_REGION", "exit codes"):
        assert text in r.stdout
    r = cli("get", "--help")
    assert "the mapping's name" in r.stdout and "--config" in r.stdout


@pytest.mark.parametrize(("toml", "says"), [
    (b"defaults = 5\n[mappings.x]\nsql='select 1'\nkey='k'\n", "defaults must be a table"),
    (b"[mappings]\nx = 5\n", "mappings.x must be a table"),
    (b"[mappings.x]\nsql = '\xff\xfe'\n", "is not UTF-8 text"),
])
def test_bad_toml_is_one_line(tmp_path: Path, toml: bytes, says: str) -> None:
    p = tmp_path / "m.toml"
    p.write_bytes(toml)
    one_line_error(cli("--config", str(p), "list"), 2, says)


def test_a_directory_as_config_is_one_line(tmp_path: Path) -> None:
    one_line_error(cli("--config", str(tmp_path), "list"), 2, "is a directory")


@pytest.mark.parametrize(("source", "says"), [
    ("def broken(:\n    pass\n", "has a syntax error"),
    ("import no_such_dependency_here\n", "its own import failed"),
    ("raise RuntimeError('boom at import')\n", "raised RuntimeError while being imported"),
])
def test_an_app_that_cannot_be_imported_is_one_line(tmp_path: Path, source: str,
                                                    says: str) -> None:
    app = tmp_path / "function.py"
    app.write_text(source)
    one_line_error(cli("--app", str(app), "list"), 2, says)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:notaport", "redis://[::1",
                                 "s3://No_Bucket/x"])
def test_a_bad_shared_tier_url_is_one_line(config: Path, url: str) -> None:
    import os

    var = "ATHENA_WARM_S3_URL" if url.startswith("s3") else "ATHENA_WARM_REDIS_URL"
    env = {**os.environ, var: url}
    one_line_error(cli("--config", str(config), "status", env=env), 2, "ATHENA_WARM_")


def test_athena_without_a_region_is_one_line(config: Path, tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ATHENA_WARM_"))}
    env.update(HOME=str(tmp_path), AWS_CONFIG_FILE=str(tmp_path / "none"),
               ATHENA_WARM_ORIGIN="athena")
    one_line_error(cli("--config", str(config), "get", "customers", "C0001", env=env), 2,
                   "needs an AWS region", "AWS_REGION")


def test_warm_and_status_say_when_l2_did_not_take_it(config: Path, lake: Path) -> None:
    import os

    from tests.servers import free_port

    env = {**os.environ, "ATHENA_WARM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "ATHENA_WARM_REDIS_CONNECT_TIMEOUT": "0.1"}
    base = ["--config", str(config), "--origin", f"duckdb:{lake}"]
    r = cli(*base, "warm", "customers", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "NO:" in r.stdout and "yes" not in r.stdout
    r = cli(*base, "warm", "customers", "--json", env=env)
    (warmed,) = json.loads(r.stdout)["warmed"]
    assert warmed["published"] is False and warmed["not_published_because"]
    r = cli(*base, "status", env=env)
    assert r.returncode == 1 and "L2 UNREACHABLE" in r.stdout and "None" not in r.stdout


def test_the_progress_line_fits_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from athena_warm.cli import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setenv("COLUMNS", "40")
    p = Progress("a_mapping_with_a_long_name")
    p({"query_id": "0123456789abcdef-0123-4567-89ab-cdef01234567", "state": "RUNNING",
       "elapsed_s": 12.0, "scanned_bytes": 123_456_789})
    p.done()
    line = term.getvalue().split("\r")[-1].rstrip("\n")
    assert 20 <= len(line) <= 39, repr(line)


@pytest.mark.slow
def test_the_demo_explains_itself_and_cleans_up(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    r = cli("demo", "--rows", "20000", env=env)
    assert r.returncode == 0, r.stderr
    assert "columns: container (A or B)" in r.stdout and "seconds to minutes" in r.stdout
    assert "removed at the end" in r.stdout
    assert not list(tmp_path.glob("athena-warm-demo-*"))  # its temporary folder is gone


@pytest.mark.slow
def test_progress_in_place_and_ctrl_c_in_a_terminal(tmp_path: Path, moto_server: str,
                                                    config: Path) -> None:
    """In a real terminal (tmux, 80 columns): the query's progress is one line rewritten in
    place, never wider than the terminal; Ctrl-C stops the query and says so."""
    import os
    import shutil
    import time

    import boto3
    import requests

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_server,
           "ATHENA_WARM_ORIGIN": "athena",
           "ATHENA_WARM_S3_STAGING_DIR": "s3://athena-results/staging/"}
    boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server,
                 aws_access_key_id="testing", aws_secret_access_key="testing"
                 ).create_bucket(Bucket="athena-results")
    requests.post(moto_server + "/moto-api/state-manager/set-transition", timeout=5,
                  json={"model_name": "athena::execution",
                        "transition": {"progression": "manual", "times": 10_000}})
    script = tmp_path / "run.sh"
    script.write_text(
        "".join(f"export {k}={json.dumps(v)}\n" for k, v in env.items() if k.startswith(
            ("AWS_", "ATHENA_WARM_", "PATH", "HOME")))
        + f"{sys.executable} -m athena_warm.cli --config {config} get customers C0001\n"
        "echo EXIT=$?\nsleep 60\n")
    session = f"aw{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "20",
                    f"bash {script}"], check=True)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                              capture_output=True, text=True).stdout

    try:
        deadline = time.monotonic() + 60
        while "s," not in screen() and " 2s" not in screen() and "3s" not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.2)
        shown = [ln for ln in screen().splitlines() if ln.strip()]
        progress = [ln for ln in shown if "customers: query" in ln]
        assert len(progress) == 1, shown  # one line, rewritten in place
        assert len(progress[0].rstrip()) <= 80
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        while "EXIT=" not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.2)
        text = screen()
        assert "EXIT=130" in text and "interrupted" in text and "was stopped" in text, text
        assert "Traceback" not in text
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
