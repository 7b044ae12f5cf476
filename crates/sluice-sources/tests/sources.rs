//! Against real databases: a temporary SQLite file and the PostgreSQL on 127.0.0.1:5432
//! (trust auth, user postgres, database `test`). Each test uses its own table names and
//! drops them.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use futures::TryStreamExt;
use serde_json::{Map, Value, json};
use sluice_core::Code;
use sluice_sources::{SourceConfig, Sources};
use sqlx::Connection;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn pg() -> SourceConfig {
    SourceConfig::Postgres { url: PG.into() }
}

/// A table name no other test run uses at the same time.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

async fn pg_exec(sql: &str) {
    let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
}

async fn collect(s: sluice_sources::QueryStream) -> Vec<RecordBatch> {
    s.batches.try_collect().await.unwrap()
}

#[tokio::test]
async fn postgres_types_nulls_and_empty_results() {
    let t = unique("src_types");
    pg_exec(&format!(
        "create table {t} (b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric(12,2), nf numeric,
           tx text, vc varchar(10), ch char(3), nm name, d date, ts timestamp, tz timestamptz, u uuid, j json, jb jsonb);
         insert into {t} values
           (true, 1, 2, 9223372036854775807, 0.1, 2.5, 1234567890.12, 3.14159265358979323846264338327950288419716939937510,
            'héllo, \"world\"', 'v', 'ab', 'nm', '2024-02-29', '2024-01-01 12:34:56.789', '2024-01-01 00:00:00+02',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{\"a\": 1}}', '{{\"b\": [1, 2]}}'),
           (null, null, null, null, null, null, -0.05, -12e30, null, null, null, null, null, null, null, null, null, null);"
    ))
    .await;
    let sources = Sources::new();
    let s = sources
        .query(
            "wh",
            &pg(),
            &format!("select * from {t} order by b nulls last"),
            &Map::new(),
        )
        .await;
    let s = s.unwrap();
    let types: Vec<DataType> = s
        .schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        vec![
            DataType::Boolean,
            DataType::Int64,
            DataType::Int64,
            DataType::Int64,
            DataType::Float64,
            DataType::Float64,
            DataType::Decimal128(12, 2),
            DataType::Utf8,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Utf8,
            DataType::Utf8,
            DataType::Utf8,
        ]
    );
    let batches = collect(s).await;
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(b.num_rows(), 2);
    let col = |name: &str| b.column_by_name(name).unwrap().clone();
    assert!(col("b").as_boolean().value(0));
    assert_eq!(col("i2").as_primitive::<Int64Type>().value(0), 1);
    assert_eq!(col("i8").as_primitive::<Int64Type>().value(0), i64::MAX);
    assert_eq!(col("f4").as_primitive::<Float64Type>().value(0), 0.1);
    assert_eq!(
        col("n").as_primitive::<Decimal128Type>().value(0),
        123456789012
    );
    assert_eq!(col("n").as_primitive::<Decimal128Type>().value(1), -5);
    assert_eq!(
        col("nf").as_string::<i32>().value(0),
        "3.14159265358979323846264338327950288419716939937510"
    );
    assert_eq!(
        col("nf").as_string::<i32>().value(1),
        "-12000000000000000000000000000000"
    );
    assert_eq!(col("tx").as_string::<i32>().value(0), "héllo, \"world\"");
    assert_eq!(col("ch").as_string::<i32>().value(0), "ab ");
    assert_eq!(col("d").as_primitive::<Date32Type>().value(0), 19_782); // 2024-02-29
    assert_eq!(
        col("ts")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_704_112_496_789_000
    );
    assert_eq!(
        col("tz")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_704_060_000_000_000
    );
    assert_eq!(
        col("u").as_string::<i32>().value(0),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    );
    assert_eq!(col("j").as_string::<i32>().value(0), "{\"a\": 1}");
    assert_eq!(col("jb").as_string::<i32>().value(0), "{\"b\": [1, 2]}");
    for (i, f) in b.schema().fields().iter().enumerate() {
        if !matches!(f.name().as_str(), "n" | "nf") {
            assert!(
                b.column(i).is_null(1),
                "{} should be null in row 2",
                f.name()
            );
        }
    }

    // Zero rows: the schema still comes from the statement, and no batch is sent.
    let s = sources
        .query(
            "wh",
            &pg(),
            &format!("select d, n, tx from {t} where false"),
            &Map::new(),
        )
        .await
        .unwrap();
    assert_eq!(s.schema.field(0).data_type(), &DataType::Date32);
    assert_eq!(s.schema.field(1).data_type(), &DataType::Decimal128(12, 2));
    assert!(collect(s).await.is_empty());

    // Types we cannot read yet fail before any row, naming the column and the fix.
    let e = sources
        .query("wh", &pg(), "select interval '1 day' as gap", &Map::new())
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::SourceQueryFailed);
    assert!(
        e.message.contains("'gap'")
            && e.message.contains("INTERVAL")
            && e.message.contains("::text"),
        "{e}"
    );
    let s = sources
        .query(
            "wh",
            &pg(),
            "select interval '1 day'::text as gap",
            &Map::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        collect(s).await[0].column(0).as_string::<i32>().value(0),
        "1 day"
    );
    pg_exec(&format!("drop table {t}")).await;
}

#[tokio::test]
async fn postgres_named_params_lists_and_injection() {
    let t = unique("src_params");
    pg_exec(&format!(
        "create table {t} (id int, region text, amount float8);
         insert into {t} select g, (array['north','south','east'])[g % 3 + 1], g * 1.5 from generate_series(1, 30) g;"
    ))
    .await;
    let sources = Sources::new();
    let sql = format!(
        "select id, region from {t} where region = any(:regions) and id >= :min and id < :min + 10 and :flag order by id"
    );
    let s = sources
        .query(
            "wh",
            &pg(),
            &sql,
            &params(json!({"regions": ["north", "east"], "min": 3, "flag": true})),
        )
        .await
        .unwrap();
    let b = collect(s).await;
    let ids: Vec<i64> = b[0].column(0).as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(ids, vec![3, 5, 6, 8, 9, 11, 12]);

    // The same text with differently typed values must not reuse a statement prepared for
    // the old types.
    let sql = format!("select count(*) as n from {t} where id > :x");
    for (x, want) in [(json!(25), 5), (json!(25.5), 5), (json!("25"), -1)] {
        let r = sources
            .query("wh", &pg(), &sql, &params(json!({ "x": x })))
            .await;
        match r {
            Ok(s) => assert_eq!(
                collect(s).await[0]
                    .column(0)
                    .as_primitive::<Int64Type>()
                    .value(0),
                want
            ),
            // text compared with an integer column: PostgreSQL refuses, and we say how to cast.
            Err(e) => {
                assert_eq!(want, -1);
                assert!(
                    e.message.contains("::date") || e.message.contains("cast"),
                    "{e}"
                );
            }
        }
    }

    // A value is a value: quotes and SQL in it are compared, never executed.
    let evil = format!("north'; drop table {t}; --");
    let s = sources
        .query(
            "wh",
            &pg(),
            &format!("select count(*) from {t} where region = :r"),
            &params(json!({"r": evil})),
        )
        .await
        .unwrap();
    assert_eq!(
        collect(s).await[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        0
    );
    let s = sources
        .query(
            "wh",
            &pg(),
            &format!("select count(*) from {t}"),
            &Map::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        collect(s).await[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        30,
        "table survived"
    );

    // Missing parameter, unknown column, bad syntax: typed errors with the database's words.
    let e = sources
        .query("wh", &pg(), "select :a", &Map::new())
        .await
        .unwrap_err();
    assert!(e.message.contains(":a"), "{e}");
    let e = sources
        .query("wh", &pg(), &format!("select nope from {t}"), &Map::new())
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::SourceQueryFailed);
    assert!(
        e.message.contains("wh") && e.message.contains("nope"),
        "{e}"
    );
    let e = sources
        .query("wh", &pg(), "selec 1", &Map::new())
        .await
        .unwrap_err();
    assert!(e.message.contains("syntax error"), "{e}");
    let e = sources
        .query("wh", &pg(), "select :o", &params(json!({"o": {"k": 1}})))
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidParameter);
    pg_exec(&format!("drop table {t}")).await;
}

#[tokio::test]
async fn postgres_binds_tagged_dates_and_timestamps_as_such() {
    let t = unique("src_dates");
    pg_exec(&format!(
        "create table {t} (day date, at timestamp, atz timestamptz);
         insert into {t} select date '2024-01-01' + g, timestamp '2024-01-01' + g * interval '1 day',
           timestamptz '2024-01-01 00:00:00+00' + g * interval '1 day' from generate_series(0, 9) g;"
    ))
    .await;
    let sources = Sources::new();
    let count = |sql: String, p: Value| {
        let sources = sources.clone();
        async move {
            let s = sources.query("wh", &pg(), &sql, &params(p)).await.unwrap();
            collect(s).await[0]
                .column(0)
                .as_primitive::<Int64Type>()
                .value(0)
        }
    };
    // Without a ::date cast in the SQL: the SDK's tagged value is bound as a date.
    assert_eq!(
        count(
            format!("select count(*) from {t} where day >= :since"),
            json!({"since": {"$date": "2024-01-08"}})
        )
        .await,
        3
    );
    assert_eq!(
        count(
            format!("select count(*) from {t} where at < :until"),
            json!({"until": {"$timestamp": "2024-01-03T12:00:00"}})
        )
        .await,
        3
    );
    assert_eq!(
        count(
            format!("select count(*) from {t} where atz >= :from"),
            json!({"from": {"$timestamptz": "2024-01-09T01:00:00+02:00"}})
        )
        .await,
        2
    );
    let e = sources
        .query(
            "wh",
            &pg(),
            &format!("select * from {t} where day = :d"),
            &params(json!({"d": {"$date": "2024-02-30"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidParameter);
    assert!(e.message.contains("2024-02-30"), "{e}");
    pg_exec(&format!("drop table {t}")).await;
}

/// A query without parameters is read through `COPY ... (FORMAT binary)`, one with
/// parameters through a prepared statement: the rows must be the same either way.
#[tokio::test]
async fn postgres_copy_and_prepared_reads_agree() {
    let t = unique("src_copy");
    pg_exec(&format!(
        "create table {t} (k int4, b bool, i8 int8, f4 float4, f8 float8, n numeric(12,2), nf numeric,
           tx text, ch char(3), d date, ts timestamp, tz timestamptz, u uuid, jb jsonb, by bytea);
         insert into {t} values
           (1, true, -9223372036854775808, 0.1, -2.5e300, -1234567890.12, 'NaN',
            'héllo', 'ab', '0001-01-01', '2024-01-01 12:34:56.789', 'infinity',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{\"b\": [1, 2]}}', '\\x00ff'),
           (2, null, null, null, null, null, null, null, null, null, null, null, null, null, null),
           (3, false, 0, 'NaN', 'Infinity', 0, 1e-20, '', '', '2024-02-29', '1999-12-31 23:59:59.999999',
            '2000-01-01 00:00:00+14', '00000000-0000-0000-0000-000000000000', 'null', '');"
    ))
    .await;
    let sources = Sources::new();
    // A trailing comment must not swallow COPY's closing parenthesis.
    let copied = sources
        .query(
            "wh",
            &pg(),
            &format!("select * from {t} order by k -- all of it"),
            &Map::new(),
        )
        .await
        .unwrap();
    let prepared = sources
        .query(
            "wh",
            &pg(),
            &format!("select * from {t} where :all order by k"),
            &params(json!({"all": true})),
        )
        .await
        .unwrap();
    assert_eq!(copied.schema, prepared.schema);
    let (copied, prepared) = (collect(copied).await, collect(prepared).await);
    assert_eq!(copied.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
    assert_eq!(copied, prepared);

    // An error after rows have been sent still ends the stream with it.
    let s = sources
        .query(
            "wh",
            &pg(),
            "select 10 / (20000 - g) as q from generate_series(1, 30000) g",
            &Map::new(),
        )
        .await
        .unwrap();
    let e = s.batches.try_collect::<Vec<_>>().await.unwrap_err();
    assert!(e.message.contains("division by zero"), "{e}");

    // A statement COPY does not take is read the ordinary way.
    let s = sources
        .query(
            "wh",
            &pg(),
            &format!("select k into temp {t}_copy from {t}"),
            &Map::new(),
        )
        .await
        .unwrap();
    assert!(collect(s).await.is_empty());

    // Dropping a COPY half-way releases the connection (the pool has 4; do it 6 times).
    for _ in 0..6 {
        let mut s = sources
            .query(
                "wh",
                &pg(),
                "select g from generate_series(1, 1000000) g",
                &Map::new(),
            )
            .await
            .unwrap();
        assert_eq!(
            s.batches.try_next().await.unwrap().unwrap().num_rows(),
            8192
        );
    }
    let s = sources
        .query("wh", &pg(), "select 1 as one", &Map::new())
        .await
        .unwrap();
    assert_eq!(collect(s).await[0].num_rows(), 1);
    pg_exec(&format!("drop table {t}")).await;
}

#[tokio::test]
async fn postgres_streams_100k_rows_in_batches() {
    let sources = Sources::new();
    let sql = "select g as id, 'row ' || g as label, g * 0.5 as half, now()::date as day \
               from generate_series(1, :n) g";
    let s = sources
        .query("big", &pg(), sql, &params(json!({"n": 100_000})))
        .await
        .unwrap();
    let mut batches = s.batches;
    let mut sizes = Vec::new();
    let mut next_id = 1;
    while let Some(b) = batches.try_next().await.unwrap() {
        let ids = b.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.value(0), next_id);
        next_id += b.num_rows() as i64;
        sizes.push(b.num_rows());
    }
    assert_eq!(sizes.iter().sum::<usize>(), 100_000);
    assert_eq!(sizes.len(), 13);
    assert!(sizes[..12].iter().all(|&n| n == 8192));

    // Dropping a stream half-way releases the connection (the pool has 4; do it 6 times).
    for _ in 0..6 {
        let mut s = sources
            .query("big", &pg(), sql, &params(json!({"n": 1_000_000})))
            .await
            .unwrap();
        assert_eq!(
            s.batches.try_next().await.unwrap().unwrap().num_rows(),
            8192
        );
    }
    let s = sources
        .query("big", &pg(), "select 1 as one", &Map::new())
        .await
        .unwrap();
    assert_eq!(collect(s).await[0].num_rows(), 1);
}

#[tokio::test]
async fn connection_errors_are_clear_and_hide_passwords() {
    let sources = Sources::new();
    sources.test(&pg()).await.unwrap();
    let refused = SourceConfig::Postgres {
        url: "postgres://postgres:hunter2secret@127.0.0.1:1/test".into(),
    };
    let e = sources.test(&refused).await.unwrap_err();
    assert_eq!(e.code, Code::SourceQueryFailed);
    assert!(!e.message.contains("hunter2secret"), "{e}");
    let e = sources
        .query("dw", &refused, "select 1", &Map::new())
        .await
        .unwrap_err();
    assert!(
        e.message
            .starts_with("could not connect to data source 'dw'"),
        "{e}"
    );
    assert!(!e.message.contains("hunter2secret"), "{e}");
    let nodb = SourceConfig::Postgres {
        url: "postgres://postgres@127.0.0.1:5432/no_such_db_sluice".into(),
    };
    let e = sources.test(&nodb).await.unwrap_err();
    assert!(
        e.message.contains("could not connect") && e.message.contains("no_such_db_sluice"),
        "{e}"
    );
    let missing = SourceConfig::Sqlite {
        path: "/nonexistent/dir/x.db".into(),
    };
    let e = sources.test(&missing).await.unwrap_err();
    assert!(e.message.contains("does not exist"), "{e}");
}

/// Build the fixture with sqlx itself (read-write) before Sluice opens it read-only.
async fn sqlite_file() -> (tempfile::TempDir, SourceConfig) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        sqlx::raw_sql(
            "create table t (id integer, name text, score real, day date, at datetime, raw blob, flag boolean, misc);
             insert into t values (1, 'a, \"quoted\"', 1.5, '2024-01-02', '2024-01-02 03:04:05.5', x'00ff', 1, 10);
             insert into t values (2, null, 2, '2024-13-45', '2024-01-02T03:04:05Z', null, 0, 2.5);
             insert into t values (3, 'ünï', null, null, null, x'', null, null);
             create table big (id integer primary key, v text);
             with recursive c(x) as (select 1 union all select x + 1 from c where x < 20000)
             insert into big select x, 'v' || x from c;",
        )
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
    }
    (dir, SourceConfig::Sqlite { path })
}

#[tokio::test]
async fn sqlite_types_params_and_errors() {
    let (_dir, cfg) = sqlite_file().await;
    let sources = Sources::new();
    let s = sources
        .query("lite", &cfg, "select * from t order by id", &Map::new())
        .await
        .unwrap();
    let types: Vec<DataType> = s
        .schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        vec![
            DataType::Int64,
            DataType::Utf8,
            DataType::Float64,
            DataType::Utf8, // '2024-13-45' is not a date: the column falls back to text
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Binary,
            DataType::Boolean,
            DataType::Float64, // undeclared: 10 then 2.5 widen to real
        ]
    );
    let b = &collect(s).await[0];
    assert_eq!(b.num_rows(), 3);
    assert_eq!(b.column(1).as_string::<i32>().value(0), "a, \"quoted\"");
    assert_eq!(b.column(2).as_primitive::<Float64Type>().value(1), 2.0);
    assert_eq!(b.column(3).as_string::<i32>().value(1), "2024-13-45");
    assert_eq!(
        b.column(4)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_704_164_645_500_000
    );
    assert_eq!(
        b.column(4)
            .as_primitive::<TimestampMicrosecondType>()
            .value(1),
        1_704_164_645_000_000
    );
    assert_eq!(b.column(5).as_binary::<i32>().value(0), &[0u8, 255]);
    assert!(b.column(6).as_boolean().value(0) && !b.column(6).as_boolean().value(1));
    assert!(b.column(2).is_null(2) && b.column(6).is_null(2));

    let s = sources
        .query(
            "lite",
            &cfg,
            "select day from t where id = 1 and day = :d",
            &params(json!({"d": "2024-01-02"})),
        )
        .await
        .unwrap();
    assert_eq!(s.schema.field(0).data_type(), &DataType::Date32);
    assert_eq!(
        collect(s).await[0]
            .column(0)
            .as_primitive::<Date32Type>()
            .value(0),
        19_724
    );

    // Repeated parameter, expression column typed from its first value, injection stays a value.
    let s = sources
        .query(
            "lite",
            &cfg,
            "select :k || name as label, id from t where id >= :k and id <= :k + 1",
            &params(json!({"k": 1})),
        )
        .await
        .unwrap();
    let b = &collect(s).await[0];
    assert_eq!(b.schema().field(0).data_type(), &DataType::Utf8);
    assert_eq!(
        b.column(1).as_primitive::<Int64Type>().values().to_vec(),
        vec![1, 2]
    );
    let s = sources
        .query(
            "lite",
            &cfg,
            "select count(*) from t where name = :n",
            &params(json!({"n": "x' or '1'='1"})),
        )
        .await
        .unwrap();
    assert_eq!(
        collect(s).await[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        0
    );

    // Lists bind as JSON text, exactly as Python's sqlite3 path does.
    let s = sources
        .query(
            "lite",
            &cfg,
            "select id from t where id in (select value from json_each(:ids)) order by id",
            &params(json!({"ids": [1, 3]})),
        )
        .await
        .unwrap();
    let ids: Vec<i64> = collect(s).await[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    assert_eq!(ids, vec![1, 3]);
    // Tagged dates from the SDK bind as their ISO text.
    let s = sources
        .query(
            "lite",
            &cfg,
            "select id from t where day = :d",
            &params(json!({"d": {"$date": "2024-01-02"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        collect(s).await[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec(),
        vec![1]
    );
    let e = sources
        .query(
            "lite",
            &cfg,
            "select * from t where name = :r",
            &params(json!({"r": {"a": 1}})),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidParameter);
    let e = sources
        .query("lite", &cfg, "select nope from t", &Map::new())
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::SourceQueryFailed);
    assert!(e.message.contains("nope"), "{e}");
    // Read-only: a feed cannot change the file.
    let e = sources
        .query("lite", &cfg, "delete from t", &Map::new())
        .await
        .unwrap_err();
    assert!(
        e.message.contains("readonly") || e.message.contains("read-only"),
        "{e}"
    );

    // Empty result with declared types keeps them.
    let s = sources
        .query("lite", &cfg, "select id, score from t where 0", &Map::new())
        .await
        .unwrap();
    assert_eq!(s.schema.field(1).data_type(), &DataType::Float64);
    assert!(collect(s).await.is_empty());
}

#[tokio::test]
async fn sqlite_streams_in_batches_and_reports_late_type_surprises() {
    let (_dir, cfg) = sqlite_file().await;
    let sources = Sources::new().with_batch_rows(5000);
    let s = sources
        .query(
            "lite",
            &cfg,
            "select id, v from big order by id",
            &Map::new(),
        )
        .await
        .unwrap();
    let sizes: Vec<usize> = collect(s).await.iter().map(RecordBatch::num_rows).collect();
    assert_eq!(sizes, vec![5000, 5000, 5000, 5000]);

    // An expression typed INTEGER from the first batch meets text later: a clear error.
    let sql = "select case when id < 6000 then id else 'oops' end as x from big order by id";
    let s = sources.query("lite", &cfg, sql, &Map::new()).await.unwrap();
    assert_eq!(s.schema.field(0).data_type(), &DataType::Int64);
    let e = s.batches.try_collect::<Vec<_>>().await.unwrap_err();
    assert!(
        e.message.contains("'x'") && e.message.contains("oops") && e.message.contains("CAST"),
        "{e}"
    );
}
