"""The catalog queries BI clients send, answered by Sluice and by a real PostgreSQL 15:
column names and type OIDs of each result must agree. Prints one JSON report.

Usage: pg_catalog_shapes.py HOST PORT KEY POSTGRES_URL
"""

import json
import sys

import psycopg

host, port, key, pg_url = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

# psql 15's \dt, \l and \d TABLE (psql -E), SQLAlchemy's table names, psycopg's TypeInfo.
QUERIES = {
    r"\dt": """SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2""",
    r"\l": """SELECT d.datname as "Name",
       pg_catalog.pg_get_userbyid(d.datdba) as "Owner",
       pg_catalog.pg_encoding_to_char(d.encoding) as "Encoding",
       d.datcollate as "Collate",
       d.datctype as "Ctype",
       pg_catalog.array_to_string(d.datacl, E'\\n') AS "Access privileges"
FROM pg_catalog.pg_database d
ORDER BY 1""",
    r"\d (table)": """SELECT c.oid,
  n.nspname,
  c.relname
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname OPERATOR(pg_catalog.~) '^(sales_by_region)$' COLLATE pg_catalog.default
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 2, 3""",
    r"\d (columns)": """SELECT a.attname,
  pg_catalog.format_type(a.atttypid, a.atttypmod),
  a.attnotnull,
  a.attnum
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = (SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname = 'sales_by_region') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum""",
    "sqlalchemy table names": """SELECT pg_catalog.pg_class.relname
FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace
WHERE pg_catalog.pg_class.relkind = ANY (ARRAY['r', 'p']) AND pg_catalog.pg_class.relpersistence != 't' AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != 'pg_catalog'""",
    "information_schema.columns": """SELECT table_schema, table_name, column_name, ordinal_position, is_nullable, data_type
FROM information_schema.columns WHERE table_name = 'sales_by_region' ORDER BY ordinal_position""",
}


def shapes(conn):
    out = {}
    for name, q in QUERIES.items():
        try:
            cur = conn.execute(q)
            rows = cur.fetchall()
            out[name] = {
                "columns": [[d.name, d.type_code] for d in cur.description],
                "rows": len(rows),
            }
        except psycopg.Error as e:
            out[name] = {"error": str(e).splitlines()[0]}
            conn.rollback()
    return out


report = {}
with psycopg.connect(host=host, port=port, user="x", password=key, dbname="demo") as conn:
    report["sluice"] = shapes(conn)
with psycopg.connect(pg_url) as conn:
    conn.execute(
        "CREATE TEMP TABLE sales_by_region (day date, region text, channel text, units bigint, amount double precision, since date)"
    )
    report["postgres"] = shapes(conn)
print(json.dumps(report))
