"""L1 and get_mapping(): TTL on a fake clock, fingerprints, LRU memory bound, single-flight."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

import athena_warm
from athena_warm import Cache, Mapping
from athena_warm.exceptions import ReadOnlyMappingError
from athena_warm.origin import Column, QueryResult
from tests.conftest import FakeClock
from tests.helpers import CountingOrigin, declare


@pytest.fixture
def origin(duck: Any) -> CountingOrigin:
    return CountingOrigin(duck)




def test_origin_then_l1_then_ttl_reload(origin: CountingOrigin, clock: FakeClock) -> None:
    declare()
    cache = Cache(origin=origin, clock=clock, wall_clock=lambda: 1.7e9)
    m = cache.get("customers")
    assert (m.meta.tier, m.meta.source, origin.calls) == ("origin", "origin", 1)
    assert m["C0008"] == "A1" and len(m) == 1000 and m.meta.rows == 1000
    assert m.meta.loaded_at == 1.7e9 and m.meta.generation == 0 and len(m.meta.fingerprint) == 16
    clock.advance(3599.9)
    m2 = cache.get("customers")
    assert m2 is m and m2.meta.tier == "l1" and origin.calls == 1
    clock.advance(0.1)  # exactly the TTL: stale
    m3 = cache.get("customers")
    assert m3 is not m and m3.meta.tier == "origin" and origin.calls == 2


def test_force_fetch_skips_l1(origin: CountingOrigin, clock: FakeClock) -> None:
    declare()
    cache = Cache(origin=origin, clock=clock)
    cache.get("customers")
    m = cache.get("customers", force_fetch=True)
    assert m.meta.tier == "origin" and origin.calls == 2


def test_clear_and_invalidate(origin: CountingOrigin, clock: FakeClock) -> None:
    declare()
    cache = Cache(origin=origin, clock=clock)
    cache.get("customers")
    cache.clear()
    cache.get("customers")
    assert cache.invalidate("customers") is None  # no L2: this process only
    assert len(cache.l1) == 0
    cache.get("customers")
    assert origin.calls == 3


def test_module_level_api(duck: Any) -> None:
    declare()
    athena_warm.configure(origin=duck)
    m = athena_warm.get_mapping("customers")
    assert athena_warm.get_mapping("customers") is m and m.meta.tier == "l1"
    athena_warm.clear_caches()
    assert athena_warm.get_mapping("customers").meta.tier == "origin"
    assert athena_warm.invalidate("customers") is None


def test_the_view_is_read_only_and_dict_fast(origin: CountingOrigin, clock: FakeClock) -> None:
    declare()
    m = Cache(origin=origin, clock=clock).get("customers")
    assert isinstance(m, dict) and "C0001" in m and m.get("nope") is None
    for mutate in (lambda: m.__setitem__("k", 1), lambda: m.pop("C0001"), m.clear,
                   lambda: m.update({}), lambda: m.setdefault("k", 1), m.popitem,
                   lambda: m.__delitem__("C0001")):
        with pytest.raises(ReadOnlyMappingError, match="read-only"):
            mutate()
    with pytest.raises(ReadOnlyMappingError):
        m |= {"k": 1}  # type: ignore[misc]
    copy = dict(m)
    copy["k"] = "v"
    assert "k" not in m and len(m) == 1000
    assert "rows=1000" in repr(m) and "C0001" not in repr(m)


def test_two_declarations_never_collide(origin: CountingOrigin, clock: FakeClock) -> None:
    cache = Cache(origin=origin, clock=clock)
    declare("r0", sql="SELECT customer_id, account_id FROM customers WHERE region = ?",
            params=["r0"])
    declare("r1", sql="SELECT customer_id, account_id FROM customers WHERE region = ?",
            params=["r1"])
    a, b = cache.get("r0"), cache.get("r1")
    assert a.meta.fingerprint != b.meta.fingerprint
    assert "C0000" in a and "C0000" not in b and "C0001" in b
    # Re-declaring a name with another query is an error, not a silent swap ...
    with pytest.raises(athena_warm.exceptions.DeclarationError, match="already declared"):
        declare("r0", sql="SELECT customer_id, account_id FROM customers")
    # ... but after unregister, the new declaration gets its own L1 entry.
    athena_warm.declarations.unregister("r0")
    declare("r0", sql="SELECT customer_id, account_id FROM customers")
    assert len(cache.get("r0")) == 1000 and len(cache.l1) == 3


def test_memory_bound_evicts_least_recently_used(origin: CountingOrigin, clock: FakeClock) -> None:
    for i in range(3):
        declare(f"m{i}", sql=f"SELECT customer_id, account_id FROM customers WHERE n >= {i}")
    probe = Cache(origin=origin, clock=clock)
    one = probe.get("m0").meta.nbytes
    cache = Cache(origin=origin, clock=clock, l1_max_bytes=int(one * 2.5))
    cache.get("m0")
    cache.get("m1")
    cache.get("m0")  # m0 is now the most recently used
    cache.get("m2")  # over budget: m1 goes
    held = {k[0] for k, _ in cache.l1.items()}
    assert held == {"m0", "m2"} and cache.l1.nbytes <= cache.l1.max_bytes
    calls = origin.calls
    cache.get("m1")
    assert origin.calls == calls + 1


def test_one_mapping_over_the_bound_is_kept_with_a_warning(
    origin: CountingOrigin, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    declare()
    cache = Cache(origin=origin, clock=clock, l1_max_bytes="1KB")
    assert len(cache.get("customers")) == 1000
    assert "exceeds the L1 bound" in caplog.text
    assert cache.get("customers").meta.tier == "l1"


def test_l1_bound_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATHENA_WARM_L1_MAX_BYTES", "64MiB")
    assert Cache().l1.max_bytes == 64 * 2**20
    monkeypatch.setenv("ATHENA_WARM_L1_MAX_BYTES", "lots")
    with pytest.raises(athena_warm.exceptions.ConfigurationError, match="ATHENA_WARM_L1_MAX_BYTES"):
        Cache()
    monkeypatch.delenv("ATHENA_WARM_L1_MAX_BYTES")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
    assert Cache().l1.max_bytes == 512 * 2**20


def test_threads_that_miss_together_cause_one_load(duck: Any) -> None:
    declare()
    origin = CountingOrigin(duck, delay=0.3)
    cache = Cache(origin=origin)
    barrier = threading.Barrier(16)
    results: list[Any] = []

    def reader() -> None:
        barrier.wait()
        results.append(cache.get("customers"))

    threads = [threading.Thread(target=reader) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert origin.calls == 1
    assert len(results) == 16 and all(r is results[0] for r in results)


def test_waiters_share_the_leaders_error_and_the_next_read_retries(duck: Any) -> None:
    declare()
    origin = CountingOrigin(duck, delay=0.2)
    origin.fail = athena_warm.exceptions.OriginError("boom", origin="counting")
    cache = Cache(origin=origin, retry_interval=0)  # no pause before the retry
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            cache.get("customers")
        except athena_warm.exceptions.OriginError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert origin.calls == 1 and len(errors) == 8
    assert "mapping 'customers'" in str(errors[0])
    origin.fail, origin.delay = None, 0
    assert len(cache.get("customers")) == 1000 and origin.calls == 2


def test_invocation_scope_checks_freshness_once(origin: CountingOrigin, clock: FakeClock) -> None:
    declare()
    cache = Cache(origin=origin, clock=clock)
    with cache.invocation():
        m = cache.get("customers")
        clock.advance(7200)  # expires mid-invocation: the invocation keeps its copy
        assert cache.get("customers") is m and origin.calls == 1
    with cache.invocation():
        assert cache.get("customers").meta.tier == "origin" and origin.calls == 2
    assert cache.pinned == {}


def test_unknown_mapping_lists_known_names(origin: CountingOrigin, clock: FakeClock) -> None:
    declare("alpha")
    declare("beta")
    with pytest.raises(athena_warm.UnknownMappingError) as ei:
        Cache(origin=origin, clock=clock).get("gamma")
    msg = str(ei.value)
    assert "'gamma'" in msg and "'alpha', 'beta'" in msg and "ATHENA_WARM_APP" in msg
    assert isinstance(ei.value, KeyError)


def test_status_reports_age_and_expiry(origin: CountingOrigin, clock: FakeClock) -> None:
    declare()
    cache = Cache(origin=origin, clock=clock)
    cache.get("customers")
    clock.advance(600)
    (s,) = cache.status()
    assert s["name"] == "customers" and s["age_s"] == 600 and s["expires_in_s"] == 3000
    assert s["fresh"] is True and s["rows"] == 1000


class StaticOrigin:
    name = "static"

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        self.result = QueryResult(tuple(Column(c, "varchar") for c in columns), rows)

    def query(self, sql: str, params: Sequence[Any], **kw: Any) -> QueryResult:
        return self.result


def test_tuple_keys_tuple_values_and_whole_rows(clock: FakeClock) -> None:
    rows = [("a", 1, "x", True), ("a", 2, "y", False), ("b", 1, "z", True)]
    origin = StaticOrigin(["k1", "k2", "v", "flag"], rows)
    Mapping("tk", sql="SELECT 1", key=("k1", "k2"), value="v")
    Mapping("tv", sql="SELECT 1", key=("k1", "k2"), value=["v", "flag"])
    Mapping("row", sql="SELECT 1", key=("K1", "k2"))  # column names match case-insensitively
    cache = Cache(origin=origin, clock=clock)
    assert cache.get("tk")[("a", 2)] == "y"
    assert cache.get("tv")[("b", 1)] == ("z", True)
    assert cache.get("row")[("a", 1)] == {"k1": "a", "k2": 1, "v": "x", "flag": True}
