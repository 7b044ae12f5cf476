"""The two feeds as a typical FastAPI user writes them (served by uvicorn).

Plain `def` endpoints with synchronous psycopg, which FastAPI runs in its thread pool (the
pattern its docs recommend for blocking drivers). CSV: the body is built in memory with the
csv module and returned as a Response. JSON: JSONResponse of a list of dicts with Decimal ->
float and datetime -> ISO 8601 converted in a comprehension (cheaper than jsonable_encoder,
which is what a bare `return rows` would run).
"""

import csv
import io
import os

import psycopg
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from psycopg.rows import dict_row

DSN = os.environ["BENCH_PG_DSN"]
QUERY = "select * from orders"

app = FastAPI()


@app.get("/hello")
def hello():
    name = "world"
    return JSONResponse([{"greeting": f"Hello, {name}!", "length": len(name)}])


@app.get("/extract.csv")
def extract_csv():
    with psycopg.connect(DSN) as conn, conn.cursor() as cur:
        cur.execute(QUERY)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([d.name for d in cur.description])
        w.writerows(cur)
    return Response(buf.getvalue(), media_type="text/csv")


@app.get("/extract.json")
def extract_json():
    with psycopg.connect(DSN) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(QUERY)
        rows = [
            {**r, "amount": float(r["amount"]), "created_at": r["created_at"].isoformat()}
            for r in cur
        ]
    return JSONResponse(rows)
