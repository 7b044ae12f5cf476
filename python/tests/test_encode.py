"""Every return shape, encoded as ARROW frames (decoded with pyarrow) and as ROWS frames."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import sluice
from sluice import _encode
from sluice._encode import ARROW, ROWS, encode

from framing import arrow_rows, rows_rows

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")
pl = pytest.importorskip("polars")

EXPECTED = [
    {"id": 1, "name": "a", "amount": 1.5, "day": dt.date(2024, 1, 1)},
    {"id": 2, "name": "b", "amount": None, "day": dt.date(2024, 1, 2)},
]
EXPECTED_ROWS = [
    {"id": 1, "name": "a", "amount": 1.5, "day": "2024-01-01"},
    {"id": 2, "name": "b", "amount": None, "day": "2024-01-02"},
]


def decode(frames: List[_encode.Frame]) -> List[Dict[str, Any]]:
    kinds = {f.kind for f in frames}
    assert len(kinds) <= 1, kinds
    if kinds == {ARROW}:
        return arrow_rows([f.payload for f in frames])
    return rows_rows([json.loads(f.payload) for f in frames])


def both(result_factory: Any, columns: Any = None) -> tuple:
    """Encode twice (fresh result each time, generators are single-use): with and without pyarrow."""
    with_arrow = list(encode(result_factory(), columns=columns, pa=pa))
    without = list(encode(result_factory(), columns=columns, pa=None))
    assert all(f.kind == ARROW for f in with_arrow)
    assert all(f.kind == ROWS for f in without)
    return with_arrow, without


def gen() -> Iterator[Dict[str, Any]]:
    yield from (dict(r) for r in EXPECTED)


SHAPES = {
    "list of dicts": (lambda: [dict(r) for r in EXPECTED], None),
    "list of tuples with columns": (lambda: [(r["id"], r["name"], r["amount"], r["day"]) for r in EXPECTED], ["id", "name", "amount", "day"]),
    "dict of columns": (lambda: {k: [r[k] for r in EXPECTED] for k in EXPECTED[0]}, None),
    "pandas": (lambda: pd.DataFrame(EXPECTED), None),
    "polars": (lambda: pl.DataFrame(EXPECTED), None),
    "polars lazy": (lambda: pl.DataFrame(EXPECTED).lazy(), None),
    "arrow table": (lambda: pa.Table.from_pylist(EXPECTED), None),
    "arrow record batch": (lambda: pa.RecordBatch.from_pylist(EXPECTED), None),
    "generator": (gen, None),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_shape_round_trips_through_arrow_and_rows(shape: str) -> None:
    factory, columns = SHAPES[shape]
    with_arrow, without = both(factory, columns)
    assert decode(with_arrow) == EXPECTED
    assert sum(f.rows for f in with_arrow) == 2
    rows = decode(without)
    assert rows == EXPECTED_ROWS
    assert json.loads(without[0].payload)["types"] == ["int", "str", "float", "date"]
    assert sum(f.rows for f in without) == 2


def test_none_and_empty_results() -> None:
    assert list(encode(None, pa=pa)) == []
    assert list(encode(None, pa=None)) == []
    assert list(encode([], pa=pa)) == []
    # An empty table still tells the client its columns.
    (frame,) = encode(pa.table({"a": pa.array([], pa.int64())}), pa=pa)
    assert pa.ipc.open_stream(frame.payload).read_all().schema.names == ["a"] and frame.rows == 0
    (frame,) = encode([], columns=["a", "b"], pa=None)
    assert json.loads(frame.payload) == {"columns": ["a", "b"], "types": ["null", "null"], "rows": []}


def test_pandas_index_is_dropped_unless_named() -> None:
    df = pd.DataFrame({"v": [1, 2]}, index=[10, 20])
    assert decode(list(encode(df, pa=pa))) == [{"v": 1}, {"v": 2}]
    assert decode(list(encode(df, pa=None))) == [{"v": 1}, {"v": 2}]
    named = df.rename_axis("day")
    assert decode(list(encode(named, pa=pa))) == [{"day": 10, "v": 1}, {"day": 20, "v": 2}]
    assert decode(list(encode(named, pa=None))) == [{"day": 10, "v": 1}, {"day": 20, "v": 2}]


def test_pandas_without_pyarrow_turns_numpy_values_into_json() -> None:
    df = pd.DataFrame({"t": pd.to_datetime(["2024-01-01 10:00", None]), "x": [1.0, float("nan")], "n": [1, 2]})
    (frame,) = encode(df, pa=None)
    body = json.loads(frame.payload)
    assert body["types"] == ["datetime", "float", "int"]
    assert body["rows"] == [["2024-01-01T10:00:00", 1.0, 1], [None, None, 2]]


def test_rows_types_from_first_non_null_and_value_conversions() -> None:
    rows = [
        {"a": None, "b": decimal.Decimal("1.25"), "c": dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone.utc), "d": {"k": [1]}, "e": True},
        {"a": "x", "b": 2, "c": None, "d": b"\x01", "e": None},
    ]
    (frame,) = encode(rows, pa=None)
    body = json.loads(frame.payload)
    assert body["types"] == ["str", "float", "datetime", "json", "bool"]
    assert body["rows"] == [[None, 1.25, "2024-01-01T12:00:00+00:00", {"k": [1]}, True], ["x", 2.0, None, "01", None]]
    # The same data through Arrow: json as text, aware datetimes as UTC timestamps.
    got = decode(list(encode(rows, pa=pa)))
    assert got[0]["d"] == '{"k":[1]}' and got[1]["d"] == '"01"'
    assert got[0]["c"] == dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    assert got[1]["b"] == 2.0


def test_mixed_column_in_first_chunk_becomes_json_text() -> None:
    rows = [{"v": 1}, {"v": "two"}]
    assert json.loads(next(encode(rows, pa=None)).payload)["types"] == ["json"]
    assert decode(list(encode(rows, pa=pa))) == [{"v": "1"}, {"v": '"two"'}]


def test_generator_is_streamed_in_chunks_not_materialised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_encode, "STREAM_CHUNK_ROWS", 3)
    produced: List[int] = []

    def numbers() -> Iterator[Dict[str, int]]:
        for i in range(8):
            produced.append(i)
            yield {"i": i}

    frames = encode(numbers(), pa=pa)
    first = next(frames)
    # Only the first chunk was pulled from the user's generator when the first frame left.
    assert produced == [0, 1, 2] and first.rows == 3
    rest = list(frames)
    assert [f.rows for f in [first, *rest]] == [3, 3, 2]
    assert decode([first, *rest]) == [{"i": i} for i in range(8)]


def test_keys_first_seen_later_rows_include_them_arrow_names_the_column(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_encode, "STREAM_CHUNK_ROWS", 2)

    def rows() -> Iterator[Dict[str, Any]]:
        yield {"a": 1}
        yield {"a": 2, "b": None}  # same chunk as the first row: just another column
        yield {"a": 3, "c": "late"}

    frames = list(encode(rows(), pa=None))
    assert [json.loads(f.payload)["columns"] for f in frames] == [["a", "b"], ["a", "b", "c"]]
    assert json.loads(frames[1].payload)["types"] == ["int", "null", "str"]
    assert decode(frames) == [{"a": 1, "b": None}, {"a": 2, "b": None}, {"a": 3, "b": None, "c": "late"}]

    with pytest.raises(sluice.ResultError, match=r"column 'c' first appears after row 2.*columns=\[\.\.\.\]"):
        list(encode(rows(), pa=pa))
    # Declaring the columns up front makes the same generator work with Arrow.
    got = decode(list(encode(rows(), columns=["a", "b", "c"], pa=pa)))
    assert got[2] == {"a": 3, "b": None, "c": "late"}


def test_type_change_after_the_first_chunk_names_column_and_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_encode, "STREAM_CHUNK_ROWS", 2)
    data = [{"n": 1}, {"n": 2}, {"n": 3}, {"n": "four"}]
    for arrow in (pa, None):
        with pytest.raises(sluice.ResultError, match=r"column 'n' holds int values, but row 4 has 'four' \(str\)"):
            list(encode(iter(data), pa=arrow))


def test_large_tables_are_cut_into_bounded_batches() -> None:
    n = _encode.ARROW_BATCH_ROWS * 2 + 5
    frames = list(encode(pa.table({"i": list(range(n))}), pa=pa))
    assert [f.rows for f in frames] == [_encode.ARROW_BATCH_ROWS, _encode.ARROW_BATCH_ROWS, 5]
    assert arrow_rows([frames[-1].payload]) == [{"i": n - 5 + k} for k in range(5)]


def test_oversized_frames_are_split_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_encode, "_FRAME_BUDGET", 4000)
    rows = [{"s": "x" * 500} for _ in range(20)]
    for arrow in (pa, None):
        frames = list(encode(rows, pa=arrow))
        assert len(frames) > 1 and all(len(f.payload) <= 4000 for f in frames)
        assert decode(frames) == rows


@pytest.mark.parametrize(
    "result, message",
    [
        ({1, 2}, r"returned a set"),
        (42, r"returned a single value \(an int\)"),
        ("text", r"single value"),
        (object(), r"returned an object, which Sluice cannot serve; feeds may return a list of dicts"),
        ([1, 2], r"row 1 is an int; rows must be dicts"),
        ([(1, 2)], r"no column names.*columns=\["),
        ({"a": [1, 2], "b": [1]}, r"different lengths \('a' has 2, 'b' has 1\)"),
        ({"a": 1}, r"column 'a' is an int, not a list"),
    ],
)
def test_unsupported_results_say_what_is_supported(result: Any, message: str) -> None:
    with pytest.raises(sluice.ResultError, match=message):
        list(encode(result, pa=pa))


def test_tuples_must_match_declared_columns() -> None:
    with pytest.raises(sluice.ResultError, match=r"row 2 has 1 values but columns=\[\.\.\.\] names 2: a, b"):
        list(encode([(1, 2), (3,)], columns=["a", "b"], pa=None))
    with pytest.raises(sluice.ResultError, match=r"row 1 has key 'z', which is not in the feed's columns"):
        list(encode([{"z": 1}], columns=["a"], pa=None))


def test_materialised_sql_query_keeps_columns_even_when_empty(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("create table t (a integer, b text)")
        c.execute("insert into t values (1, 'x'), (2, null)")
    sluice.configure(sources={"t": str(db)})
    q = sluice.sql("t", "select a, b from t where a >= :lo order by a", lo=1)
    assert decode(list(encode(q, pa=pa))) == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]
    assert decode(list(encode(q, pa=None))) == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]
    (frame,) = encode(sluice.sql("t", "select a, b from t where a > :lo", lo=5), pa=None)
    assert json.loads(frame.payload)["columns"] == ["a", "b"]


SMALL_CASES: List[Any] = [
    [{"greeting": "Hello, world!", "length": 5}],
    [{"a": 1, "b": None}, {"a": None, "b": "x"}, {"c": True}],
    [{"x": 1}, {"x": 2.5}, {"x": None}],  # int and float make a float column
    [{"x": None}, {"x": None}],  # a column of nulls only
    [{"k": "é ✓ \"quoted\"\n"}],
    [{"a": 1, "b": 2}, {"b": 3, "a": 4}],  # key order differs between rows
    # Everything below is unusual: the fast path declines and the general path decides.
    [{"d": dt.date(2024, 1, 2)}],
    [{"x": 1}, {"x": "one"}],
    [{"x": True}, {"x": 1}],
    [{"x": float("nan")}],
    [{"n": {"nested": [1, 2]}}],
    [{"x": decimal.Decimal("1.5")}],
    [{1: "non-string key"}],
    [(1, 2)],
    [],
]


@pytest.mark.parametrize("rows", SMALL_CASES, ids=range(len(SMALL_CASES)))
def test_small_rows_fast_path_is_identical_to_the_general_path(rows: List[Any]) -> None:
    quick = _encode.small_rows_frame(rows)
    if quick is None:
        return
    general = list(encode(rows, pa=None))
    assert [quick] == general


def test_small_rows_fast_path_takes_the_common_cases() -> None:
    # If it silently declined everything, the test above would prove nothing.
    taken = [i for i, rows in enumerate(SMALL_CASES) if _encode.small_rows_frame(rows) is not None]
    assert taken == [0, 1, 2, 3, 4, 5]
