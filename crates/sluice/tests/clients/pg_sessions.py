"""Session statements BI tools send to Sluice's PostgreSQL endpoint, replayed with
psycopg 3, then SQLAlchemy's inspector. Prints one JSON report on its last line.

Usage: pg_sessions.py HOST PORT KEY
"""

import json
import sys

import psycopg
import sqlalchemy as sa

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3]
report = {"statements": {}}

# Metabase (through pgjdbc): session SETs, read-only transactions; Npgsql's DISCARD ALL;
# savepoints as psycopg and SQLAlchemy nest transactions.
METABASE = [
    "SET extra_float_digits = 3",
    "SET application_name = 'Metabase v0.50.0'",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "SET TIME ZONE 'UTC'",
    "SET statement_timeout = 1200000",
    "SET search_path TO public",
    "BEGIN READ ONLY",
    "SELECT count(*) FROM sales_by_region WHERE region = 'APAC'",
    "SAVEPOINT s1",
    "ROLLBACK TO SAVEPOINT s1",
    "RELEASE SAVEPOINT s1",
    "COMMIT",
    "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY",
    "COMMIT",
    "DISCARD ALL",
]
with psycopg.connect(
    host=host, port=port, user="metabase", password=key, dbname="demo", autocommit=True
) as conn:
    for s in METABASE:
        cur = conn.execute(s)
        report["statements"][s] = [cur.statusmessage, conn.info.transaction_status.name]
        if cur.description:
            report["apac_count"] = cur.fetchone()[0]

# Tableau's connect check: a temporary table, GROUP BY by position, DROP.
TABLEAU = [
    'CREATE LOCAL TEMPORARY TABLE "#Tableau_1_Connect" ("COL" INTEGER) ON COMMIT PRESERVE ROWS',
    'INSERT INTO "#Tableau_1_Connect" VALUES (1), (1), (2)',
    'SELECT "COL" FROM "#Tableau_1_Connect" GROUP BY 1 ORDER BY 1',
    'DROP TABLE "#Tableau_1_Connect"',
]
with psycopg.connect(
    host=host, port=port, user="tableau", password=key, dbname="demo", autocommit=True
) as conn:
    for s in TABLEAU:
        cur = conn.execute(s)
        report["statements"][s] = [cur.statusmessage]
        if cur.description:
            report["tableau_rows"] = [r[0] for r in cur.fetchall()]
    # The temporary table is gone, the feeds are still there.
    try:
        conn.execute('SELECT * FROM "#Tableau_1_Connect"')
        report["dropped"] = False
    except psycopg.Error:
        report["dropped"] = True

engine = sa.create_engine(f"postgresql+psycopg://sqlalchemy:{key}@{host}:{port}/demo")
inspector = sa.inspect(engine)
report["server_version"] = list(engine.dialect.server_version_info)
report["schemas"] = inspector.get_schema_names()
report["tables"] = inspector.get_table_names()
with engine.connect() as conn:
    report["apac_sqlalchemy"] = conn.execute(
        sa.text("select count(*) from sales_by_region where region = :r"), {"r": "APAC"}
    ).scalar()
print(json.dumps(report))
