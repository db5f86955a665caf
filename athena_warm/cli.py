"""``athena-warm``: the operator's command line. Exit codes: 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

from .exceptions import AthenaWarmError, ConfigurationError

ENVIRONMENT = """\
environment (an option given on the command line wins):
  ATHENA_WARM_APP         module or .py file that declares the mappings (--app)
  ATHENA_WARM_CONFIG      TOML file that declares the mappings (--config)
  ATHENA_WARM_ORIGIN      athena (default) or duckdb:PATH (--origin)
  AWS_REGION              the region of Athena, Glue and S3 (or ATHENA_WARM_REGION)
  ATHENA_WARM_REDIS_URL   the fleet's Redis/Valkey/ElastiCache: redis:// or rediss:// (TLS)
  ATHENA_WARM_S3_URL      the fleet's S3 shared tier: s3://bucket/prefix (with Redis: beneath)
  ATHENA_WARM_SIGNING_KEY the key copies are signed with (set it as the functions do)
  ATHENA_WARM_WORKGROUP   the Athena workgroup (default primary)

exit codes: 0 ok, 1 failure (or a key not found), 2 usage or configuration, 130 interrupted
"""


def _common() -> argparse.ArgumentParser:
    """The options every command takes, before or after the command's name."""
    c = argparse.ArgumentParser(add_help=False)
    c.add_argument("--app", default=argparse.SUPPRESS, metavar="MODULE",
                   help="module (or .py file) that declares mappings [ATHENA_WARM_APP]; "
                        "imported with prewarm off, its output sent to stderr")
    c.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                   help="TOML file that declares mappings [ATHENA_WARM_CONFIG]")
    c.add_argument("--origin", default=argparse.SUPPRESS, metavar="ORIGIN",
                   help="'athena' or 'duckdb:PATH' [ATHENA_WARM_ORIGIN]")
    return c


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="athena-warm", parents=[_common()], epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve Athena query results to AWS Lambda functions from warm memory: "
                    "look at, load, publish and invalidate the mappings a function declares.",
    )
    p.set_defaults(app=None, config=None, origin=None)
    p.add_argument("--version", action="version", version=f"athena-warm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        # a parent of its own: set_defaults below would reach shared actions
        return sub.add_parser(name, help=text, description=text, parents=[_common()],
                              epilog=ENVIRONMENT,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    d = command("demo", "run the local demo: two containers, L1 hits, a TTL reload")
    d.add_argument("--rows", type=int, default=200_000, help="rows in the sample table")
    d.add_argument("--dir", help="folder for the sample data (default: a new temp folder)")
    d.add_argument("--l2", nargs="?", const=True, default=False, metavar="URL",
                   help="share copies through L2: a throwaway valkey/redis server, or URL")

    ls = command("list", "declared mappings")
    ls.add_argument("--json", action="store_true", help="machine-readable output")

    g = command("get", "look up one key (loads the mapping if needed)")
    g.add_argument("name", help="the mapping's name")
    g.add_argument("key", nargs="+", help="the key; several values for a multi-column key")
    g.add_argument("--json", action="store_true", help="machine-readable output")

    w = command("warm", "query the origin now and publish to L2 (if configured)")
    w.add_argument("name", nargs="*", help="the mappings to warm")
    w.add_argument("--all", action="store_true", help="every declared mapping")
    w.add_argument("--json", action="store_true", help="machine-readable output")

    st = command("status", "what L2 holds per mapping: copy, generation, lease")
    st.add_argument("name", nargs="*", help="the mappings to show (default: all)")
    st.add_argument("--json", action="store_true", help="machine-readable output")

    tb = command("tables", "which tables each mapping reads, or which mappings read "
                        "TABLE (the ones to invalidate after it changes)")
    tb.add_argument("table", nargs="?", help="database.table (a bare name matches any database)")
    tb.add_argument("--json", action="store_true", help="machine-readable output")

    inv = command("invalidate", "make every warm container reload (needs L2)")
    inv.add_argument("name", nargs="*", help="the mappings to invalidate")
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
        import shutil

        self.query_id = p["query_id"]
        scanned = p.get("scanned_bytes")
        text = (f"{self.name}: query {p['query_id']} {p['state']} {p['elapsed_s']:.0f}s"
                + (f", {scanned / 1e6:,.1f} MB scanned" if scanned else ""))
        if self.tty:  # one line, in place: never wider than the terminal (it would scroll)
            width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
            print("\r" + text[:width].ljust(width), end="", file=sys.stderr, flush=True)
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
    """The declarations, loaded without the function's side effects: its module is imported
    with prewarm off (no query, no publish) and whatever it prints goes to stderr, so that
    ``--json`` output on stdout is only JSON."""
    import os

    from ._declare import REGISTRY, load_declarations

    before = os.environ.get("ATHENA_WARM_PREWARM")
    os.environ["ATHENA_WARM_PREWARM"] = "false"
    try:
        with contextlib.redirect_stdout(sys.stderr):
            load_declarations(app=args.app, config=args.config)
    finally:
        if before is None:
            os.environ.pop("ATHENA_WARM_PREWARM", None)
        else:
            os.environ["ATHENA_WARM_PREWARM"] = before
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

    reg = _declared(args)
    decl = reg.require(args.name)
    if len(args.key) != len(decl.key_columns):  # before any query: a usage error costs nothing
        raise ConfigurationError(
            f"mapping {args.name!r} has a {len(decl.key_columns)}-column key "
            f"{list(decl.key_columns)}; give {len(decl.key_columns)} value(s)"
        )
    cache = _cache(args, querying=True)
    progress = _with_progress(cache, args.name)
    try:
        m = cache.get(args.name)
    finally:
        progress.done()
    key: Any = args.key[0] if len(args.key) == 1 else tuple(args.key)
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

    reg = _declared(args)
    if args.all == bool(args.name):
        raise ConfigurationError("name the mappings to warm, or pass --all (not both)")
    names = reg.names() if args.all else args.name
    for n in names:
        reg.require(n)
    cache = _cache(args, querying=True)
    out = []
    for n in names:
        progress = _with_progress(cache, n)
        with _outcome(n) as outcome:
            try:
                m = cache.refresh(n)  # query the origin, publish to L2 when there is one
            finally:
                progress.done()
        published = cache.l2 is not None and outcome.get("event") == "publish"
        out.append({"name": n, "rows": m.meta.rows, "tier": m.meta.tier,
                    "query_id": m.meta.query_id, "nbytes": m.meta.nbytes,
                    "published": published,
                    "not_published_because": None if published or cache.l2 is None else
                    outcome.get("reason") or "the shared tier did not store it"})
    if args.json:
        print(json.dumps({"warmed": out}, indent=2))
    else:
        print(_table([("NAME", "ROWS", "FROM", "QUERY_ID", "PUBLISHED")] + [
            (o["name"], f"{o['rows']:,}", o["tier"], o["query_id"] or "-",
             "yes" if o["published"] else "no (no L2)" if cache.l2 is None else
             f"NO: {o['not_published_because']}") for o in out]))
    return 1 if any(o["not_published_because"] for o in out) else 0


def _cache(args: argparse.Namespace, *, querying: bool = False) -> Any:
    """The cache the command works on. A shared tier that is configured but unusable (a bad
    URL) is a configuration error here, not a silently private cache; so is an origin that
    cannot be reached as configured (no region), checked before a command that queries."""
    from ._cache import configure
    from .l2 import open_l2

    cache = configure(origin=args.origin, l2=open_l2() or False)
    clients = getattr(cache.origin, "clients", None)
    if querying and callable(clients):
        clients()  # makes the AWS clients: a missing region says so, once, here
    return cache


@contextlib.contextmanager
def _outcome(name: str) -> Iterator[dict[str, Any]]:
    """What became of ``name``'s publish: the last publish event, with a reason when it did
    not happen (refused, unreachable, fenced, invalidated meanwhile)."""
    from ._events import listeners

    seen: dict[str, Any] = {}

    def record(fields: dict[str, Any]) -> None:
        if fields.get("mapping") != name:
            return
        event = fields.get("event")
        if event in ("publish", "publish_fenced", "publish_skipped", "publish_failed"):
            seen["event"] = event
            seen["reason"] = {"publish_fenced": "a copy as new was already there",
                              "publish_skipped": "invalidated during the load",
                              "publish_failed": "the copy could not be encoded"}.get(event)
        elif event in ("l2_error", "l2_corrupt") and not seen.get("reason"):
            seen["reason"] = _short(str(fields.get("message") or event))

    listeners.append(record)
    try:
        yield seen
    finally:
        listeners.remove(record)


def _short(text: str, limit: int = 160) -> str:
    """One printable line, at most ``limit`` characters (server errors may quote payloads)."""
    clean = "".join(c if c.isprintable() else "?" for c in text.replace("\n", " "))
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


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

    reg = _declared(args)
    names = _names(args, reg, default_all=True)
    cache = _cache(args)
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
        rows.append((i["name"], state, _dash(i.get("generation")),
                     _dash(i.get("copy_generation")), _age(i.get("age_s")),
                     _age(i.get("expires_in_s")),
                     f"{i['rows']:,}" if i.get("rows") is not None else "-",
                     f"{i['bytes']:,}" if i.get("bytes") is not None else "-", lease_text))
    print(_table(rows))
    return 1 if bad else 0


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _cmd_invalidate(args: argparse.Namespace) -> int:
    from .exceptions import L2Error

    reg = _declared(args)
    names = _names(args, reg)
    cache = _cache(args, querying=args.refresh)
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
            with _outcome(n) as outcome:
                try:
                    view, switched = cache.switch(n, hard=args.hard)
                except L2Error as exc:
                    if outcome.get("reason"):
                        raise L2Error(f"{exc} (L2 said: {outcome['reason']})") from None
                    raise
                finally:
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
