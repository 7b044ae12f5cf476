"""psycopg 3's `cursor.copy()` against Sluice's PostgreSQL endpoint, compared with the same
COPY on PostgreSQL itself: rows read typed (text and binary format), the raw bytes, the
row count of the command tag, a parameter bound client-side, and COPY FROM refused with
the connection still usable. Prints one JSON report on its last line.

Usage: pg_copy.py HOST PORT KEY PG_URL TABLE
(the feed `copy_src(grp)` reads TABLE of the PostgreSQL at PG_URL)
"""

import json
import sys
from datetime import datetime, timezone

import psycopg
from psycopg import pq

host, port, key, pg_url, table = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
TYPES = ["int8", "text", "text", "numeric", "timestamptz", "date", "bool", "float8", "timestamp"]
report = {}


def norm(rows):
    """Rows as comparable text: instants in UTC (the two servers may name their zone
    differently), and repr so that NaN equals NaN."""
    return repr([
        tuple(v.astimezone(timezone.utc) if isinstance(v, datetime) and v.tzinfo else v for v in r)
        for r in rows
    ])


def copy_rows(cur, sql, params=None, types=TYPES):
    with cur.copy(sql, params) as copy:
        copy.set_types(types)
        return list(copy.rows())


def copy_bytes(cur, sql):
    with cur.copy(sql) as copy:
        return b"".join(bytes(b) for b in copy)


def extended(conn, sql):
    """A COPY over the extended protocol (libpq's PQsendQueryParams: Parse, Bind,
    Describe, Execute, Sync): the result status, each CopyData, the command tag."""
    pg = conn.pgconn
    pg.send_query_params(sql.encode(), None)
    res = pg.get_result()
    out = {"status": pq.ExecStatus(res.status).name, "data": []}
    if res.status == pq.ExecStatus.COPY_OUT:
        while (r := pg.get_copy_data(0))[0] >= 0:
            out["data"].append(bytes(r[1]).decode())
        out["tag"] = pg.get_result().command_status.decode()
    while pg.get_result() is not None:
        pass
    return out


with psycopg.connect(pg_url, autocommit=True, options="-c TimeZone=UTC") as pg, psycopg.connect(
    host=host, port=port, user="psycopg", password=key, dbname="demo", autocommit=True
) as conn:
    cur, pgcur = conn.cursor(), pg.cursor()
    theirs = f"(select * from {table} where grp = 'a' order by id)"
    ours = "(select * from copy_src where grp = 'a' order by id)"
    want = pgcur.execute(theirs[1:-1]).fetchall()

    # Text format, parsed by psycopg into typed values (repr: NaN is not equal to itself).
    rows = copy_rows(cur, f"COPY {ours} TO STDOUT")
    report["text"] = {"rows": len(rows), "equal": norm(rows) == norm(want), "rowcount": cur.rowcount}
    if norm(rows) != norm(want):
        report["text"]["got"], report["text"]["want"] = norm(rows), norm(want)
    # Binary format.
    rows = copy_rows(cur, f"COPY {ours} TO STDOUT (FORMAT BINARY)")
    report["binary"] = {"rows": len(rows), "equal": norm(rows) == norm(want)}
    if norm(rows) != norm(want):
        report["binary"]["got"], report["binary"]["want"] = norm(rows), norm(want)
    # The raw bytes, as psycopg reads them from PostgreSQL.
    for fmt in ("", " (FORMAT csv, HEADER)"):
        mine, pgs = copy_bytes(cur, f"COPY {ours} TO STDOUT{fmt}"), copy_bytes(pgcur, f"COPY {theirs} TO STDOUT{fmt}")
        report[f"raw{fmt}"] = {"equal": mine == pgs, "bytes": len(mine)}
        if mine != pgs:
            report[f"raw{fmt}"]["got"], report[f"raw{fmt}"]["want"] = mine.decode(), pgs.decode()
    # The extended protocol, message for message.
    mine = extended(conn, f"COPY {ours} TO STDOUT (FORMAT csv, HEADER)")
    pgs = extended(pg, f"COPY {theirs} TO STDOUT (FORMAT csv, HEADER)")
    report["extended"] = {"equal": mine == pgs, "status": mine["status"], "messages": len(mine["data"])}
    if mine != pgs:
        report["extended"]["got"], report["extended"]["want"] = mine, pgs
    # A feed parameter bound client-side (psycopg merges COPY's parameters into the text).
    rows = copy_rows(cur, "COPY (select * from copy_src where grp = %s) TO STDOUT", ["b"])
    report["param_b"] = {"rows": len(rows), "groups": sorted({r[1] for r in rows})}
    # The table form, the feed's default parameter.
    rows = copy_rows(cur, "COPY copy_src TO STDOUT")
    report["table"] = {"rows": len(rows), "groups": sorted({r[1] for r in rows})}

    # COPY FROM is refused before any data is sent, and the connection goes on.
    try:
        with cur.copy("COPY copy_src FROM STDIN") as copy:
            copy.write_row((100, "a"))
        report["from_stdin"] = {"refused": False}
    except psycopg.Error as e:
        report["from_stdin"] = {"refused": True, "sqlstate": e.sqlstate, "message": str(e)}
    report["after_error"] = cur.execute("select count(*) from copy_src where grp = 'a'").fetchone()[0]
    # A feed the key cannot see is no table.
    try:
        copy_rows(cur, "COPY (select * from no_such_feed) TO STDOUT", types=["text"])
        report["unknown_feed"] = {"refused": False}
    except psycopg.Error as e:
        report["unknown_feed"] = {"refused": True, "message": str(e)}
    report["after_unknown"] = cur.execute("select 1").fetchone()[0]
print(json.dumps(report))
