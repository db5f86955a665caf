"""``athena-warm``: the operator's command line. Exit codes: 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from .exceptions import AthenaWarmError, ConfigurationError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="athena-warm",
        description="Serve Athena query results to AWS Lambda functions from warm memory.",
    )
    p.add_argument("--app", help="module (or .py file) that declares mappings [ATHENA_WARM_APP]")
    p.add_argument("--config", help="TOML file that declares mappings [ATHENA_WARM_CONFIG]")
    p.add_argument("--origin", help="'athena' or 'duckdb:PATH' [ATHENA_WARM_ORIGIN]")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="run the local demo: two containers, L1 hits, a TTL reload")
    d.add_argument("--rows", type=int, default=200_000, help="rows in the sample table")
    d.add_argument("--dir", help="folder for the sample data (default: a new temp folder)")
    d.add_argument("--l2", nargs="?", const=True, default=False, metavar="URL",
                   help="share copies through L2: a throwaway valkey/redis server, or URL")

    ls = sub.add_parser("list", help="declared mappings")
    ls.add_argument("--json", action="store_true", help="machine-readable output")

    g = sub.add_parser("get", help="look up one key (loads the mapping if needed)")
    g.add_argument("name")
    g.add_argument("key", nargs="+", help="the key; several values for a multi-column key")
    g.add_argument("--json", action="store_true", help="machine-readable output")

    w = sub.add_parser("warm", help="query the origin now and publish to L2 (if configured)")
    w.add_argument("name", nargs="*")
    w.add_argument("--all", action="store_true", help="every declared mapping")
    w.add_argument("--json", action="store_true", help="machine-readable output")

    st = sub.add_parser("status", help="what L2 holds per mapping: copy, generation, lease")
    st.add_argument("name", nargs="*")
    st.add_argument("--json", action="store_true", help="machine-readable output")

    tb = sub.add_parser("tables", help="which tables each mapping reads, or which mappings read "
                        "TABLE (the ones to invalidate after it changes)")
    tb.add_argument("table", nargs="?", help="database.table (a bare name matches any database)")
    tb.add_argument("--json", action="store_true", help="machine-readable output")

    inv = sub.add_parser("invalidate", help="make every warm container reload (needs L2)")
    inv.add_argument("name", nargs="*")
    inv.add_argument("--all", action="store_true", help="every declared mapping")
    inv.add_argument("--refresh", action="store_true",
                     help="query the origin and publish the new copy first: a zero-gap switch")
    inv.add_argument("--hard", action="store_true",
                     help="never serve older copies, not even as stale, while the new one loads")
    inv.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _names(args: argparse.Namespace, reg: Any, *, default_all: bool = False) -> list[str]:
    if getattr(args, "all", False) and args.name:
        raise ConfigurationError("name the mappings, or pass --all (not both)")
    if getattr(args, "all", False) or (default_all and not args.name):
        return list(reg.names())
    if not args.name:
        raise ConfigurationError("name at least one mapping, or pass --all")
    for n in args.name:
        reg.require(n)
    return list(args.name)


class Progress:
    """A long Athena query's state, elapsed time and data scanned, on stderr: updated in place
    on a terminal, one line per change otherwise."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tty = sys.stderr.isatty()
        self.last: tuple[Any, ...] | None = None
        self.query_id: str | None = None

    def __call__(self, p: dict[str, Any]) -> None:
        self.query_id = p["query_id"]
        scanned = p.get("scanned_bytes")
        text = (f"{self.name}: query {p['query_id']} {p['state']} {p['elapsed_s']:.0f}s"
                + (f", {scanned / 1e6:,.1f} MB scanned" if scanned else ""))
        if self.tty:
            print("\r" + text.ljust(100), end="", file=sys.stderr, flush=True)
        elif self.last != (p["state"], scanned):
            print(text, file=sys.stderr, flush=True)
        self.last = (p["state"], scanned)

    def done(self) -> None:
        if self.tty and self.last is not None:
            print(file=sys.stderr)


def _with_progress(cache: Any, name: str) -> Progress:
    progress = Progress(name)
    origin = cache.origin
    if hasattr(origin, "progress"):
        origin.progress = progress
    _CURRENT["progress"] = progress
    return progress


_CURRENT: dict[str, Progress] = {}


def _declared(args: argparse.Namespace) -> Any:
    from ._declare import REGISTRY, load_declarations

    load_declarations(app=args.app, config=args.config)
    if not len(REGISTRY):
        raise ConfigurationError(
            "no mappings declared: pass --app MODULE or --config FILE.toml (or set "
            "ATHENA_WARM_APP / ATHENA_WARM_CONFIG)"
        )
    return REGISTRY


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


def _human_seconds(s: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n and s % n == 0:
            return f"{int(s // n)}{unit}"
    return f"{s:g}s"


def _cmd_list(args: argparse.Namespace) -> int:
    reg = _declared(args)
    items = [
        {"name": m.name, "tables": _table_names(m), "database": m.database,
         "key": list(m.key_columns),
         "value": list(m.value_columns) or None, "ttl_s": m.ttl, "max_stale_s": m.max_stale,
         "fingerprint": m.fingerprint, "sql": m.sql}
        for m in reg
    ]
    if args.json:
        print(json.dumps({"mappings": items}, indent=2))
        return 0
    rows = [("NAME", "TABLES", "DATABASE", "KEY", "VALUE", "TTL", "MAX_STALE")]
    for i in items:
        rows.append((i["name"], ",".join(i["tables"]) or "-", i["database"] or "-",
                     ",".join(i["key"]),
                     ",".join(i["value"]) if i["value"] else "(row)",
                     _human_seconds(i["ttl_s"]), _human_seconds(i["max_stale_s"])))
    print(_table(rows))
    return 0


def _table_names(m: Any) -> list[str]:
    """The tables a mapping reads, ``database.table`` (its own database for bare names)."""
    return sorted(f"{d or m.database or 'default'}.{t}" for d, t in m.read_tables() or ())


def _cmd_tables(args: argparse.Namespace) -> int:
    import os

    reg = _declared(args)
    if args.table:
        default = os.environ.get("ATHENA_WARM_DATABASE")
        try:
            readers = [m for m in reg if m.reads(args.table, default_database=default)]
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if args.json:
            print(json.dumps({"table": args.table, "mappings": [m.name for m in readers]}))
        elif readers:
            print("\n".join(m.name for m in readers))
        else:
            print(f"athena-warm: no declared mapping reads {args.table}", file=sys.stderr)
        return 0
    items = [{"name": m.name, "tables": _table_names(m),
              "validate": m.validate if m.read_tables() else None,
              "validate_interval_s": m.validate_interval} for m in reg]
    if args.json:
        print(json.dumps({"mappings": items}, indent=2))
        return 0
    print(_table([("NAME", "TABLES", "VALIDATE", "INTERVAL")] + [
        (i["name"], ",".join(i["tables"]) or "(unknown: ttl only)", i["validate"] or "-",
         _human_seconds(i["validate_interval_s"]) if i["validate_interval_s"] else "-")
        for i in items]))
    return 0


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def _cmd_get(args: argparse.Namespace) -> int:
    from ._cache import configure

    reg = _declared(args)
    decl = reg.require(args.name)
    cache = configure(origin=args.origin)
    m = cache.get(args.name)
    key: Any = args.key[0] if len(args.key) == 1 else tuple(args.key)
    if len(args.key) != len(decl.key_columns):
        raise ConfigurationError(
            f"mapping {args.name!r} has a {len(decl.key_columns)}-column key "
            f"{list(decl.key_columns)}; give {len(decl.key_columns)} value(s)"
        )
    found = key in m
    if not found and m:  # keys may be numbers: match the type of the stored keys
        sample = next(iter(m))
        key = _coerce_like(key, sample)
        found = key in m
    meta = m.meta
    if args.json:
        print(json.dumps({"name": args.name, "key": _jsonable(key), "found": found,
                          "value": _jsonable(m.get(key)), "tier": meta.tier,
                          "generation": meta.generation, "rows": meta.rows,
                          "loaded_at": datetime.fromtimestamp(meta.loaded_at, timezone.utc)
                          .isoformat()}, indent=2))
    elif found:
        print(f"{_jsonable(m[key])}\t(tier {meta.tier}, {meta.rows:,} rows)")
    else:
        print(f"key {key!r} not found in {args.name} ({meta.rows:,} rows, tier {meta.tier})",
              file=sys.stderr)
    return 0 if found else 1


def _coerce_like(key: Any, sample: Any) -> Any:
    if isinstance(key, tuple) and isinstance(sample, tuple):
        return tuple(_coerce_like(k, s) for k, s in zip(key, sample, strict=True))
    if isinstance(sample, int) and not isinstance(sample, bool):
        try:
            return int(key)
        except (TypeError, ValueError):
            return key
    return key


def _cmd_warm(args: argparse.Namespace) -> int:
    from ._cache import configure

    reg = _declared(args)
    if args.all == bool(args.name):
        raise ConfigurationError("name the mappings to warm, or pass --all (not both)")
    names = reg.names() if args.all else args.name
    for n in names:
        reg.require(n)
    cache = configure(origin=args.origin)
    out = []
    for n in names:
        progress = _with_progress(cache, n)
        m = cache.refresh(n)  # query the origin, publish to L2 when there is one
        progress.done()
        out.append({"name": n, "rows": m.meta.rows, "tier": m.meta.tier,
                    "query_id": m.meta.query_id, "nbytes": m.meta.nbytes,
                    "published": cache.l2 is not None})
    if args.json:
        print(json.dumps({"warmed": out}, indent=2))
    else:
        print(_table([("NAME", "ROWS", "FROM", "QUERY_ID", "PUBLISHED")] + [
            (o["name"], f"{o['rows']:,}", o["tier"], o["query_id"] or "-",
             "yes" if o["published"] else "no (no L2)") for o in out]))
    return 0


def _age(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = float(seconds)
    sign = "-" if s < 0 else ""
    s = abs(s)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{sign}{s / n:.1f}{unit}"
    return f"{sign}{s:.0f}s"


def _cmd_status(args: argparse.Namespace) -> int:
    from ._cache import configure

    reg = _declared(args)
    names = _names(args, reg, default_all=True)
    cache = configure(origin=args.origin)
    items = [cache.l2_status(n) for n in names]
    bad = any(i.get("corrupt") or not i.get("reachable", True) for i in items)
    if args.json:
        print(json.dumps({"l2": cache.l2 is not None, "mappings": items}, indent=2))
        return 1 if bad else 0
    if cache.l2 is None:
        print("no L2 configured (ATHENA_WARM_REDIS_URL, ATHENA_WARM_S3_URL): each container "
              "holds its own copy, which only that container can see; declared: "
              + ", ".join(names))
        return 0
    rows = [("NAME", "L2 COPY", "GEN", "COPY GEN", "AGE", "EXPIRES IN", "ROWS", "BYTES",
             "LEASE")]
    for i in items:
        if not i.get("reachable"):
            state = "L2 UNREACHABLE"
        elif i.get("corrupt"):
            state = f"CORRUPT ({i['corrupt']})"
        elif not i.get("present"):
            state = "absent"
        elif not i.get("servable"):
            state = "too old / invalidated"
        else:
            state = "stale" if i.get("stale") else "fresh"
        lease = i.get("lease")
        lease_text = "-" if not lease else (
            f"failed {lease['since_s']:.0f}s ago" if lease.get("failed") else
            f"query {lease['query_id']}" if lease.get("query_id") else
            f"refreshing {lease['since_s']:.0f}s")
        rows.append((i["name"], state, str(i.get("generation", "-")),
                     str(i.get("copy_generation", "-")), _age(i.get("age_s")),
                     _age(i.get("expires_in_s")),
                     f"{i['rows']:,}" if i.get("rows") is not None else "-",
                     f"{i['bytes']:,}" if i.get("bytes") is not None else "-", lease_text))
    print(_table(rows))
    return 1 if bad else 0


def _cmd_invalidate(args: argparse.Namespace) -> int:
    from ._cache import configure
    from .exceptions import L2Error

    reg = _declared(args)
    names = _names(args, reg)
    cache = configure(origin=args.origin)
    if cache.l2 is None:
        raise L2Error(
            "no L2 configured: an invalidation reaches other containers only through L2 (the "
            "generation counter they check). Set ATHENA_WARM_REDIS_URL (or ATHENA_WARM_S3_URL) to "
            "the fleet's shared tier; "
            "without it, containers reload when their TTL ends."
        )
    out = []
    for n in names:
        if args.refresh:
            progress = _with_progress(cache, n)
            view, switched = cache.switch(n, hard=args.hard)
            progress.done()
            out.append({"name": n, "generation": switched, "refreshed": True,
                        "hard": args.hard, "rows": view.meta.rows,
                        "query_id": view.meta.query_id})
        else:
            out.append({"name": n, "generation": cache.invalidate(n, hard=args.hard),
                         "refreshed": False,
                        "hard": args.hard, "rows": None, "query_id": None})
    if args.json:
        print(json.dumps({"invalidated": out}, indent=2))
    else:
        print(_table([("NAME", "GENERATION", "REFRESHED", "HARD", "ROWS")] + [
            (o["name"], str(o["generation"]), "yes" if o["refreshed"] else "no",
             "yes" if o["hard"] else "no",
             f"{o['rows']:,}" if o["rows"] is not None else "-") for o in out]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "demo":
            from ._demo import run_demo

            return run_demo(rows=args.rows, workdir=args.dir, l2=args.l2)
        handler = {"list": _cmd_list, "get": _cmd_get, "warm": _cmd_warm,
                   "status": _cmd_status, "invalidate": _cmd_invalidate,
                   "tables": _cmd_tables}[args.command]
        return handler(args)
    except ConfigurationError as exc:
        print(f"athena-warm: {exc}", file=sys.stderr)
        return 2
    except AthenaWarmError as exc:
        print(f"athena-warm: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress = _CURRENT.get("progress")
        stopped = f": query {progress.query_id} was stopped" if progress and \
            progress.query_id else ""
        print(f"\nathena-warm: interrupted{stopped}; nothing was published", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
