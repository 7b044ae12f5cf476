"""psqlODBC (Debian's odbc-postgresql) through unixODBC and pyodbc: SQLTables,
SQLColumns, SQLPrimaryKeys and a SELECT with a bound parameter. Prints one JSON report on
its last line.

Usage: pg_odbc.py HOST PORT DATABASE USER PASSWORD TABLE [--create KEYED]

The driver is named by its path in a DSN-less connection string (SLUICE_ODBC_DRIVER, or
Debian's path). With --create (against a real PostgreSQL) TABLE is created first with the
columns day, region, channel, units, amount, since, and dropped at the end.
"""

import json
import os
import sys

import pyodbc

host, port, db, user, password, table = sys.argv[1:7]
create = "--create" in sys.argv[7:]
driver = os.environ.get(
    "SLUICE_ODBC_DRIVER", "/usr/lib/x86_64-linux-gnu/odbc/psqlodbcw.so"
)
if not os.path.exists(driver):
    sys.exit(f"psqlODBC driver not found at {driver}: apt-get install odbc-postgresql unixodbc")

conn = pyodbc.connect(
    f"DRIVER={{{driver}}};SERVER={host};PORT={port};DATABASE={db};UID={user};PWD={password};SSLMODE=disable",
    autocommit=True,
    timeout=30,
)
report = {"dbms": conn.getinfo(pyodbc.SQL_DBMS_NAME) + " " + conn.getinfo(pyodbc.SQL_DBMS_VER)}
cur = conn.cursor()
if create:
    cur.execute(
        f"CREATE TABLE {table} (day date, region text, channel text, units bigint, amount double precision, since date)"
    )


def shape(description):
    """Result columns as [name, Python type name] (pyodbc maps the ODBC SQL type)."""
    return [[d[0], d[1].__name__] for d in description]


try:
    rows = cur.tables(schema="public", tableType="TABLE").fetchall()
    report["tables_shape"] = shape(cur.description)
    report["tables"] = sorted([r.table_schem, r.table_name, r.table_type] for r in rows)

    rows = cur.columns(table=table, schema="public").fetchall()
    report["columns_shape"] = shape(cur.description)
    report["columns"] = [
        [r.column_name, r.data_type, r.type_name, r.ordinal_position, r.nullable] for r in rows
    ]

    if not create:
        cur.execute(
            f"select count(*) as n, min(region) as lo, max(region) as hi, sum(amount) as total from {table} where region = ?",
            "APAC",
        )
        n, lo, hi, total = cur.fetchone()
        report["select"] = {"n": n, "lo": lo, "hi": hi, "total": float(total)}
finally:
    if create:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
    conn.close()
print(json.dumps(report))
