"""Nested values (arrays, maps, rows) come out of every origin as the same typed Python values.

Issue 10, defect 7: Athena's result metadata names a nested column's kind only (``map``) and its
result file holds the value as text (``{a=1}``), so the Athena origin returned strings inside
(``{'a': '1'}``) while DuckDB returned integers. A nested column's type is now declared
(``types=``), the Athena text is parsed by it, and the local origin checks the declaration
against the type DuckDB knows, so development finds a missing or wrong one.
"""

from __future__ import annotations

import string
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import athena_warm
from athena_warm import Mapping
from athena_warm._types import TypeSignatureError, from_text, parse_type
from athena_warm.exceptions import ColumnTypeError, DeclarationError
from athena_warm.l2 import MemoryTier
from tests.athena_double import _text
from tests.faults import Clocks, container
from tests.helpers import same

NESTED_TYPES = {
    "tags": "array(varchar)",
    "attrs": "map(varchar, integer)",
    "loc": "row(x integer, y varchar)",
    "events": "array(row(n bigint, at timestamp, amount decimal(10,2)))",
    "scores": "array(double)",
    "flags": "map(date, array(boolean))",
}
SQL = "SELECT k, tags, attrs, loc, events, scores, flags FROM nested"

EXPECTED = {
    "k1": {
        "k": "k1", "tags": ["a", "b c"], "attrs": {"x": 1, "y": -2},
        "loc": {"x": 7, "y": "hi, there"},
        "events": [{"n": 1, "at": datetime(2024, 2, 29, 13, 14, 15, 123000),
                    "amount": Decimal("12.34")}],
        "scores": [1.5, None, 1e10], "flags": {date(2024, 1, 1): [True, False]},
    },
    "k2": {"k": "k2", "tags": [], "attrs": {}, "loc": None, "events": None, "scores": None,
           "flags": None},
    "k3": {"k": "k3", "tags": None, "attrs": {"z": None}, "loc": {"x": None, "y": None},
           "events": [], "scores": [-0.0], "flags": {date(1, 1, 1): None}},
}


def _load(origin: Any, make_cache: Any, name: str = "nested", **kw: Any) -> Any:
    kw.setdefault("types", NESTED_TYPES)
    decl = Mapping(name, sql=kw.pop("sql", SQL), key="k", database="analytics", **kw)
    return make_cache(origin).get(decl.name)


# --- both origins, one answer --------------------------------------------------------------------


def test_both_origins_return_the_same_typed_nested_values(any_origin: Any,
                                                          make_cache: Any) -> None:
    view = _load(any_origin, make_cache)
    assert set(view) == set(EXPECTED)
    for key, row in EXPECTED.items():
        assert same(dict(view[key]), row), (any_origin.name, key, view[key])


def test_the_athena_origin_returns_the_text_of_a_nested_column_for_the_core_to_type(
        athena: Any) -> None:
    result = athena.query("SELECT k, attrs, loc FROM nested WHERE k = 'k1'", (),
                          database="analytics", workgroup=None, catalog=None)
    assert [c.type for c in result.columns] == ["varchar", "map", "row"]  # all Athena says
    assert result.rows == [("k1", "{x=1, y=-2}", "{x=7, y=hi, there}")]


def test_a_value_column_typed_through_athena(athena: Any, make_cache: Any) -> None:
    view = _load(athena, make_cache, name="attrs_only", value="attrs",
                 sql="SELECT k, attrs FROM nested", types={"attrs": "map(varchar, integer)"})
    assert view["k1"] == {"x": 1, "y": -2} and type(view["k1"]["x"]) is int


def test_hive_syntax_declarations_work_too(any_origin: Any, make_cache: Any) -> None:
    view = _load(any_origin, make_cache, name="hive", value="loc",
                 sql="SELECT k, loc FROM nested", types={"loc": "struct<x:int,y:string>"})
    assert view["k1"] == {"x": 7, "y": "hi, there"}


def test_json_columns_are_parsed_by_both_origins(any_origin: Any, make_cache: Any) -> None:
    view = _load(any_origin, make_cache, name="as_json", value="j", types=None,
                 sql="SELECT k, CAST(attrs AS JSON) AS j FROM nested")
    assert view["k1"] == {"x": 1, "y": -2} and view["k2"] == {}


def test_nested_values_are_served_from_l2_unchanged(lake: Path) -> None:
    from athena_warm.adapters.duckdb import DuckDBOrigin

    clocks = Clocks()
    tier = MemoryTier(clock=clocks.mono)
    Mapping("nested_l2", sql=SQL, key="k", database="analytics", types=NESTED_TYPES)
    writer = container(clocks, tier, DuckDBOrigin(lake))
    first = writer.get("nested_l2")

    class NoOrigin:
        name = "none"

        def query(self, *a: Any, **k: Any) -> Any:
            raise AssertionError("the reader must be served by L2")

    reader = container(clocks, tier, NoOrigin())
    second = reader.get("nested_l2")
    for key in EXPECTED:
        assert same(dict(second[key]), dict(first[key])) and same(dict(second[key]),
                                                                    EXPECTED[key])


# --- clear errors --------------------------------------------------------------------------------


def test_an_undeclared_nested_column_is_an_error_on_both_origins(any_origin: Any,
                                                                 make_cache: Any) -> None:
    with pytest.raises(ColumnTypeError, match="'attrs' is a map") as ei:
        _load(any_origin, make_cache, name="undeclared", value="attrs", types=None,
              sql="SELECT k, attrs FROM nested")
    assert ei.value.mapping == "undeclared" and "types=" in str(ei.value)
    if any_origin.name == "duckdb":  # development knows the type and says what to write
        assert "types={'attrs': 'map(varchar, integer)'}" in str(ei.value)


def test_a_nested_column_the_mapping_does_not_use_needs_no_declaration(
        any_origin: Any, make_cache: Any) -> None:
    view = _load(any_origin, make_cache, name="unused", value="n", types=None,
                 sql="SELECT k, attrs, 1 AS n FROM nested")
    assert view["k1"] == 1


def test_a_declaration_that_does_not_match_the_data_is_an_error(any_origin: Any,
                                                                make_cache: Any) -> None:
    with pytest.raises(ColumnTypeError, match="attrs") as ei:
        _load(any_origin, make_cache, name="wrong", value="attrs",
              sql="SELECT k, attrs FROM nested", types={"attrs": "map(varchar, date)"})
    if any_origin.name == "duckdb":
        assert "returns map(varchar, integer)" in str(ei.value)
    else:
        assert "'1' is not of type date" in str(ei.value)


def test_types_naming_a_missing_column_is_an_error(duck: Any, make_cache: Any) -> None:
    with pytest.raises(ColumnTypeError, match="'nope'"):
        _load(duck, make_cache, name="missing", types={**NESTED_TYPES, "nope": "integer"})


@pytest.mark.parametrize("types, match", [
    ({"a": "array("}, "ends early"),
    ({"a": "mapp(varchar, integer)"}, "unknown type 'mapp'"),
    ({"a": "decimal(39,2)"}, "precision"),
    ({"a": "row(x int, x int)"}, "appears twice"),
    ({"a": 5}, "non-empty string"),
    ("array(int)", "must be a dict"),
])
def test_bad_type_declarations_name_the_column_and_the_fix(types: Any, match: str) -> None:
    with pytest.raises(DeclarationError, match=match):
        Mapping("bad_types", sql="SELECT 1 AS a", key="a", types=types, register=False)


def test_types_are_part_of_the_fingerprint_only_when_given() -> None:
    plain = Mapping("fp", sql="SELECT 1 AS a", key="a", register=False)
    empty = Mapping("fp", sql="SELECT 1 AS a", key="a", types={}, register=False)
    typed = Mapping("fp", sql="SELECT 1 AS a", key="a", types={"a": "integer"}, register=False)
    assert plain.fingerprint == empty.fingerprint != typed.fingerprint


def test_types_in_a_toml_config(tmp_path: Path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text('[mappings.toml_nested]\nsql = "SELECT k, attrs FROM nested"\nkey = "k"\n'
                   'value = "attrs"\n[mappings.toml_nested.types]\n'
                   'attrs = "map(varchar, integer)"\n')
    (decl,) = athena_warm.declarations.load_config(cfg)
    assert decl.types == {"attrs": "map(varchar, integer)"}


# --- the text form, property-tested against the double's renderer --------------------------------

_SAFE_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " _-.:/é€😀", min_size=1,
                     max_size=12).filter(lambda s: s.strip() == s and s != "null")

_LEAVES: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("bigint", st.integers(-2**63, 2**63 - 1)),
    ("integer", st.integers(-2**31, 2**31 - 1)),
    ("double", st.floats(allow_nan=True, allow_infinity=True)),
    ("boolean", st.booleans()),
    ("varchar", _SAFE_TEXT),
    ("date", st.dates()),
    ("timestamp", st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
     .map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))),
    ("decimal(38,9)", st.decimals(min_value=Decimal("-1e28"), max_value=Decimal("1e28"),
                                  places=9, allow_nan=False, allow_infinity=False)),
]


_LEAF = dict(_LEAVES)
_KEYS = ["bigint", "varchar", "date"]

_SIGNATURES = st.recursive(
    st.sampled_from(list(_LEAF)),
    lambda inner: (
        inner.map(lambda t: f"array({t})")
        | st.tuples(st.sampled_from(_KEYS), inner).map(lambda kv: f"map({kv[0]}, {kv[1]})")
        | st.lists(inner, min_size=1, max_size=4).map(
            lambda ts: "row(" + ", ".join(f"f{i} {t}" for i, t in enumerate(ts)) + ")")
    ),
    max_leaves=8,
)


def _values(t: Any) -> st.SearchStrategy[Any]:
    if t.name == "array":
        return st.lists(st.none() | _values(t.args[0]), max_size=4)
    if t.name == "map":
        return st.dictionaries(_values(t.args[0]), st.none() | _values(t.args[1]), max_size=4)
    if t.name == "row":
        return st.tuples(*(st.none() | _values(ft) for ft in t.args)).map(
            lambda vs: dict(zip(t.fields, vs, strict=True)))
    return _LEAF[str(t)]


def typed_values() -> st.SearchStrategy[tuple[str, Any]]:
    nested = _SIGNATURES.filter(lambda sig: "(" in sig and not sig.startswith("decimal"))
    return nested.flatmap(lambda sig: st.tuples(st.just(sig), _values(parse_type(sig))))


@settings(max_examples=300, deadline=None)
@given(typed_values())
def test_athena_text_round_trips_for_every_type(case: tuple[str, Any]) -> None:
    sig, value = case
    t = parse_type(sig)
    assert str(parse_type(str(t))) == str(t)
    assert same(from_text(_text(value), t), value), (sig, _text(value))


def test_text_form_details() -> None:
    t = parse_type("array(row(x integer, y varchar))")
    assert from_text("[{x=1, y=a, b}, null, {x=null, y=null}]", t) == [
        {"x": 1, "y": "a, b"}, None, {"x": None, "y": None}]
    assert from_text("{a=2024-01-01 00:00:00.000 UTC}",
                     parse_type("map(varchar, timestamp with time zone)")) == {
        "a": datetime(2024, 1, 1, tzinfo=timezone.utc)}
    assert from_text("[61 62]", parse_type("array(varbinary)")) == [b"ab"]
    with pytest.raises(ValueError, match="not of type integer"):
        from_text("[1, x]", parse_type("array(integer)"))
    with pytest.raises(ValueError, match="after the value"):
        from_text("[1]]", parse_type("array(integer)"))
    with pytest.raises(TypeSignatureError):
        parse_type("array<int")
