"""Damage in Redis that used to be silent or costly (issue 10): a pointer that claims a million
chunks, missing chunks, a pointer to a version that is gone: each is a logged miss
(`l2_corrupt`), and `status` says CORRUPT with the reason. And an L2 that cannot be configured or
whose codec does not import fails open with one error log, like an unreachable one."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from athena_warm.adapters.redis import RedisL2

from tests.faults import Clocks, Table, TableOrigin, container, declare_table

ROOT = Path(__file__).resolve().parent.parent
NS = "athena-warm:{customers}"


@pytest.fixture
def setup(redis_url: str, redis_server: Any) -> Any:
    declare_table()
    clocks = Clocks()
    a = container(clocks, RedisL2(redis_url), TableOrigin(Table()))
    a.get("customers")
    fp = a.declaration("customers").fingerprint
    return clocks, redis_server.client(), fp, redis_url


def _reader(clocks: Clocks, url: str) -> Any:
    return container(clocks, RedisL2(url), TableOrigin(Table()))


@pytest.mark.parametrize("damage", ["million chunks", "more chunks than the size allows",
                                    "a missing chunk", "a version that is gone",
                                    "a chunk of the wrong type"])
def test_damage_is_a_logged_miss_and_status_says_why(setup: Any, damage: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    clocks, admin, fp, url = setup
    ptr_key = f"{NS}:{fp}:ptr"
    version, _chunks, rest = admin.get(ptr_key).decode().split(":", 2)
    if damage == "million chunks":
        admin.set(ptr_key, f"{version}:1000000:{rest}")
    elif damage == "more chunks than the size allows":
        admin.set(ptr_key, f"{version}:4000:{rest}")
    elif damage == "a missing chunk":
        admin.set(ptr_key, f"{version}:2:{rest}")  # chunk 1 was never written
    elif damage == "a version that is gone":
        admin.delete(f"{NS}:{fp}:{version}:0")
    else:
        admin.delete(f"{NS}:{fp}:{version}:0")
        admin.hset(f"{NS}:{fp}:{version}:0", mapping={"x": "y"})
    b = _reader(clocks, url)
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="athena_warm"):
        m = b.get("customers")
    assert m.meta.tier == "origin" and len(m) == 3
    assert time.perf_counter() - start < 2
    assert "the L2 copy of customers is unusable" in caplog.text
    status = _reader(clocks, url).l2_status("customers")
    assert status["present"] and not status["corrupt"]  # b replaced it


def test_status_reports_a_corrupt_copy_with_its_reason(setup: Any) -> None:
    clocks, admin, fp, url = setup
    version, _, rest = admin.get(f"{NS}:{fp}:ptr").decode().split(":", 2)
    admin.set(f"{NS}:{fp}:ptr", f"{version}:3:{rest}")  # chunks 1 and 2 missing
    status = _reader(clocks, url).l2_status("customers")
    assert status["present"] and "chunks are missing" in status["corrupt"]
    admin.set(f"{NS}:{fp}:ptr", "garbage")
    status = _reader(clocks, url).l2_status("customers")
    assert status["present"] and "malformed pointer" in status["corrupt"]


def test_a_bad_port_fails_open_with_one_error_log(caplog: pytest.LogCaptureFixture) -> None:
    declare_table()
    with caplog.at_level(logging.ERROR, logger="athena_warm"):
        cache = container(Clocks(), None, TableOrigin(Table()))
        from athena_warm import Cache

        cache = Cache(origin=TableOrigin(Table()), l2="redis://127.0.0.1:notaport")
        assert cache.l2 is None and len(cache.get("customers")) == 3
        assert len(cache.get("customers")) == 3
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "bad port" in errors[0].getMessage()


def test_a_codec_that_does_not_import_fails_open(redis_url: str, tmp_path: Path) -> None:
    """A layer built for another Python: `import zstandard` fails. L2 is off, reads work."""
    script = (
        "import sys, logging\n"
        "sys.modules['zstandard'] = None  # import zstandard now raises ImportError\n"
        "logging.basicConfig(level=logging.ERROR, stream=sys.stdout)\n"
        "from tests.faults import Table, TableOrigin, declare_table\n"
        "from athena_warm import Cache\n"
        "declare_table()\n"
        f"cache = Cache(origin=TableOrigin(Table()), l2={redis_url!r})\n"
        "m = cache.get('customers'); m = cache.get('customers')\n"
        "print('L2', cache.l2, 'rows', len(m))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "L2 None rows 3" in out.stdout
    assert out.stdout.count("L2 is off for this process: ModuleNotFoundError") == 1
