"""Npgsql's start-up, replayed with psycopg 3: the type-loading queries Npgsql (7/8)
sends on its first connection, as PostgresDatabaseInfo.cs builds them for a PostgreSQL 15
server (ranges and multiranges on, LoadTableComposites off), then the DISCARD ALL it
resets pooled connections with. Each query runs over the extended protocol (a named
prepared statement, text results as Npgsql reads them) and, as Npgsql really sends them,
as one simple-protocol batch. The same against a real PostgreSQL for the shapes. Prints
one JSON report on its last line.

Usage: pg_npgsql.py HOST PORT KEY POSTGRES_URL
"""

import json
import sys

import psycopg

host, port, key, pg_url = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

# The queries as Npgsql's PostgresDatabaseInfo.GenerateLoadTypesQuery builds them for a
# PostgreSQL 15 server: withRange and withMultirange true, LoadTableComposites false.
WITH_RANGE = "WHEN typ.typtype='r' THEN rngsubtype"
WITH_MULTIRANGE = "WHEN typ.typtype='m' THEN (SELECT rngtypid FROM pg_range WHERE rngmultitypid = typ.oid)"
RANGE_JOIN = "LEFT JOIN pg_range ON (pg_range.rngtypid = typ.oid)"
COMPOSITES = "relkind='c'"
ELEM_COMPOSITES = "elemrelkind='c'"
LOAD_TYPES = f"""
SELECT ns.nspname, t.oid, t.typname, t.typtype, t.typnotnull, t.elemtypoid
FROM (
    -- Arrays have typtype=b - this subquery identifies them by their typreceive and converts their typtype to a
    -- We first do this for the type (innerest-most subquery), and then for its element type
    -- This also returns the array element, range subtype and domain base type as elemtypoid
    SELECT
        typ.oid, typ.typnamespace, typ.typname, typ.typtype, typ.typrelid, typ.typnotnull, typ.relkind,
        elemtyp.oid AS elemtypoid, elemtyp.typname AS elemtypname, elemcls.relkind AS elemrelkind,
        CASE WHEN elemproc.proname='array_recv' THEN 'a' ELSE elemtyp.typtype END AS elemtyptype
    FROM (
        SELECT typ.oid, typnamespace, typname, typrelid, typnotnull, relkind, typelem AS elemoid,
            CASE WHEN proc.proname='array_recv' THEN 'a' ELSE typ.typtype END AS typtype,
            CASE
                WHEN proc.proname='array_recv' THEN typ.typelem
                {WITH_RANGE}
                {WITH_MULTIRANGE}
                WHEN typ.typtype='d' THEN typ.typbasetype
            END AS elemtypoid
        FROM pg_type AS typ
        LEFT JOIN pg_class AS cls ON (cls.oid = typ.typrelid)
        LEFT JOIN pg_proc AS proc ON proc.oid = typ.typreceive
        {RANGE_JOIN}
    ) AS typ
    LEFT JOIN pg_type AS elemtyp ON elemtyp.oid = elemtypoid
    LEFT JOIN pg_class AS elemcls ON (elemcls.oid = elemtyp.typrelid)
    LEFT JOIN pg_proc AS elemproc ON elemproc.oid = elemtyp.typreceive
) AS t
JOIN pg_namespace AS ns ON (ns.oid = typnamespace)
WHERE
    typtype IN ('b', 'r', 'm', 'e', 'd') OR -- Base, range, multirange, enum, domain
    (typtype = 'c' AND {COMPOSITES}) OR -- User-defined free-standing composites (not table composites) by default
    (typtype = 'p' AND typname IN ('record', 'void')) OR -- Some special supported pseudo-types
    (typtype = 'a' AND (  -- Array of...
        elemtyptype IN ('b', 'r', 'm', 'e', 'd') OR -- Array of base, range, multirange, enum, domain
        (elemtyptype = 'p' AND elemtypname IN ('record', 'void')) OR -- Arrays of special supported pseudo-types
        (elemtyptype = 'c' AND {ELEM_COMPOSITES}) -- Array of user-defined free-standing composites (not table composites) by default
    ))
ORDER BY CASE
       WHEN typtype IN ('b', 'e', 'p') THEN 0           -- First base types, enums, pseudo-types
       WHEN typtype = 'r' THEN 1                        -- Ranges after
       WHEN typtype = 'm' THEN 2                        -- Multiranges after
       WHEN typtype = 'c' THEN 3                        -- Composites after
       WHEN typtype = 'd' AND elemtyptype <> 'a' THEN 4 -- Domains over non-arrays after
       WHEN typtype = 'a' THEN 5                        -- Arrays after
       WHEN typtype = 'd' AND elemtyptype = 'a' THEN 6  -- Domains over arrays last
END;"""

LOAD_COMPOSITE_TYPES = f"""
-- Load field definitions for (free-standing) composite types
SELECT typ.oid, att.attname, att.atttypid
FROM pg_type AS typ
JOIN pg_namespace AS ns ON (ns.oid = typ.typnamespace)
JOIN pg_class AS cls ON (cls.oid = typ.typrelid)
JOIN pg_attribute AS att ON (att.attrelid = typ.typrelid)
WHERE
  (typ.typtype = 'c' AND {"cls.relkind='c'"}) AND
  attnum > 0 AND     -- Don't load system attributes
  NOT attisdropped
ORDER BY typ.oid, att.attnum;"""

LOAD_ENUM_FIELDS = """
-- Load enum fields
SELECT pg_type.oid, enumlabel
FROM pg_enum
JOIN pg_type ON pg_type.oid=enumtypid
ORDER BY oid, enumsortorder;"""

QUERIES = {
    "version": "SELECT version();",
    "types": LOAD_TYPES,
    "composites": LOAD_COMPOSITE_TYPES,
    "enums": LOAD_ENUM_FIELDS,
}
# StringBuilder.AppendLine of each, sent as one Query message.
BATCH = "".join(q + "\n" for q in QUERIES.values())


def result(cur):
    rows = cur.fetchall()
    return {
        "columns": [[d.name, d.type_code] for d in cur.description],
        "rows": [list(r) for r in rows],
    }


def replay(conn):
    out = {"extended": {}, "simple": []}
    for name, q in QUERIES.items():
        try:
            # prepare=True: Parse/Describe/Bind/Execute of a named statement.
            out["extended"][name] = result(conn.execute(q, prepare=True))
        except psycopg.Error as e:
            out["extended"][name] = {"error": str(e).splitlines()[0]}
    try:
        # No parameters, not prepared: psycopg sends the batch as one simple Query.
        cur = conn.execute(BATCH)
        while True:
            out["simple"].append(result(cur))
            if not cur.nextset():
                break
    except psycopg.Error as e:
        out["simple"] = {"error": str(e).splitlines()[0]}
    statuses = []
    for how in ("simple", "extended"):
        try:
            cur = conn.execute("DISCARD ALL", prepare=(how == "extended"))
            statuses.append([how, cur.statusmessage, conn.info.transaction_status.name])
        except psycopg.Error as e:
            statuses.append([how, "error: " + str(e).splitlines()[0]])
    out["discard"] = statuses
    out["after_discard"] = conn.execute("select 1 as one").fetchone()[0]
    return out


report = {}
with psycopg.connect(
    host=host, port=port, user="npgsql", password=key, dbname="demo", autocommit=True
) as conn:
    report["sluice"] = replay(conn)
with psycopg.connect(pg_url, autocommit=True) as conn:
    report["postgres"] = replay(conn)
print(json.dumps(report, default=str))
