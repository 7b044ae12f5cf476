"""The two feeds as a typical Flask user writes them (served by gunicorn, sync workers).

CSV: the body is built in memory with the csv module (io.StringIO), then returned, which is
what most Flask code does. JSON: jsonify of a list of dicts, with Decimal -> float and
datetime -> ISO 8601 converted in a comprehension (Flask's default would emit Decimal as a
string and datetimes in RFC 822 form, which no BI tool wants).
"""

import csv
import io
import os

import psycopg
from flask import Flask, Response, jsonify
from psycopg.rows import dict_row

DSN = os.environ["BENCH_PG_DSN"]
QUERY = "select * from orders"

app = Flask(__name__)


@app.get("/hello")
def hello():
    name = "world"
    return jsonify([{"greeting": f"Hello, {name}!", "length": len(name)}])


@app.get("/extract.csv")
def extract_csv():
    with psycopg.connect(DSN) as conn, conn.cursor() as cur:
        cur.execute(QUERY)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([d.name for d in cur.description])
        w.writerows(cur)
    return Response(buf.getvalue(), mimetype="text/csv")


@app.get("/extract.json")
def extract_json():
    with psycopg.connect(DSN) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(QUERY)
        rows = [
            {**r, "amount": float(r["amount"]), "created_at": r["created_at"].isoformat()}
            for r in cur
        ]
    return jsonify(rows)


@app.get("/bi.json")
def bi_json():
    """What an analyst writes by hand to serve a table to a BI tool: all rows, jsonify."""
    with psycopg.connect(DSN) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("select * from orders_1m")
        rows = [
            {**r, "amount": float(r["amount"]), "created_at": r["created_at"].isoformat()}
            for r in cur
        ]
    return jsonify(rows)
