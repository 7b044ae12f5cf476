"""``sluice.sql`` and ``sluice.connect``: data sources from feed code.

Credentials never appear in feed code. The worker receives, with each CALL, the
connections of the data sources granted to the workspace and puts them in a context
variable for the duration of the call; ``sluice.connect(name)`` looks the name up there.
Outside a worker (tests, notebooks) ``sluice.configure(sources=...)`` plays that role.

``sluice.sql(...)`` builds a :class:`SqlQuery` without running anything. If a feed returns
it unchanged, Sluice runs it natively in Rust and the rows never pass through Python;
otherwise it can be materialised here (``.rows()``, ``.df()``, ``.arrow()``, ``.pl()``, or
plain iteration). Values are always bound as parameters, never put into the SQL text.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import json
import re
import sqlite3
import urllib.parse
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

__all__ = ["SqlQuery", "SourceError", "configure", "connect", "sql"]


class SourceError(Exception):
    """A data source is unknown, misconfigured or could not be reached."""


# name -> {"kind": "sqlite", "path": ...} | {"kind": "postgres", "url": ...}
SourceMap = Mapping[str, Mapping[str, Any]]

_call_sources: contextvars.ContextVar[Optional[SourceMap]] = contextvars.ContextVar("sluice_sources", default=None)
_configured: Dict[str, Mapping[str, Any]] = {}


def configure(*, sources: Optional[Mapping[str, Any]] = None) -> None:
    """Declare data sources for use outside Sluice (notebooks, tests).

    Each value is either a connection dict as Sluice sends it (``{"kind": "sqlite", "path":
    "shop.db"}``, ``{"kind": "postgres", "url": "postgresql://..."}``) or a plain string: a
    ``postgres://``/``postgresql://`` URL, or a path to a SQLite file::

        sluice.configure(sources={"warehouse": "postgresql://me@localhost/dw",
                                  "shop": "data/shop.sqlite"})

    Calling it again replaces the whole set. Inside a running feed the sources sent by Sluice
    take precedence.
    """
    _configured.clear()
    for name, value in (sources or {}).items():
        _configured[name] = _normalise_source(name, value)


def _normalise_source(name: str, value: Any) -> Mapping[str, Any]:
    if isinstance(value, str):
        if value.startswith(("postgres://", "postgresql://")):
            return {"kind": "postgres", "url": value}
        return {"kind": "sqlite", "path": value}
    if isinstance(value, Mapping) and value.get("kind") in ("sqlite", "postgres"):
        return dict(value)
    raise SourceError(
        f"source '{name}' is configured as {value!r}; give a postgresql:// URL, a SQLite file path, "
        "or a dict like {'kind': 'sqlite', 'path': ...}"
    )


@contextlib.contextmanager
def call_sources(sources: Optional[SourceMap]) -> Iterator[None]:
    """Make ``sources`` what ``connect`` sees for the duration of a call."""
    token = enter_call(dict(sources or {}))
    try:
        yield
    finally:
        exit_call(token)


def enter_call(sources: Optional[SourceMap]) -> "contextvars.Token[Optional[SourceMap]]":
    """:func:`call_sources` without the generator, for the worker's hot path (a
    ``contextlib`` manager costs ~1.5 us a call, a tenth of a small feed's whole call).
    ``sources`` is the call's own map, freshly parsed, so it is not copied."""
    return _call_sources.set(sources if sources is not None else {})


def exit_call(token: "contextvars.Token[Optional[SourceMap]]") -> None:
    _call_sources.reset(token)


def _lookup(name: str) -> Mapping[str, Any]:
    in_call = _call_sources.get()
    available: Mapping[str, Mapping[str, Any]] = in_call if in_call is not None else _configured
    conn = available.get(name)
    if conn is None:
        names = ", ".join(sorted(available)) or "none"
        hint = (
            "ask an admin to grant it to this workspace"
            if in_call is not None
            else "outside Sluice, declare it with sluice.configure(sources={...})"
        )
        raise SourceError(f"unknown data source '{name}' (available: {names}); {hint}")
    return conn


def connect(name: str) -> Any:
    """Open a DB-API 2.0 connection to the data source ``name``.

    SQLite sources open read-only. PostgreSQL uses psycopg (v3) if installed, else psycopg2;
    add ``"psycopg[binary]"`` to the script's ``# /// script`` dependencies to get it. The
    connection uses the driver's own placeholder style; prefer :func:`sql`, which accepts
    ``:name`` placeholders everywhere. Close it when done (``with contextlib.closing(...)``).
    """
    conn = _lookup(name)
    kind = conn.get("kind")
    if kind == "sqlite":
        path = conn.get("path")
        if not path:
            raise SourceError(f"data source '{name}' (sqlite) has no 'path'")
        # mode=ro: feeds read data; a feed must not be able to change a source by accident.
        uri = "file:" + urllib.parse.quote(str(path)) + "?mode=ro"
        try:
            # No detect_types: sqlite3's date converters are deprecated and raise on values
            # that are not in their exact format; dates come back as the strings stored.
            return sqlite3.connect(uri, uri=True)
        except sqlite3.Error as e:
            raise SourceError(f"cannot open SQLite data source '{name}' at {path}: {e}") from e
    if kind == "postgres":
        url = conn.get("url")
        if not url:
            raise SourceError(f"data source '{name}' (postgres) has no 'url'")
        driver, module = _pg_driver()
        try:
            return module.connect(url)
        except Exception as e:
            raise SourceError(f"cannot connect to PostgreSQL data source '{name}' with {driver}: {e}") from e
    raise SourceError(f"data source '{name}' has kind {kind!r}; this SDK supports 'sqlite' and 'postgres'")


def _pg_driver() -> Tuple[str, Any]:
    try:
        import psycopg  # type: ignore[import-not-found]

        return "psycopg", psycopg
    except ImportError:
        pass
    try:
        import psycopg2  # type: ignore[import-not-found]

        return "psycopg2", psycopg2
    except ImportError:
        pass
    raise SourceError(
        "connecting to a PostgreSQL data source needs a driver: add \"psycopg[binary]\" to the "
        "dependencies in the script's '# /// script' block"
    )


def _paramstyle(connection: Any) -> str:
    """'named' (sqlite3 accepts :name) or 'pyformat' (psycopg: %(name)s)."""
    if isinstance(connection, sqlite3.Connection):
        return "named"
    module = type(connection).__module__.split(".")[0]
    if module in ("psycopg", "psycopg2"):
        return "pyformat"
    raise SourceError(f"don't know the parameter style of {type(connection).__qualname__}")


_IDENT_START = re.compile(r"[A-Za-z_]")
_IDENT = re.compile(r"[A-Za-z0-9_]*")


def named_to_pyformat(query: str) -> Tuple[str, List[str]]:
    """Rewrite ``:name`` placeholders to ``%(name)s`` for psycopg.

    The same scan as ``crates/sluice-core/src/sqlparams.rs``: string literals, quoted
    identifiers, comments and ``::type`` casts are left alone. Literal ``%`` is doubled,
    because with parameters psycopg treats every ``%`` as the start of a placeholder.
    Returns the new query and the names it uses, in order of first use.
    """
    out: List[str] = []
    names: List[str] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c in "'\"`":
            j = i + 1
            while j < n:
                if query[j] == c:
                    if j + 1 < n and query[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            out.append(query[i : j + 1].replace("%", "%%"))
            i = j + 1
        elif query.startswith("--", i):
            j = query.find("\n", i)
            j = n if j < 0 else j
            out.append(query[i:j].replace("%", "%%"))
            i = j
        elif query.startswith("/*", i):
            j = query.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(query[i:j].replace("%", "%%"))
            i = j
        elif query.startswith("::", i):
            out.append("::")
            i += 2
        elif c == ":" and i + 1 < n and _IDENT_START.match(query[i + 1]):
            m = _IDENT.match(query, i + 1)
            assert m is not None
            name = m.group(0)
            if name not in names:
                names.append(name)
            out.append(f"%({name})s")
            i = m.end()
        elif c == "%":
            out.append("%%")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out), names


def _used_names(query: str) -> List[str]:
    return named_to_pyformat(query)[1]


class SqlQuery:
    """A query against a data source, not yet run.

    Return it from a feed to let Sluice run it natively, or materialise it in Python:
    iterate it for dicts, or call ``.rows()``, ``.df()``, ``.arrow()`` or ``.pl()``.
    """

    __slots__ = ("source", "query", "params")

    def __init__(self, source: str, query: str, params: Mapping[str, Any]) -> None:
        self.source = source
        self.query = query
        self.params: Dict[str, Any] = dict(params)

    def __repr__(self) -> str:
        return f"SqlQuery(source={self.source!r}, query={self.query!r}, params={self.params!r})"

    def to_frame_json(self) -> Dict[str, Any]:
        """The SQL frame payload: parameters as JSON (dates as ISO strings)."""
        return {"source": self.source, "query": self.query, "params": {k: _param_json(v) for k, v in self.params.items()}}

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Tuple[Any, List[str]]]:
        conn = connect(self.source)
        try:
            cur = conn.cursor()
            if _paramstyle(conn) == "named":
                # sqlite3 binds :name natively; give it only the names the query uses,
                # since sqlite3 is fine with extras but its errors for missing ones are vague.
                cur.execute(self.query, {k: _sqlite_value(self.params[k]) for k in _used_names(self.query)})
            else:
                text, _ = named_to_pyformat(self.query)
                cur.execute(text, {k: self.params[k] for k in _used_names(self.query)})
            columns = [d[0] for d in (cur.description or [])]
            yield cur, columns
        finally:
            conn.close()

    def _check(self) -> None:
        missing = [n for n in _used_names(self.query) if n not in self.params]
        if missing:
            raise SourceError(
                f"the SQL uses :{missing[0]} but no value was passed for it: add {missing[0]}=... to sluice.sql(...)"
            )

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        """Stream the result as dicts, fetching in batches so large results stay small in memory."""
        self._check()
        with self._cursor() as (cur, columns):
            while True:
                batch = cur.fetchmany(10_000)
                if not batch:
                    return
                for row in batch:
                    yield dict(zip(columns, row))

    def tuples(self) -> Tuple[List[str], List[Tuple[Any, ...]]]:
        """``(column names, rows as tuples)``."""
        self._check()
        with self._cursor() as (cur, columns):
            return columns, [tuple(r) for r in cur.fetchall()]

    def rows(self) -> List[Dict[str, Any]]:
        """All rows as a list of dicts."""
        columns, rows = self.tuples()
        return [dict(zip(columns, r)) for r in rows]

    def df(self) -> Any:
        """The result as a pandas DataFrame (needs pandas in the script's dependencies)."""
        pd = _require("pandas", "df()")
        columns, rows = self.tuples()
        return pd.DataFrame.from_records(rows, columns=columns)

    def arrow(self) -> Any:
        """The result as a pyarrow Table (needs pyarrow in the script's dependencies)."""
        pa = _require("pyarrow", "arrow()")
        columns, rows = self.tuples()
        return pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})

    def pl(self) -> Any:
        """The result as a polars DataFrame (needs polars in the script's dependencies)."""
        polars = _require("polars", "pl()")
        columns, rows = self.tuples()
        return polars.DataFrame(rows, schema=columns, orient="row")


def sql(source: str, query: str, /, **params: Any) -> SqlQuery:
    """A query against the data source ``source`` with ``:name`` placeholders.

    ::

        return sluice.sql("warehouse",
            "select day, amount from sales where region = :region and day >= :since",
            region=region, since=since)

    Every placeholder must have a keyword argument; values are bound, never interpolated.
    """
    if not isinstance(source, str) or not isinstance(query, str):
        raise TypeError("sluice.sql(source, query, **params): source and query are strings, e.g. sluice.sql(\"warehouse\", \"select ...\")")
    q = SqlQuery(source, query, params)
    q._check()
    return q


def _param_json(v: Any) -> Any:
    # Dates travel tagged so Rust binds them as dates (PostgreSQL compares a text
    # parameter with a date column only after a cast); see docs/worker-protocol.md.
    if isinstance(v, _dt.datetime):
        return {"$timestamptz" if v.tzinfo is not None else "$timestamp": v.isoformat()}
    if isinstance(v, _dt.date):
        return {"$date": v.isoformat()}
    if isinstance(v, _dt.time):
        return v.isoformat()
    if isinstance(v, (tuple, set, frozenset)):
        return list(v)
    return v


def _sqlite_value(v: Any) -> Any:
    # sqlite3's implicit date adapters are deprecated (3.12); bind ISO strings explicitly,
    # the same text the SQL frame carries, so a query gives the same rows whether Rust runs
    # it (passthrough) or Python does. Lists bind as JSON text: `x in (select value from json_each(:tags))`.
    if isinstance(v, (_dt.date, _dt.datetime, _dt.time)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v))
    return v


def _require(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"SqlQuery.{what} needs {module}: add \"{module}\" to the dependencies in the script's '# /// script' block"
        ) from None
