"""psycopg 3 (its libpq negotiates SCRAM-SHA-256) logging in to Sluice's PostgreSQL
endpoint in several ways. Prints one JSON report on its last line: for each case, whether
the login worked, whether TLS was in use, the `hello` feed's greeting, or the error.

Usage: pg_scram.py HOST PORT CASES_JSON
  CASES_JSON: a list of {"user", "password", "sslmode", "require_auth"?}; require_auth
  makes libpq refuse any other authentication method than the one named.
"""

import json
import sys

import psycopg

host, port, cases = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
report = []
for case in cases:
    params = dict(
        host=host,
        port=port,
        user=case["user"],
        password=case["password"],
        dbname="demo",
        sslmode=case["sslmode"],
        connect_timeout=20,
    )
    if case.get("require_auth"):
        params["require_auth"] = case["require_auth"]
    try:
        with psycopg.connect(**params) as conn:
            greeting = conn.execute("select greeting from hello").fetchone()[0]
            report.append(
                {"ok": True, "ssl": conn.pgconn.ssl_in_use, "greeting": greeting}
            )
    except psycopg.OperationalError as e:
        report.append({"ok": False, "error": str(e)})
print(json.dumps(report))
