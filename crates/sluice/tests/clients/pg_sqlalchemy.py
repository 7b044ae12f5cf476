"""SQLAlchemy 2's inspector (postgresql+psycopg): get_table_names, get_columns and
get_pk_constraint, against Sluice and against a real PostgreSQL with tables of the same
columns. The result columns (names, type OIDs) of every query the inspector sends are
recorded too. Prints one JSON report on its last line.

Usage: pg_sqlalchemy.py HOST PORT KEY POSTGRES_URL TABLE KEYED
"""

import json
import sys
import uuid

import sqlalchemy as sa

host, port, key, pg_url, table, keyed = sys.argv[1:7]


def inspect(engine, table, keyed):
    shapes = []

    @sa.event.listens_for(engine, "after_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):
        if cursor.description:
            shapes.append([[d.name, d.type_code] for d in cursor.description])

    inspector = sa.inspect(engine)
    out = {"tables": sorted(inspector.get_table_names())}
    shapes.clear()
    out["columns"] = [
        {k: str(v) for k, v in c.items() if k in ("name", "type", "nullable", "default", "autoincrement", "comment")}
        for c in inspector.get_columns(table)
    ]
    out["columns_shapes"] = list(shapes)
    shapes.clear()
    out["pk"] = {t: inspector.get_pk_constraint(t) for t in (table, keyed)}
    out["pk_shapes"] = list(shapes)
    engine.dispose()
    return out


report = {}
engine = sa.create_engine(f"postgresql+psycopg://sqlalchemy:{key}@{host}:{port}/demo")
report["sluice"] = inspect(engine, table, keyed)

# The same columns in a real PostgreSQL, in throwaway tables.
suffix = uuid.uuid4().hex[:10]
pg_table, pg_keyed = f"sluice_sa_t_{suffix}", f"sluice_sa_k_{suffix}"
cols = "day date, region text, channel text, units bigint, amount double precision, since date"
pg = sa.create_engine(pg_url.replace("postgres://", "postgresql+psycopg://", 1))
with pg.begin() as conn:
    conn.execute(sa.text(f"CREATE TABLE {pg_table} ({cols})"))
    conn.execute(sa.text(f"CREATE TABLE {pg_keyed} ({cols}, PRIMARY KEY (region, day, channel))"))
try:
    report["postgres"] = inspect(pg, pg_table, pg_keyed)
    report["postgres"]["pk"] = {
        "table": report["postgres"]["pk"][pg_table],
        "keyed": report["postgres"]["pk"][pg_keyed],
    }
finally:
    with pg.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {pg_table}, {pg_keyed}"))
    pg.dispose()
print(json.dumps(report, default=str))
