"""sluice.sql / sluice.connect against a real SQLite file and the real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from pathlib import Path

import pytest

import sluice
from sluice._sql import call_sources, named_to_pyformat

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("create table sales (day text, region text, amount real)")
        db.executemany(
            "insert into sales values (?, ?, ?)",
            [("2024-01-01", "EU", 10.0), ("2024-01-02", "EU", 12.5), ("2024-01-02", "US", 7.0), ("2023-12-31", "EU", 1.0)],
        )
    db.close()
    return path


def test_named_to_pyformat_skips_literals_comments_casts_and_escapes_percent() -> None:
    sql = ("select ':no', \"x:y\", a::text, 'it''s :not %', b like 'a%' -- :nope %\n"
           " from t /* :nor % */ where b = :yes and c = :yes and d >= :since and e % 2 = 0")
    text, names = named_to_pyformat(sql)
    assert names == ["yes", "since"]
    assert text == (
        "select ':no', \"x:y\", a::text, 'it''s :not %%', b like 'a%%' -- :nope %%\n"
        " from t /* :nor %% */ where b = %(yes)s and c = %(yes)s and d >= %(since)s and e %% 2 = 0"
    )


def test_sql_requires_a_value_for_every_placeholder() -> None:
    with pytest.raises(sluice.SourceError, match=r"uses :since but no value was passed.*since=\.\.\."):
        sluice.sql("shop", "select * from sales where day >= :since and region = :region", region="EU")


def test_sqlite_query_materialises_every_way(shop: Path) -> None:
    sluice.configure(sources={"shop": str(shop)})
    q = sluice.sql("shop", "select day, amount from sales where region = :region and day >= :since order by day",
                   region="EU", since=dt.date(2024, 1, 1))
    expected = [{"day": "2024-01-01", "amount": 10.0}, {"day": "2024-01-02", "amount": 12.5}]
    assert list(q) == expected
    assert q.rows() == expected
    assert q.tuples() == (["day", "amount"], [("2024-01-01", 10.0), ("2024-01-02", 12.5)])
    assert q.df().to_dict("records") == expected
    assert q.arrow().to_pylist() == expected
    assert q.pl().to_dicts() == expected
    # Values are bound: a hostile value is just a value.
    assert sluice.sql("shop", "select count(*) n from sales where region = :r", r="EU' or '1'='1").rows() == [{"n": 0}]


def test_sqlite_list_parameters_bind_as_json_for_json_each(shop: Path) -> None:
    sluice.configure(sources={"shop": {"kind": "sqlite", "path": str(shop)}})
    q = sluice.sql("shop", "select distinct region from sales where region in (select value from json_each(:regions)) order by 1",
                   regions=["US", "XX"])
    assert q.rows() == [{"region": "US"}]


def test_sqlite_sources_open_read_only(shop: Path) -> None:
    sluice.configure(sources={"shop": str(shop)})
    conn = sluice.connect("shop")
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("delete from sales")
    finally:
        conn.close()
    with pytest.raises(sluice.SourceError, match="cannot open SQLite data source 'gone'"):
        sluice.configure(sources={"gone": str(shop.parent / "missing.sqlite")})
        sluice.connect("gone")


def test_unknown_source_lists_available_names(shop: Path) -> None:
    sluice.configure(sources={"shop": str(shop), "warehouse": PG_URL})
    with pytest.raises(sluice.SourceError, match=r"unknown data source 'nope' \(available: shop, warehouse\).*sluice.configure"):
        sluice.connect("nope")


def test_call_sources_override_configured_ones_only_during_the_call(shop: Path) -> None:
    sluice.configure(sources={"local": str(shop)})
    with call_sources({"shop": {"kind": "sqlite", "path": str(shop)}}):
        assert sluice.sql("shop", "select count(*) n from sales").rows() == [{"n": 4}]
        with pytest.raises(sluice.SourceError, match=r"'local' \(available: shop\).*grant"):
            sluice.connect("local")
    with pytest.raises(sluice.SourceError, match="available: local"):
        sluice.connect("shop")


def test_frame_json_tags_dates_and_keeps_lists() -> None:
    aware = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    q = sluice.sql("w", "select :a, :b, :c, :d, :e", a=dt.date(2024, 1, 2), b=dt.datetime(2024, 1, 2, 3, 4, 5), c=("x", "y"), d=None, e=aware)
    assert q.to_frame_json() == {
        "source": "w",
        "query": "select :a, :b, :c, :d, :e",
        "params": {
            "a": {"$date": "2024-01-02"},
            "b": {"$timestamp": "2024-01-02T03:04:05"},
            "c": ["x", "y"],
            "d": None,
            "e": {"$timestamptz": "2024-01-02T03:04:05+02:00"},
        },
    }


def test_postgres_connect_and_named_parameters_against_real_server() -> None:
    pytest.importorskip("psycopg", reason="psycopg is needed to talk to PostgreSQL")
    sluice.configure(sources={"warehouse": PG_URL})
    table = f"sluice_test_{uuid.uuid4().hex[:12]}"
    conn = sluice.connect("warehouse")
    try:
        with conn.cursor() as cur:
            cur.execute(f"create table {table} (id int primary key, region text, day date, note text)")
            cur.execute(f"insert into {table} values (1, 'EU', '2024-01-01', '50%% off'), (2, 'EU', '2024-02-01', 'x:y'), (3, 'US', '2024-03-01', null)")
        conn.commit()
        q = sluice.sql(
            "warehouse",
            f"select id, day::text as day, note from {table} "
            "where region = any(:regions) and day >= :since and coalesce(note, '') not like '%:nothing%' order by id",
            regions=["EU"], since=dt.date(2024, 1, 15),
        )
        assert q.rows() == [{"id": 2, "day": "2024-02-01", "note": "x:y"}]
        q = sluice.sql("warehouse", f"select id, day from {table} where note like '50%' or id = :id order by id", id=3)
        assert q.rows() == [{"id": 1, "day": dt.date(2024, 1, 1)}, {"id": 3, "day": dt.date(2024, 3, 1)}]
        assert q.arrow().column("day").to_pylist() == [dt.date(2024, 1, 1), dt.date(2024, 3, 1)]
    finally:
        with conn.cursor() as cur:
            cur.execute(f"drop table if exists {table}")
        conn.commit()
        conn.close()


def test_postgres_without_a_driver_says_to_add_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_drivers(name: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if name in ("psycopg", "psycopg2"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_drivers)
    sluice.configure(sources={"warehouse": PG_URL})
    with pytest.raises(sluice.SourceError, match=r"add \"psycopg\[binary\]\" to the dependencies in the script's '# /// script' block"):
        sluice.connect("warehouse")
