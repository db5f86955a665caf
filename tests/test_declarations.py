"""Declaring mappings, loading declarations from a module or TOML, and bad input."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import athena_warm
from athena_warm import Cache, Mapping
from athena_warm.exceptions import (
    ConfigurationError,
    DeclarationError,
    DuplicateKeyError,
    EmptyResultError,
    MissingColumnError,
    NullKeyError,
    OriginError,
)


def base(**kw: Any) -> dict[str, Any]:
    opts: dict[str, Any] = dict(sql="SELECT customer_id, account_id FROM customers",
                                database="analytics", key="customer_id", value="account_id")
    opts.update(kw)
    return opts


def test_durations_and_defaults() -> None:
    m = Mapping("m", **base(ttl="24h", max_stale="7d"))
    assert m.ttl == 86400 and m.max_stale == 7 * 86400
    assert m.on_duplicate == "error" and m.on_null_key == "skip" and not m.allow_empty
    assert Mapping("n", **base(ttl=90)).ttl == 90
    assert athena_warm.declarations.REGISTRY.names() == ["m", "n"]


@pytest.mark.parametrize("kw, message", [
    (dict(ttl="soon"), "cannot read 'soon' as a duration"),
    (dict(ttl=0), "ttl must be positive"),
    (dict(max_stale="-1s"), "cannot read"),
    (dict(key=""), "not a column name"),
    (dict(key=[]), "at least one column"),
    (dict(key=["a", "A"]), "names a column twice"),
    (dict(sql="  "), "non-empty SQL"),
    (dict(on_duplicate="merge"), "use 'error', 'first' or 'last'"),
    (dict(on_null_key="keep"), "use 'skip' or 'error'"),
    (dict(sql="SELECT a, b FROM t WHERE a = ?"), "1 '?' placeholder(s) but 0 parameter(s)"),
    (dict(params=["x"]), "0 '?' placeholder(s) but 1 parameter(s)"),
    (dict(sql="SELECT a FROM t WHERE a = ?", params="abc"), "list or tuple"),
    (dict(sql="SELECT a FROM t WHERE a = ?", params=[{"a": 1}]), "has type dict"),
    (dict(sql="SELECT a FROM t WHERE a = ?", params=[float("nan")]), "finite"),
    (dict(sql="SELECT a FROM t WHERE a = ?", params=[datetime.now(timezone.utc)]),
     "timezone-aware"),
    (dict(database=""), "database must be a non-empty string"),
])
def test_bad_declarations_say_what_to_fix(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(DeclarationError) as ei:
        Mapping("bad", **base(**kw))
    assert message in str(ei.value)
    assert "bad" not in athena_warm.declarations.REGISTRY.names()


def test_bad_names() -> None:
    for name in ("", "has space", "1starts_with_digit", "x" * 200):
        with pytest.raises(DeclarationError, match="not valid"):
            Mapping(name, **base())


def test_question_marks_in_strings_and_comments_are_not_placeholders() -> None:
    m = Mapping("q", **base(sql="SELECT 'what?' AS a, \"b?\" -- why?\nFROM t /* ? */ WHERE c = ?",
                            params=[1]))
    assert m.params == (1,)


def test_same_declaration_twice_is_fine() -> None:
    a = Mapping("same", **base())
    b = Mapping("same", **base())
    assert a.fingerprint == b.fingerprint and athena_warm.declarations.REGISTRY.require("same") is b


def test_fingerprint_covers_the_query_identity() -> None:
    fps = {
        Mapping(f"f{i}", register=False, **base(**kw)).fingerprint
        for i, kw in enumerate([
            {}, dict(database="other"), dict(workgroup="wg"), dict(catalog="c"),
            dict(sql="SELECT customer_id, account_id FROM customers WHERE n > ?", params=[1]),
            dict(sql="SELECT customer_id, account_id FROM customers WHERE n > ?", params=[2]),
            dict(sql="SELECT customer_id, account_id FROM customers WHERE n > ?",
                 params=[Decimal(2)]),
            dict(value=None),
        ])
    }
    assert len(fps) == 8
    # TTL is policy, not identity: changing it keeps the same cached copy.
    assert Mapping("t1", register=False, **base(ttl="1h")).fingerprint == \
        Mapping("t2", register=False, **base(ttl="2h")).fingerprint


# -- result shape ----------------------------------------------------------------------------


def test_duplicate_keys_name_some_of_them(duck: Any, clock: Any) -> None:
    Mapping("d", sql="SELECT k, v FROM dup_keys", database="analytics", key="k", value="v")
    with pytest.raises(DuplicateKeyError) as ei:
        Cache(origin=duck, clock=clock).get("d")
    msg = str(ei.value)
    assert "2 key(s)" in msg and "'k1'" in msg and "'k3'" in msg and "on_duplicate" in msg
    assert ei.value.details["count"] == 2


def test_duplicate_policies(duck: Any, clock: Any) -> None:
    sql = "SELECT k, v FROM dup_keys ORDER BY v"
    Mapping("first", sql=sql, database="analytics", key="k", value="v", on_duplicate="first")
    Mapping("last", sql=sql, database="analytics", key="k", value="v", on_duplicate="last")
    cache = Cache(origin=duck, clock=clock)
    assert dict(cache.get("first")) == {"k1": 1, "k2": 2, "k3": 4}
    assert dict(cache.get("last")) == {"k1": 3, "k2": 2, "k3": 5}


def test_null_keys_are_skipped_and_counted(duck: Any, clock: Any) -> None:
    Mapping("n1", sql="SELECT k, v FROM null_keys", database="analytics", key="k", value="v")
    Mapping("n2", sql="SELECT k, k2, v FROM null_keys", database="analytics",
            key=["k", "k2"], value="v")
    cache = Cache(origin=duck, clock=clock)
    m = cache.get("n1")
    assert dict(m) == {"k1": 1, "k2": 3, "k3": 4} and m.meta.null_keys_skipped == 1
    m2 = cache.get("n2")
    assert dict(m2) == {("k1", "x"): 1, ("k3", "y"): 4} and m2.meta.null_keys_skipped == 2


def test_null_keys_can_be_an_error(duck: Any, clock: Any) -> None:
    Mapping("n", sql="SELECT k, v FROM null_keys", database="analytics", key="k", value="v",
            on_null_key="error")
    with pytest.raises(NullKeyError, match="1 row\\(s\\) have a NULL key"):
        Cache(origin=duck, clock=clock).get("n")


def test_missing_columns_list_what_the_result_has(duck: Any, clock: Any) -> None:
    Mapping("mk", sql="SELECT k, v FROM dup_keys", database="analytics", key="key", value="v")
    Mapping("mv", sql="SELECT k, v FROM dup_keys", database="analytics", key="k", value="val")
    cache = Cache(origin=duck, clock=clock)
    with pytest.raises(MissingColumnError, match=r"key column 'key' .* columns \['k', 'v'\]"):
        cache.get("mk")
    with pytest.raises(MissingColumnError, match="value column 'val'"):
        cache.get("mv")


def test_empty_result_is_an_error_unless_allowed(duck: Any, clock: Any) -> None:
    Mapping("e", sql="SELECT k, v FROM empty", database="analytics", key="k", value="v")
    Mapping("ok", sql="SELECT k, v FROM empty", database="analytics", key="k", value="v",
            allow_empty=True)
    cache = Cache(origin=duck, clock=clock)
    with pytest.raises(EmptyResultError, match="allow_empty=True"):
        cache.get("e")
    assert len(cache.get("ok")) == 0


def test_sql_error_names_the_mapping(duck: Any, clock: Any) -> None:
    Mapping("broken", sql="SELECT nope FROM customers", database="analytics", key="nope")
    with pytest.raises(OriginError, match=r"mapping 'broken'.*nope"):
        Cache(origin=duck, clock=clock).get("broken")


def test_a_failed_load_caches_nothing(duck: Any, clock: Any) -> None:
    Mapping("e", sql="SELECT k, v FROM empty", database="analytics", key="k", value="v")
    cache = Cache(origin=duck, clock=clock)
    with pytest.raises(EmptyResultError):
        cache.get("e")
    assert len(cache.l1) == 0


def test_nasty_parameter_comes_back_as_data(any_origin: Any, clock: Any) -> None:
    nasty = "'; DROP TABLE customers; --\" \\ ? %(x)s"
    Mapping("p", sql="SELECT customer_id, ? AS tag FROM customers WHERE customer_id = ?",
            params=[nasty, "C0001"], database="analytics", key="customer_id", value="tag")
    assert dict(Cache(origin=any_origin, clock=clock).get("p")) == {"C0001": nasty}


# -- loading declarations --------------------------------------------------------------------


TOML = """
[defaults]
database = "analytics"
ttl = "24h"

[mappings.by_region]
sql = "SELECT customer_id, account_id FROM customers WHERE region = ?"
params = ["r1"]
key = "customer_id"
value = "account_id"
max_stale = "7d"

[mappings.whole_rows]
sql = "SELECT * FROM customers"
key = "customer_id"
ttl = "1h"
"""


def test_toml_declarations(tmp_path: Path, duck: Any, clock: Any) -> None:
    path = tmp_path / "mappings.toml"
    path.write_text(TOML)
    declared = athena_warm.declarations.load_config(path)
    assert [m.name for m in declared] == ["by_region", "whole_rows"]
    by_region, rows = declared
    assert by_region.ttl == 86400 and by_region.max_stale == 7 * 86400 and rows.ttl == 3600
    cache = Cache(origin=duck, clock=clock)
    assert len(cache.get("by_region")) == 500
    assert cache.get("whole_rows")["C0003"]["n"] == 3
    assert athena_warm.declarations.load_config(path) == declared  # loading twice is harmless


@pytest.mark.parametrize("text, message", [
    ("[mappings.x]\nsql = 'SELECT 1'\nkey = 'a'\nttl = 'often'\n", "cannot read 'often'"),
    ("[mappings.x]\nsql = 'SELECT 1'\nkey = 'a'\ncolour = 'red'\n", "unknown option(s) ['colour']"),
    ("[mappings.x]\nkey = 'a'\n", "sql"),
    ("[mapping.x]\nsql = 'SELECT 1'\n", "unknown table(s) ['mapping']"),
    ("[defaults]\nttl = '1h'\n", "declares no mappings"),
    ("[mappings.x\n", "not valid TOML"),
])
def test_bad_toml_says_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as ei:
        athena_warm.declarations.load_config(path)
    assert message in str(ei.value) and "bad.toml" in str(ei.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        athena_warm.declarations.load_config(tmp_path / "nope.toml")


APP = '''
from athena_warm import Mapping
CUSTOMERS = Mapping("app_customers", sql="SELECT customer_id, account_id FROM customers",
                    database="analytics", key="customer_id", value="account_id", ttl="24h")
'''


def test_get_mapping_finds_declarations_through_the_environment(
    tmp_path: Path, duck: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tmp_path / "my_lambda_app.py"
    app.write_text(APP)
    monkeypatch.setenv("ATHENA_WARM_APP", str(app))
    athena_warm.configure(origin=duck)
    m = athena_warm.get_mapping("app_customers")
    assert len(m) == 1000
    with pytest.raises(athena_warm.UnknownMappingError, match="'app_customers'"):
        athena_warm.get_mapping("typo")


def test_app_by_module_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "decl_mod_xyz.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    athena_warm.declarations.load_declarations(app="decl_mod_xyz")
    assert "app_customers" in athena_warm.declarations.REGISTRY.names()
    with pytest.raises(ConfigurationError, match="cannot import"):
        athena_warm.declarations.load_declarations(app="no_such_module_abc")


def test_config_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.toml"
    path.write_text(TOML)
    monkeypatch.setenv("ATHENA_WARM_CONFIG", str(path))
    athena_warm.declarations.load_declarations()
    assert athena_warm.declarations.REGISTRY.names() == ["by_region", "whole_rows"]


def test_origin_spec_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for spec, message in [("postgres", "unknown origin"), ("duckdb:", "needs a path"),
                          ("duckdb:/no/such/place", "neither a folder")]:
        with pytest.raises(ConfigurationError, match=message):
            origin = athena_warm.origin.open_origin(spec)
            origin.query("SELECT 1", (), database=None, workgroup=None, catalog=None)
    monkeypatch.setenv("ATHENA_WARM_ORIGIN", "mysql")
    with pytest.raises(ConfigurationError, match="'mysql'"):
        athena_warm.origin.open_origin()


@pytest.mark.parametrize(("opts", "says"), [
    ({"ttl": float("nan")}, "ttl: nan is not a duration"),
    ({"max_stale": float("nan")}, "max_stale: nan is not a duration"),
    ({"ttl": float("inf")}, "ttl: inf is not a duration"),
    ({"ttl": "20000000000w"}, "longer than ten years"),
    ({"max_stale": 10**12}, "longer than ten years"),
    ({"allow_empty": "no"}, "allow_empty='no'; give True or False"),
    ({"allow_empty": 1}, "allow_empty=1; give True or False"),
    ({"key": 5}, "key must be a column name or a list of column names, got int 5"),
    ({"value": 5}, "value must be a column name or a list of column names, got int 5"),
    ({"key": b"k"}, "key must be a column name"),
])
def test_nonsense_is_refused_at_declaration(opts: dict[str, Any], says: str) -> None:
    kw: dict[str, Any] = {"sql": "SELECT 1", "key": "k", **opts}
    with pytest.raises(DeclarationError, match=re.escape(says)):
        Mapping("x", register=False, **kw)
