"""What a feed returned → protocol frames (ARROW when pyarrow is importable, else ROWS).

Two families of results:

* **Columnar** (pandas / polars DataFrame, pyarrow Table / RecordBatch): with pyarrow they go
  to Arrow directly and are cut into batches of at most ``ARROW_BATCH_ROWS`` rows, one
  complete IPC stream per frame. Without pyarrow they are turned into rows.
* **Python rows** (list of dicts, list of tuples with ``columns=``, dict of columns, a
  generator of dicts, a materialised ``sluice.sql``): cut into chunks, each chunk typed by
  the rules below and sent as one ARROW or ROWS frame. Generators are consumed chunk by
  chunk (``STREAM_CHUNK_ROWS``), so a feed can stream more rows than fit in memory.

Column typing for Python rows (the same for ROWS and ARROW so both paths agree):

* A column's type comes from its non-null values in the first chunk where it has any:
  ``bool int float str date datetime json``. ``int`` mixed with ``float``/``Decimal`` is
  ``float``; ``Decimal`` is ``float``; any other mix, and anything else (dicts, lists, …),
  is ``json``. Until a column has a non-null value its type is ``null``.
* In later chunks values must fit that type (an ``int`` fits a ``float`` column, anything
  fits ``json``); otherwise the call fails with an error naming the column and the value.
* Missing keys are null. A key first seen in a later chunk is a new column: ROWS frames
  simply carry it from then on; an ARROW stream's columns are fixed by its first frame, so
  there it is an error naming the column. Declare all columns up front with
  ``@sluice.feed(columns=[...])`` (or put the key, with ``None``, in the first rows).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import importlib
import importlib.util
import json
import math
import types
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from ._sql import SqlQuery

# Frame kinds (docs/worker-protocol.md).
HELLO, LOAD_ERROR, CALL, SQL, ARROW, ROWS, END, ERROR, SHUTDOWN = range(1, 10)

MAX_FRAME_BYTES = 64 * 1024 * 1024
# Leave room under the hard limit for the frame header and IPC framing overhead.
_FRAME_BUDGET = MAX_FRAME_BYTES - 1024 * 1024
ARROW_BATCH_ROWS = 65_536
STREAM_CHUNK_ROWS = 10_000

SUPPORTED_SHAPES = (
    "a list of dicts, a list of tuples with @sluice.feed(columns=[...]), a dict of columns, "
    "a pandas or polars DataFrame, a pyarrow Table or RecordBatch, a generator of dicts, "
    "sluice.sql(...), or None for no rows"
)


class ResultError(Exception):
    """The feed's return value cannot be turned into rows (reported as ``feed_raised``)."""


class Frame(NamedTuple):
    kind: int
    payload: bytes
    rows: int


def pyarrow_available() -> bool:
    """Whether pyarrow can be imported, without importing it. Tests replace this too."""
    return importlib.util.find_spec("pyarrow") is not None


def load_pyarrow() -> Any:
    """pyarrow if it can be imported, else None. Tests replace this to exercise ROWS."""
    try:
        return importlib.import_module("pyarrow")
    except ImportError:
        return None


def encode(result: Any, *, columns: Optional[Sequence[str]] = None, pa: Any = None) -> Iterator[Frame]:
    """Frames for one feed result. ``pa`` is the pyarrow module, or None to send ROWS.

    A ``SqlQuery`` here is materialised; the worker handles passthrough before calling this.
    Iterating the returned generator runs the user's generator, so its exceptions surface here.
    """
    if result is None:
        return
    native = _as_arrow_table(result, pa) if pa is not None else None
    if native is not None:
        yield from _arrow_table_frames(native, pa)
        return
    # Columnar results without pyarrow (or that pyarrow refused) become typed row chunks.
    if _is_arrow(result):
        chunks = _arrow_to_chunks(result)
    elif _module_of(result) == "pandas" and type(result).__name__ == "DataFrame":
        chunks = _pandas_to_chunks(result)
    elif _module_of(result) == "polars":
        chunks = _polars_to_chunks(result)
    else:
        chunks = _row_chunks(result, columns)
    builder = _ArrowChunks(pa) if pa is not None else _RowsChunks()
    for cols, rows in chunks:
        yield from builder.frames(cols, rows)
    yield from builder.finish()


_SCALAR_KINDS = {str: "str", int: "int", float: "float", bool: "bool"}
# json.dumps with keyword arguments builds a new encoder on every call; small results are
# encoded once per call, so the encoder is built once.
_compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def small_rows_frame(result: Any) -> Optional[Frame]:
    """The ROWS frame for the commonest small result, a short list of flat dicts of plain
    scalars, built in one pass; None when anything is unusual (other shapes, declared
    columns, dates, nested values, mixed types, NaN), so the general path decides.

    It gives exactly what ``encode`` gives for the same rows: it is the per-call cost of
    every small feed, so it skips the general path's per-column passes.
    """
    if type(result) is not list or not result:
        return None
    cols: List[str] = []
    seen: Dict[str, str] = {}
    kinds = _SCALAR_KINDS
    for row in result:
        if type(row) is not dict:
            return None
        for k, v in row.items():
            if v is None:
                if k not in seen:
                    if type(k) is not str:
                        return None
                    seen[k] = "null"
                    cols.append(k)
                continue
            kind = kinds.get(type(v))
            if kind is None or (kind == "float" and not math.isfinite(v)):
                return None
            t = seen.get(k)
            if t == kind:
                continue
            if t is None:
                if type(k) is not str:
                    return None
                cols.append(k)
                seen[k] = kind
            elif t == "null":
                seen[k] = kind
            elif {t, kind} == {"int", "float"}:
                seen[k] = "float"
            else:
                return None
    ctypes = [seen[c] for c in cols]
    if "float" in ctypes:
        floats = [i for i, t in enumerate(ctypes) if t == "float"]
        rows = []
        for row in result:
            r = [row.get(c) for c in cols]
            for i in floats:
                if r[i] is not None:
                    r[i] = float(r[i])
            rows.append(r)
    else:
        rows = [[row.get(c) for c in cols] for row in result]
    payload = _compact_json({"columns": cols, "types": ctypes, "rows": rows})
    if len(payload) > _FRAME_BUDGET // 4:
        return None  # the general path splits big frames
    return Frame(ROWS, payload.encode(), len(rows))


# ---------------------------------------------------------------------------------------
# Recognising shapes.


def _module_of(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def _is_arrow(obj: Any) -> bool:
    return _module_of(obj) == "pyarrow" and type(obj).__name__ in ("Table", "RecordBatch", "RecordBatchReader")


def _as_arrow_table(result: Any, pa: Any) -> Any:
    """A pyarrow Table for columnar results, or None for Python-row results."""
    mod = _module_of(result)
    if isinstance(result, pa.Table):
        return result
    if isinstance(result, pa.RecordBatch):
        return pa.Table.from_batches([result])
    if isinstance(result, pa.RecordBatchReader):
        return result  # streamed batch by batch below
    if mod == "pandas" and type(result).__name__ == "DataFrame":
        df = _pandas_reset_named_index(result)
        try:
            return pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            # Object columns with mixed types: fall back to the typed row path, which
            # turns such a column into JSON text instead of failing.
            return None
    if mod == "polars":
        if type(result).__name__ == "LazyFrame":
            result = result.collect()
        if type(result).__name__ == "DataFrame":
            try:
                import polars

                # The oldest compat level gives plain (large_)string instead of string_view,
                # which every Arrow reader understands.
                return result.to_arrow(compat_level=polars.CompatLevel.oldest())
            except (ImportError, AttributeError, TypeError):
                return result.to_arrow()
    return None


def _pandas_reset_named_index(df: Any) -> Any:
    # A default RangeIndex is noise to a BI tool; a named index (set_index("day")) is data.
    names = [n for n in getattr(df.index, "names", [None]) if n is not None]
    return df.reset_index() if names else df


def _pandas_to_chunks(df: Any) -> Iterator[Tuple[List[str], List[List[Any]]]]:
    df = _pandas_reset_named_index(df)
    cols = [str(c) for c in df.columns]
    rows = [list(r) for r in df.itertuples(index=False, name=None)]
    return _slices(cols, rows, ARROW_BATCH_ROWS)


def _polars_to_chunks(df: Any) -> Iterator[Tuple[List[str], List[List[Any]]]]:
    if type(df).__name__ == "LazyFrame":
        df = df.collect()
    if type(df).__name__ != "DataFrame":
        raise ResultError(f"the feed returned {_describe(df)}; feeds may return {SUPPORTED_SHAPES}")
    return _slices(list(df.columns), [list(r) for r in df.iter_rows()], ARROW_BATCH_ROWS)


def _arrow_to_chunks(obj: Any) -> Iterator[Tuple[List[str], List[List[Any]]]]:
    batches = obj if type(obj).__name__ == "RecordBatchReader" else obj.to_batches() if hasattr(obj, "to_batches") else [obj]
    for b in batches:
        cols = list(b.schema.names)
        data = [b.column(i).to_pylist() for i in range(b.num_columns)]
        yield cols, [list(r) for r in zip(*data)] if data else []


def _slices(cols: List[str], rows: List[List[Any]], size: int) -> Iterator[Tuple[List[str], List[List[Any]]]]:
    if not rows:
        yield cols, []
    for i in range(0, len(rows), size):
        yield cols, rows[i : i + size]


def _describe(obj: Any) -> str:
    t = type(obj)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    return f"{'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}"


def _row_chunks(result: Any, declared: Optional[Sequence[str]]) -> Iterator[Tuple[List[str], List[Any]]]:
    """(columns, rows) chunks; rows are dicts, or lists aligned with columns."""
    if isinstance(result, SqlQuery):
        return _sql_chunks(result)
    if isinstance(result, types.GeneratorType) or (hasattr(result, "__next__") and hasattr(result, "__iter__")):
        return _rows_from(result, declared, STREAM_CHUNK_ROWS, streamed=True)
    if isinstance(result, dict):
        return _dict_of_columns(result)
    if isinstance(result, (list, tuple)):
        return _rows_from(iter(result), declared, ARROW_BATCH_ROWS, streamed=False)
    if isinstance(result, (str, bytes, int, float, bool)):
        raise ResultError(f"the feed returned a single value ({_describe(result)}); feeds return rows: {SUPPORTED_SHAPES}")
    if isinstance(result, Iterable) and not isinstance(result, (set, frozenset)):
        return _rows_from(iter(result), declared, STREAM_CHUNK_ROWS, streamed=True)
    raise ResultError(f"the feed returned {_describe(result)}, which Sluice cannot serve; feeds may return {SUPPORTED_SHAPES}")


def _sql_chunks(q: SqlQuery) -> Iterator[Tuple[List[str], List[Any]]]:
    with q._cursor() as (cur, cols):
        first = True
        while True:
            batch = cur.fetchmany(STREAM_CHUNK_ROWS)
            if not batch and not first:
                return
            yield cols, [list(r) for r in batch]
            if not batch:
                return
            first = False


def _dict_of_columns(d: Dict[Any, Any]) -> Iterator[Tuple[List[str], List[Any]]]:
    cols = [str(k) for k in d]
    values = []
    for k, v in d.items():
        if isinstance(v, (str, bytes, dict)) or not isinstance(v, Iterable):
            raise ResultError(
                f"the feed returned a dict, read as a dict of columns, but column '{k}' is {_describe(v)}, "
                "not a list of values; return {\"col\": [v1, v2, ...], ...} or a list of dicts"
            )
        values.append(list(v))
    lengths = {c: len(v) for c, v in zip(cols, values)}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"'{c}' has {n}" for c, n in lengths.items())
        raise ResultError(f"the feed returned a dict of columns of different lengths ({detail}); every column needs one value per row")
    rows = [list(r) for r in zip(*values)] if values else []
    return _slices(cols, rows, ARROW_BATCH_ROWS)


def _rows_from(
    it: Iterator[Any], declared: Optional[Sequence[str]], size: int, *, streamed: bool
) -> Iterator[Tuple[List[str], List[Any]]]:
    cols: List[str] = list(declared) if declared else []
    known = set(cols)
    chunk: List[Any] = []
    index = 0
    sent = False
    for item in it:
        index += 1
        if isinstance(item, dict):
            for k in item:
                if k not in known:
                    if declared:
                        raise ResultError(
                            f"row {index} has key {k!r}, which is not in the feed's columns=[...] "
                            f"({', '.join(cols)}); add it there or leave it out of the rows"
                        )
                    known.add(k)
                    cols.append(k)
            chunk.append(item)
        elif isinstance(item, (tuple, list)) or _module_of(item) == "sqlite3":
            if not declared:
                raise ResultError(
                    f"row {index} is {_describe(item)} but the feed declares no column names; "
                    "add @sluice.feed(columns=[\"a\", \"b\", ...]) or return dicts"
                )
            if len(item) != len(cols):
                raise ResultError(f"row {index} has {len(item)} values but columns=[...] names {len(cols)}: {', '.join(cols)}")
            chunk.append(list(item))
        else:
            shape = "generator" if streamed else "list"
            raise ResultError(
                f"the feed returned a {shape} whose row {index} is {_describe(item)}; rows must be dicts "
                f"(or tuples with columns=[...]). Feeds may return {SUPPORTED_SHAPES}"
            )
        if len(chunk) >= size:
            yield list(cols), chunk
            chunk = []
            sent = True
    if chunk or (not sent and cols):
        yield list(cols), chunk


# ---------------------------------------------------------------------------------------
# Values and types.

_ORDER = ("bool", "int", "float", "str", "date", "datetime", "json")


def _plain(v: Any) -> Any:
    """Normalise numpy / pandas scalars and NaN to plain Python; None for missing."""
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return None if math.isnan(v) else v
    mod = _module_of(v)
    if mod in ("numpy", "pandas"):
        name = type(v).__name__
        if name in ("NaTType", "NAType"):
            return None
        if name == "Timestamp":
            return v.to_pydatetime()
        if name == "Timedelta":
            return v.to_pytimedelta()
        if hasattr(v, "item"):
            # numpy.datetime64 -> datetime/int; numpy.float64 -> float
            return _plain(v.item())
    return v


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, (float, decimal.Decimal)):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, _dt.datetime):
        return "datetime"
    if isinstance(v, _dt.date):
        return "date"
    return "json"


def _infer(values: Iterable[Any]) -> str:
    kinds = set()
    for v in values:
        if v is not None:
            kinds.add(_kind(v))
            if len(kinds) > 2:
                break
    if not kinds:
        return "null"
    if len(kinds) == 1:
        return kinds.pop()
    if kinds == {"int", "float"}:
        return "float"
    return "json"


def _fits(v: Any, t: str) -> bool:
    k = _kind(v)
    return k == t or t == "json" or (t == "float" and k == "int")


def _json_text(v: Any) -> str:
    return json.dumps(_jsonable(v), ensure_ascii=False, separators=(",", ":"))


def _jsonable(v: Any) -> Any:
    v = _plain(v)
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (_dt.date, _dt.datetime, _dt.time)):
        return v.isoformat()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if hasattr(v, "tolist"):  # numpy arrays
        return _jsonable(v.tolist())
    return str(v)


def _columns_of(cols: List[str], rows: List[Any]) -> List[List[Any]]:
    if rows and isinstance(rows[0], dict):
        return [[_plain(r.get(c)) for r in rows] for c in cols]
    return [[_plain(r[i]) for r in rows] for i in range(len(cols))]


class _Types:
    """Column types fixed when first seen (shared by ROWS and ARROW)."""

    def __init__(self) -> None:
        self.types: Dict[str, str] = {}
        self.row = 0

    def update(self, cols: List[str], data: List[List[Any]]) -> List[str]:
        out = []
        for c, values in zip(cols, data):
            t = self.types.get(c, "null")
            if t == "null":
                t = _infer(values)
                self.types[c] = t
            elif t != "json":
                for i, v in enumerate(values):
                    if v is not None and not _fits(v, t):
                        raise ResultError(
                            f"column '{c}' holds {t} values, but row {self.row + i + 1} has {v!r} ({type(v).__name__}); "
                            "give each column one type (convert with str(...) or float(...)), or None for missing values"
                        )
            out.append(t)
        self.row += len(data[0]) if data else 0
        return out


def _row_value(v: Any, t: str) -> Any:
    if v is None:
        return None
    if t == "json":
        return _jsonable(v)
    if t == "float":
        f = float(v)
        return f if math.isfinite(f) else None
    if t in ("date", "datetime"):
        return v.isoformat()
    return v


class _RowsChunks:
    def __init__(self) -> None:
        self.typer = _Types()

    def frames(self, cols: List[str], rows: List[Any]) -> Iterator[Frame]:
        data = _columns_of(cols, rows)
        ctypes = self.typer.update(cols, data)
        converted = [[_row_value(v, t) for v in col] for col, t in zip(data, ctypes)]
        out_rows = [list(r) for r in zip(*converted)] if converted else [[] for _ in rows]
        yield from self._split(cols, ctypes, out_rows)

    def _split(self, cols: List[str], ctypes: List[str], rows: List[List[Any]]) -> Iterator[Frame]:
        payload = json.dumps({"columns": cols, "types": ctypes, "rows": rows}, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        if len(payload) > _FRAME_BUDGET and len(rows) > 1:
            half = len(rows) // 2
            yield from self._split(cols, ctypes, rows[:half])
            yield from self._split(cols, ctypes, rows[half:])
            return
        if len(payload) > _FRAME_BUDGET:
            raise ResultError(f"a single row is larger than the {MAX_FRAME_BYTES // (1024 * 1024)} MiB frame limit")
        yield Frame(ROWS, payload, len(rows))

    def finish(self) -> Iterator[Frame]:
        return iter(())


class _ArrowChunks:
    def __init__(self, pa: Any) -> None:
        self.pa = pa
        self.typer = _Types()
        self.columns: Optional[List[str]] = None

    def _arrow_type(self, t: str, values: List[Any]) -> Any:
        pa = self.pa
        if t == "datetime":
            aware = [v.tzinfo is not None for v in values if v is not None]
            if any(aware) and not all(aware):
                raise ResultError("a datetime column mixes values with and without a time zone; make them all one or the other")
            return pa.timestamp("us", tz="UTC") if any(aware) else pa.timestamp("us")
        return {
            "null": pa.null(),
            "bool": pa.bool_(),
            "int": pa.int64(),
            "float": pa.float64(),
            "str": pa.string(),
            "date": pa.date32(),
            "json": pa.string(),
        }[t]

    def frames(self, cols: List[str], rows: List[Any]) -> Iterator[Frame]:
        pa = self.pa
        if self.columns is None:
            self.columns = list(cols)
        elif cols != self.columns:
            new = [c for c in cols if c not in self.columns]
            raise ResultError(
                f"column {new[0]!r} first appears after row {self.typer.row}, but an Arrow result's columns "
                "are fixed by its first rows; declare all columns with @sluice.feed(columns=[...]) "
                "or include the key with None in every row"
            )
        data = _columns_of(cols, rows)
        ctypes = self.typer.update(cols, data)
        arrays = []
        for c, values, t in zip(cols, data, ctypes):
            if t == "json":
                values = [None if v is None else _json_text(v) for v in values]
            elif t == "float":
                values = [None if v is None else float(v) for v in values]
            try:
                arrays.append(pa.array(values, type=self._arrow_type(t, values)))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
                raise ResultError(f"column '{c}' ({t}) cannot be encoded: {e}") from e
        batch = pa.RecordBatch.from_arrays(arrays, names=cols) if cols else pa.RecordBatch.from_pylist([{}] * 0)
        yield from _batch_frames(pa, batch)

    def finish(self) -> Iterator[Frame]:
        return iter(())


def _ipc(pa: Any, schema: Any, batches: List[Any]) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for b in batches:
            writer.write_batch(b)
    return sink.getvalue().to_pybytes()


def _batch_frames(pa: Any, batch: Any) -> Iterator[Frame]:
    payload = _ipc(pa, batch.schema, [batch])
    if len(payload) > _FRAME_BUDGET and batch.num_rows > 1:
        half = batch.num_rows // 2
        yield from _batch_frames(pa, batch.slice(0, half))
        yield from _batch_frames(pa, batch.slice(half))
        return
    if len(payload) > _FRAME_BUDGET:
        raise ResultError(f"a single row is larger than the {MAX_FRAME_BYTES // (1024 * 1024)} MiB frame limit")
    yield Frame(ARROW, payload, batch.num_rows)


def _arrow_table_frames(table: Any, pa: Any) -> Iterator[Frame]:
    if isinstance(table, pa.RecordBatchReader):
        any_sent = False
        for batch in table:
            for start in range(0, max(batch.num_rows, 1), ARROW_BATCH_ROWS):
                any_sent = True
                yield from _batch_frames(pa, batch.slice(start, ARROW_BATCH_ROWS))
        if not any_sent:
            yield Frame(ARROW, _ipc(pa, table.schema, []), 0)
        return
    batches = table.to_batches(max_chunksize=ARROW_BATCH_ROWS)
    if not batches:
        # Still send the schema: clients (CSV header, OData metadata) want the columns.
        yield Frame(ARROW, _ipc(pa, table.schema, []), 0)
        return
    for b in batches:
        yield from _batch_frames(pa, b)
