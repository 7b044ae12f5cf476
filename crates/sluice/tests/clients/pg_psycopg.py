"""psycopg 3 against Sluice's PostgreSQL endpoint: the extended protocol with bound
parameters and server-side prepared statements. Prints one JSON report on its last line.

Usage: pg_psycopg.py HOST PORT KEY
"""

import json
import sys

import psycopg

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3]
report = {}
with psycopg.connect(host=host, port=port, user="psycopg", password=key, dbname="demo") as conn:
    q = "select day, region, channel, amount from sales_by_region where region = %s order by day, channel"
    # prepare=True: Parse once as a named statement, then Bind/Execute for each value.
    for region in ["APAC", "EU"]:
        cur = conn.execute(q, (region,), prepare=True)
        rows = cur.fetchall()
        report[region] = {
            "rows": len(rows),
            "regions": sorted({r[1] for r in rows}),
            "first_day": rows[0][0].isoformat() if rows else None,
            "total": round(sum(r[3] for r in rows), 2),
        }
    report["columns"] = [d.name for d in cur.description]
    # The statement really was prepared on the server (psycopg names it _pg3_N).
    report["prepared"] = conn.execute(
        "select count(*) from sales_by_region where region = %s", ("APAC",), prepare=True
    ).fetchone()[0]
    # An aggregate with two parameters of different types.
    cur = conn.execute(
        "select count(*), min(day) from sales_by_region where region = %s and since = %s",
        ("APAC", "2024-06-01"),
    )
    n, first = cur.fetchone()
    report["since"] = {"rows": n, "first_day": first.isoformat() if first else None}
print(json.dumps(report))
