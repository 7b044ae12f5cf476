//! SQLite: opened read-only (a feed must never change an analyst's file). SQLite types are
//! per value, not per column, so a column's Arrow type is decided from its declared type
//! when there is one, widened by the values of the first batch (which is read before the
//! schema is published):
//!
//! - INTEGER → Int64, REAL → Float64, TEXT → Utf8, BLOB → Binary, BOOLEAN → Boolean;
//! - DATE → Date32 and DATETIME/TIMESTAMP → Timestamp(µs) when every first-batch value is
//!   ISO-8601 text (`YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS[.fff]`, `T` separator, an offset or
//!   `Z` is converted to UTC); otherwise the column falls back to Utf8 and values pass
//!   through as written;
//! - no declared type (an expression): the first non-null value decides;
//! - mixed values widen: integer + real → Float64, anything + text → Utf8.
//!
//! A value after the first batch that does not fit the published type (a text value in an
//! integer column at row 10 000) ends the stream with an error that names the column and
//! suggests a CAST: silently turning it into a null or a 0 would be worse.

use crate::builder::{Col, finish, new_cols};
use crate::{QueryStream, query_failed, receiver_stream, sql_error};
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use sluice_core::sqlparams::{Placeholder, check_bound, rewrite};
use sluice_core::{Code, Error, Result};
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{Arguments, Column, Connection, Executor, Row, Statement, TypeInfo, ValueRef};
use std::path::Path;
use std::sync::Arc;

fn missing(path: &Path) -> Error {
    Error::new(
        Code::SourceQueryFailed,
        format!(
            "SQLite file '{}' does not exist: check the path (Sluice opens SQLite sources read-only and never creates them)",
            path.display()
        ),
    )
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
}

pub(crate) fn pool(_name: &str, path: &Path) -> Result<sqlx::SqlitePool> {
    Ok(SqlitePoolOptions::new()
        .max_connections(crate::MAX_CONNECTIONS)
        .connect_lazy_with(options(path)))
}

pub(crate) async fn test(path: &Path) -> Result<()> {
    if !path.is_file() {
        return Err(missing(path));
    }
    let fail = |e| sql_error("(new)", e, None);
    let mut conn = sqlx::SqliteConnection::connect_with(&options(path))
        .await
        .map_err(fail)?;
    sqlx::query("select 1")
        .execute(&mut conn)
        .await
        .map_err(fail)?;
    let _ = conn.close().await;
    Ok(())
}

fn bind(
    names: &[String],
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<SqliteArguments<'static>> {
    use serde_json::Value;
    let mut args = SqliteArguments::default();
    for n in names {
        let bad = |what: String| {
            Error::new(Code::InvalidParameter, format!("parameter '{n}': {what}"))
                .with("parameter", n.as_str())
        };
        let r = match &params[n.as_str()] {
            Value::String(s) => args.add(s.clone()),
            Value::Number(x) if x.as_i64().is_some() => args.add(x.as_i64()),
            Value::Number(x) => args.add(x.as_f64()),
            Value::Bool(b) => args.add(*b),
            Value::Null => args.add(None::<String>),
            // The same binding Python's sqlite3 path uses, so passthrough and Python agree.
            Value::Array(items) => args.add(Value::Array(items.clone()).to_string()),
            Value::Object(m) if crate::tagged_temporal(m).is_some() => {
                args.add(crate::tagged_temporal(m).map(|(_, text)| text.to_string()))
            }
            Value::Object(_) => {
                return Err(bad(
                    "an object cannot be bound to SQL; pass a string, number, boolean or null"
                        .into(),
                ));
            }
        };
        r.map_err(|e| bad(e.to_string()))?;
    }
    Ok(args)
}

/// What a column holds, as far as we know; `Unknown` until a declared type or a value says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SType {
    Unknown,
    Bool,
    Int,
    Real,
    Text,
    Blob,
    Date,
    DateTime,
}

fn declared(name: &str) -> SType {
    match name {
        "INTEGER" => SType::Int,
        "REAL" => SType::Real,
        "TEXT" | "TIME" => SType::Text,
        "BLOB" => SType::Blob,
        "BOOLEAN" => SType::Bool,
        "DATE" => SType::Date,
        "DATETIME" => SType::DateTime,
        _ => SType::Unknown,
    }
}

/// Widen a column type by one observed value.
fn widen(t: SType, row: &SqliteRow, i: usize) -> SType {
    let Ok(v) = row.try_get_raw(i) else { return t };
    if v.is_null() {
        return t;
    }
    let class = declared(v.type_info().name());
    let v = (row, i);
    match (t, class) {
        (SType::Unknown, c) => c,
        (t, c) if t == c => t,
        (SType::Bool, SType::Int) => SType::Bool,
        (SType::Int, SType::Real) | (SType::Real, SType::Int) => SType::Real,
        (SType::Date, SType::Text) if text(v).is_some_and(|s| parse_date(s).is_some()) => {
            SType::Date
        }
        (SType::DateTime, SType::Text) if text(v).is_some_and(|s| parse_datetime(s).is_some()) => {
            SType::DateTime
        }
        _ => SType::Text,
    }
}

fn arrow_type(t: SType) -> DataType {
    match t {
        SType::Bool => DataType::Boolean,
        SType::Int => DataType::Int64,
        SType::Real => DataType::Float64,
        SType::Blob => DataType::Binary,
        SType::Date => DataType::Date32,
        SType::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
        SType::Text | SType::Unknown => DataType::Utf8,
    }
}

/// A value as text (SQLite renders numbers as it prints them); decoding is unchecked because
/// the point is to read across storage classes.
fn text((row, i): (&SqliteRow, usize)) -> Option<&str> {
    row.try_get_unchecked::<&str, _>(i).ok()
}

const UNIX_EPOCH_DATE: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");

fn parse_date(s: &str) -> Option<i32> {
    if s.len() != 10 {
        return None;
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    i32::try_from((d - UNIX_EPOCH_DATE).num_days()).ok()
}

fn parse_datetime(s: &str) -> Option<i64> {
    if s.len() == 10 {
        let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    // With an offset or Z: store the UTC instant (the column type has no zone).
    DateTime::parse_from_rfc3339(&s.replacen(' ', "T", 1))
        .ok()
        .map(|t| t.timestamp_micros())
}

pub(crate) async fn query(
    name: &str,
    pool: &sqlx::SqlitePool,
    path: &Path,
    sql: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    batch_rows: usize,
) -> Result<QueryStream> {
    if !path.is_file() {
        return Err(missing(path).with("source", name));
    }
    let rw = rewrite(sql, Placeholder::Question)?;
    let given: Vec<&str> = params.keys().map(String::as_str).collect();
    check_bound(&rw, &given)?;
    let args = bind(&rw.names, params)?;
    let conn = pool.acquire().await.map_err(|e| sql_error(name, e, None))?;

    let (schema_tx, schema_rx) = tokio::sync::oneshot::channel();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let source = name.to_string();
    tokio::spawn(async move {
        let mut conn = conn;
        if !read(
            &source, &mut conn, &rw.sql, args, batch_rows, schema_tx, &tx,
        )
        .await
        {
            conn.close_on_drop();
        }
    });
    let schema = schema_rx.await.map_err(|_| {
        Error::internal(format!(
            "the reader of data source '{name}' stopped before the first row"
        ))
    })??;
    Ok(QueryStream {
        schema,
        batches: receiver_stream(rx),
    })
}

/// Prepare, read the first batch, publish the schema, then stream. False if it ended early.
async fn read(
    source: &str,
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    args: SqliteArguments<'static>,
    batch_rows: usize,
    schema_tx: tokio::sync::oneshot::Sender<Result<SchemaRef>>,
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch>>,
) -> bool {
    use futures::TryStreamExt;
    let (names, mut types): (Vec<String>, Vec<SType>) = match (&mut *conn).prepare(sql).await {
        Ok(stmt) => stmt
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), declared(c.type_info().name())))
            .unzip(),
        Err(e) => {
            let _ = schema_tx.send(Err(sql_error(source, e, None)));
            return false;
        }
    };
    let mut rows = sqlx::query_with(sql, args).fetch(&mut *conn);
    let mut first: Vec<SqliteRow> = Vec::new();
    let mut more = true;
    while first.len() < batch_rows {
        match rows.try_next().await {
            Ok(Some(row)) => first.push(row),
            Ok(None) => {
                more = false;
                break;
            }
            Err(e) => {
                let _ = schema_tx.send(Err(sql_error(source, e, None)));
                return false;
            }
        }
    }
    for row in &first {
        for (i, t) in types.iter_mut().enumerate() {
            *t = widen(*t, row, i);
        }
    }
    let fields: Vec<Field> = names
        .iter()
        .zip(&types)
        .map(|(n, t)| Field::new(n, arrow_type(*t), true))
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    if schema_tx.send(Ok(schema.clone())).is_err() {
        return false;
    }

    let mut builders = new_cols(&schema, batch_rows.min(first.len().max(1)));
    let n = first.len();
    for row in first.drain(..) {
        if let Err(e) = append_row(source, &names, &mut builders, &row) {
            let _ = tx.send(Err(e)).await;
            return false;
        }
    }
    if n > 0
        && tx
            .send(finish(&schema, &mut builders, n).map_err(|e| query_failed(source, e)))
            .await
            .is_err()
    {
        return false;
    }
    if !more {
        return true;
    }
    let mut n = 0;
    loop {
        let row = match rows.try_next().await {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(sql_error(source, e, None))).await;
                return false;
            }
        };
        if let Err(e) = append_row(source, &names, &mut builders, &row) {
            let _ = tx.send(Err(e)).await;
            return false;
        }
        n += 1;
        if n == batch_rows {
            let batch = finish(&schema, &mut builders, n).map_err(|e| query_failed(source, e));
            n = 0;
            if tx.send(batch).await.is_err() {
                return false;
            }
        }
    }
    if n > 0
        && tx
            .send(finish(&schema, &mut builders, n).map_err(|e| query_failed(source, e)))
            .await
            .is_err()
    {
        return false;
    }
    true
}

fn append_row(source: &str, names: &[String], builders: &mut [Col], row: &SqliteRow) -> Result<()> {
    for (i, b) in builders.iter_mut().enumerate() {
        let v = row.try_get_raw(i).map_err(|e| query_failed(source, e))?;
        if v.is_null() {
            b.append_null();
        } else if let Err(class) = append(b, row, i) {
            let msg = format!(
                "column '{}' was typed from its declared type and first rows, but a later value is {class}; \
                 CAST it in the SQL, e.g. CAST({} AS TEXT)",
                names[i], names[i]
            );
            return Err(query_failed(source, msg).with("column", names[i].as_str()));
        }
    }
    Ok(())
}

/// Append one non-null value, coercing between storage classes where no information is
/// lost; Err(storage class) when it cannot.
fn append(b: &mut Col, row: &SqliteRow, i: usize) -> std::result::Result<(), String> {
    let storage = row
        .try_get_raw(i)
        .map(|v| v.type_info().name().to_string())
        .unwrap_or_default();
    let class = declared(&storage);
    let v = (row, i);
    let int = || row.try_get_unchecked::<i64, _>(i).ok();
    let real = || row.try_get_unchecked::<f64, _>(i).ok();
    let blob = || row.try_get_unchecked::<&[u8], _>(i).ok();
    let fail = || match text(v).filter(|_| class == SType::Text) {
        Some(s) => format!("the text '{}'", s.chars().take(40).collect::<String>()),
        None => format!("a value of storage class {storage}"),
    };
    match b {
        Col::I64(c) => match class {
            SType::Int => c.append_value(int().ok_or_else(fail)?),
            SType::Real => match real().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18) {
                Some(f) => c.append_value(f as i64),
                None => return Err(fail()),
            },
            _ => c.append_value(text(v).and_then(|s| s.parse().ok()).ok_or_else(fail)?),
        },
        Col::F64(c) => match class {
            SType::Int | SType::Real => c.append_value(real().ok_or_else(fail)?),
            _ => c.append_value(text(v).and_then(|s| s.parse().ok()).ok_or_else(fail)?),
        },
        Col::Bool(c) => match class {
            SType::Int => c.append_value(int().ok_or_else(fail)? != 0),
            _ => return Err(fail()),
        },
        Col::Str(c) => match class {
            SType::Blob => c.append_value(String::from_utf8_lossy(blob().ok_or_else(fail)?)),
            // sqlite3_value_text renders integers and reals the way SQLite itself prints them.
            _ => c.append_value(text(v).ok_or_else(fail)?),
        },
        Col::Bin(c) => c.append_value(blob().ok_or_else(fail)?),
        Col::Date(c) => c.append_value(
            text(v)
                .filter(|_| class == SType::Text)
                .and_then(parse_date)
                .ok_or_else(fail)?,
        ),
        Col::Ts(c) => c.append_value(
            text(v)
                .filter(|_| class == SType::Text)
                .and_then(parse_datetime)
                .ok_or_else(fail)?,
        ),
        Col::Dec(_) => return Err(fail()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_and_datetimes_parse() {
        assert_eq!(parse_date("1970-01-02"), Some(1));
        assert_eq!(parse_date("2024-02-30"), None);
        assert_eq!(parse_date("2024-01-01 10:00:00"), None);
        assert_eq!(parse_datetime("1970-01-01 00:00:01"), Some(1_000_000));
        assert_eq!(parse_datetime("1970-01-01T00:00:01.5"), Some(1_500_000));
        assert_eq!(parse_datetime("1970-01-01 01:00:00+01:00"), Some(0));
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_datetime("1970-01-02"), Some(86_400_000_000));
        assert_eq!(parse_datetime("yesterday"), None);
    }
}
