"""The result column names psycopg 3 sees for some queries. Prints one JSON report on its
last line: for each query, the list of column names (or the error).

Usage: pg_colnames.py CONNINFO QUERIES_JSON [--create]
  --create: first create a temporary table sales_by_region with the feed's columns (to
  ask a real PostgreSQL the same queries).
"""

import json
import sys

import psycopg

conninfo, queries = sys.argv[1], json.loads(sys.argv[2])
report = []
with psycopg.connect(conninfo, autocommit=True) as conn:
    if "--create" in sys.argv[3:]:
        conn.execute(
            "create temporary table sales_by_region"
            " (day date, region text, channel text, amount double precision, since date)"
        )
    for q in queries:
        try:
            cur = conn.execute(q)
            report.append([d.name for d in cur.description])
        except psycopg.Error as e:
            report.append({"error": str(e)})
print(json.dumps(report))
