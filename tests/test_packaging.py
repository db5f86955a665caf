"""Packaging and cold start: the wheel ships athena_warm.adapters; import stays light."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ["boto3", "botocore", "pyathena", "redis", "duckdb", "sqlglot", "pyarrow", "pandas",
         "aws_lambda_powertools", "msgpack", "zstandard"]


def test_import_loads_nothing_heavy() -> None:
    code = (
        "import sys, time, json; t = time.perf_counter(); import athena_warm; "
        "ms = (time.perf_counter() - t) * 1000; "
        f"print(json.dumps({{'ms': ms, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["heavy"] == [], f"imported at import time: {report['heavy']}"


def test_adapters_import_as_a_subpackage() -> None:
    code = ("import athena_warm.adapters.athena, athena_warm.adapters.duckdb, sys; "
            "print('adapters' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # never a top-level 'adapters' package


def test_wheel_contents(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("athena_warm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ["athena_warm/__init__.py", "athena_warm/py.typed", "athena_warm/cli.py",
                     "athena_warm/adapters/__init__.py", "athena_warm/adapters/athena.py",
                     "athena_warm/adapters/duckdb.py", "athena_warm/adapters/redis.py",
                     "athena_warm/adapters/_redis_scripts.py",
                     "athena_warm/adapters/_elasticache_iam.py", "athena_warm/_refresher.py",
                     "athena_warm/_shared.py", "athena_warm/_rules.py", "athena_warm/_memory.py",
                     "athena_warm/middleware.py", "athena_warm/local.py",
                     "athena_warm/examples/customer_lookup.py",
                     "athena_warm/examples/counter.py"]:
        assert expected in names, expected
    assert not any(n.startswith(("adapters/", "tests/", "deploy/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "athena-warm = athena_warm.cli:main" in text


def test_the_runtime_needs_no_pyathena() -> None:
    """The Athena origin reads results itself (issue 11): pyathena, whose floor was wrong (the
    reader it imported first shipped in 3.23), is no longer a runtime dependency; the tests and
    benchmarks install it only to compare against."""
    from importlib.metadata import requires

    runtime = [r for r in requires("athena-warm") or [] if "extra ==" not in r]
    assert not [r for r in runtime if r.lower().startswith("pyathena")], runtime
    source = (Path(__file__).parent.parent / "adapters" / "athena.py").read_text()
    assert "pyathena" not in source.replace("PyAthena", "")


def test_the_license_file_matches_the_declared_license() -> None:
    root = Path(__file__).resolve().parent.parent
    text = (root / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert 'license = "Apache-2.0"' in (root / "pyproject.toml").read_text()
    assert (root / "CHANGELOG.md").read_text().startswith("# Changelog")


def test_the_top_level_is_what_a_function_author_needs() -> None:
    import importlib
    import warnings

    import athena_warm

    assert sorted(athena_warm.__all__) == sorted([
        "AthenaWarmError", "Cache", "Mapping", "MappingMeta", "MappingUnavailableError",
        "MappingView", "UnknownMappingError", "__version__", "clear_caches", "configure",
        "get_mapping", "invalidate", "prewarm", "warm_mappings"])
    for name, module in athena_warm._MOVED.items():
        where = importlib.import_module(f"athena_warm.{module}")
        assert getattr(where, name) is not None, (name, module)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert getattr(athena_warm, name) is getattr(where, name)
        if not module.startswith("_"):
            (w,) = caught
            assert w.category is DeprecationWarning and f"athena_warm.{module}" in str(w.message)
