//! Turning what a worker sends into Arrow record batches that all share one schema.
//!
//! Workers with pyarrow send Arrow IPC; workers without it send ROWS frames of JSON, which
//! are converted here so the gateway only ever encodes Arrow. Pure functions, unit-tested.
//!
//! The call's schema is fixed by the first frame (the gateway writes CSV headers and the
//! Arrow schema before streaming) and all its fields are made nullable: a later frame may
//! carry nulls in a column that had none so far. Later batches are cast to it.

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{ArrayRef, NullArray, PrimitiveArray, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::Deserialize;
use serde_json::Value;
use sluice_core::{Code, Error, Result};
use std::sync::Arc;

#[derive(Debug, Deserialize)]
pub struct RowsFrame {
    pub columns: Vec<String>,
    pub types: Vec<String>,
    #[serde(default)]
    pub rows: Vec<Vec<Value>>,
}

/// The same fields, all nullable.
pub fn relax(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Fit a batch to the call's schema: same column names in the same order, columns cast
/// where a later frame inferred a different type (e.g. all-null first, ints later).
pub fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    let got = batch.schema();
    if got.fields().len() != schema.fields().len()
        || got
            .fields()
            .iter()
            .zip(schema.fields())
            .any(|(a, b)| a.name() != b.name())
    {
        return Err(Error::internal(format!(
            "the feed's result changed columns mid-stream (first [{}], then [{}]); every batch of one call must have the same columns",
            names(schema),
            names(&got)
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(col, field)| {
            if col.data_type() == field.data_type() {
                Ok(col.clone())
            } else if field.data_type() == &DataType::Null && col.null_count() < col.len() {
                Err(untyped_column(field.name()))
            } else {
                arrow_cast::cast(col, field.data_type()).map_err(|e| {
                    Error::internal(format!(
                        "column '{}' changed type mid-stream from {} to {} and cannot be converted: {e}",
                        field.name(),
                        field.data_type(),
                        col.data_type()
                    ))
                })
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(|e| Error::internal(format!("could not assemble a record batch: {e}")))
}

/// The call's schema was sent before this value existed: casting it to Null would serve
/// silently wrong data, so the call fails and says how to make the type known up front.
fn untyped_column(name: &str) -> Error {
    Error::new(
        Code::FeedRaised,
        format!(
            "column '{name}' had only None values in the first rows of the result, so it was published without a type, and a later row has a value; make sure the first rows have a value for '{name}' (or convert the column to str), so its type is known before streaming starts"
        ),
    )
    .with("column", name)
}

fn names(s: &Schema) -> String {
    s.fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Convert a ROWS frame. With `schema = None` (the first frame of a call) the schema is
/// derived from the frame's column types; afterwards the call's schema decides.
pub fn rows_to_batch(frame: &RowsFrame, schema: Option<&SchemaRef>) -> Result<RecordBatch> {
    if frame.columns.len() != frame.types.len() {
        return Err(Error::internal(format!(
            "a ROWS frame has {} columns but {} types; this is a bug in the Sluice SDK",
            frame.columns.len(),
            frame.types.len()
        )));
    }
    let schema = match schema {
        Some(s) => {
            if s.fields().len() != frame.columns.len()
                || s.fields()
                    .iter()
                    .zip(&frame.columns)
                    .any(|(f, c)| f.name() != c)
            {
                return Err(Error::internal(format!(
                    "the feed's result changed columns mid-stream (first [{}], then [{}]); every row must have the same keys",
                    names(s),
                    frame.columns.join(", ")
                )));
            }
            s.clone()
        }
        None => {
            let fields = frame
                .columns
                .iter()
                .zip(&frame.types)
                .enumerate()
                .map(|(i, (name, ty))| {
                    Ok(Field::new(
                        name,
                        data_type(ty, name, frame.rows.iter().map(|r| &r[i]))?,
                        true,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            Arc::new(Schema::new(fields))
        }
    };
    for (n, row) in frame.rows.iter().enumerate() {
        if row.len() != frame.columns.len() {
            return Err(Error::internal(format!(
                "row {n} of a ROWS frame has {} values for {} columns; this is a bug in the Sluice SDK",
                row.len(),
                frame.columns.len()
            )));
        }
    }
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| build_column(f, frame.rows.iter().map(|r| &r[i])))
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(frame.rows.len())),
    )
    .map_err(|e| Error::internal(format!("could not assemble a record batch from ROWS: {e}")))
}

fn data_type<'a>(
    ty: &str,
    column: &str,
    mut values: impl Iterator<Item = &'a Value>,
) -> Result<DataType> {
    Ok(match ty {
        "null" => DataType::Null,
        "bool" => DataType::Boolean,
        "int" => DataType::Int64,
        "float" => DataType::Float64,
        "str" | "json" => DataType::Utf8,
        "date" => DataType::Date32,
        // A column with any offset-carrying value is served as UTC instants; a column of
        // naive values stays naive (wall-clock), as the analyst wrote it.
        "datetime" => {
            let aware = values.any(|v| {
                v.as_str()
                    .is_some_and(|s| parse_datetime(s).is_some_and(|(_, tz)| tz))
            });
            DataType::Timestamp(TimeUnit::Microsecond, aware.then(|| "UTC".into()))
        }
        other => {
            return Err(Error::internal(format!(
                "column '{column}' has type '{other}', which this runtime does not know (expected null, bool, int, float, str, date, datetime or json); the SDK is newer than the runtime"
            )));
        }
    })
}

fn bad_value(field: &Field, row: usize, v: &Value) -> Error {
    Error::internal(format!(
        "column '{}' is declared {} but row {row} holds {v}; every value of a column must have the same type",
        field.name(),
        field.data_type()
    ))
}

fn build_column<'a>(
    field: &Field,
    values: impl ExactSizeIterator<Item = &'a Value>,
) -> Result<ArrayRef> {
    let n = values.len();
    Ok(match field.data_type() {
        DataType::Null => {
            let mut values = values;
            if values.any(|v| !v.is_null()) {
                return Err(untyped_column(field.name()));
            }
            Arc::new(NullArray::new(n))
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(n);
            for (i, v) in values.enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::Bool(x) => b.append_value(*x),
                    other => return Err(bad_value(field, i, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(n);
            for (i, v) in values.enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::Number(x) if x.as_i64().is_some() => {
                        b.append_value(x.as_i64().unwrap_or_default())
                    }
                    other => return Err(bad_value(field, i, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::with_capacity(n);
            for (i, v) in values.enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::Number(x) => b.append_option(x.as_f64()),
                    other => return Err(bad_value(field, i, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Utf8 => {
            let mut b = StringBuilder::with_capacity(n, n * 16);
            for v in values {
                match v {
                    Value::Null => b.append_null(),
                    Value::String(s) => b.append_value(s),
                    // `json` columns: any JSON value, served as its text.
                    other => b.append_value(other.to_string()),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Date32 => {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
            let mut b = Date32Builder::with_capacity(n);
            for (i, v) in values.enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::String(s) => {
                        let d = NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d")
                            .map_err(|_| bad_value(field, i, v))?;
                        b.append_value((d - epoch).num_days() as i32);
                    }
                    other => return Err(bad_value(field, i, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let mut out: Vec<Option<i64>> = Vec::with_capacity(n);
            for (i, v) in values.enumerate() {
                match v {
                    Value::Null => out.push(None),
                    Value::String(s) => {
                        let (micros, _) =
                            parse_datetime(s).ok_or_else(|| bad_value(field, i, v))?;
                        out.push(Some(micros));
                    }
                    other => return Err(bad_value(field, i, other)),
                }
            }
            Arc::new(
                PrimitiveArray::<TimestampMicrosecondType>::from(out).with_timezone_opt(tz.clone()),
            )
        }
        other => return Err(Error::internal(format!("no ROWS conversion to {other}"))),
    })
}

/// Microseconds since the epoch (UTC for aware values, wall-clock for naive ones) and
/// whether the text carried an offset.
fn parse_datetime(s: &str) -> Option<(i64, bool)> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some((dt.timestamp_micros(), true));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z"] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some((dt.timestamp_micros(), true));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some((dt.and_utc().timestamp_micros(), false));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        Array, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use serde_json::json;

    fn frame(v: Value) -> RowsFrame {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_column_type() {
        let f = frame(json!({
            "columns": ["n", "b", "i", "x", "s", "d", "t", "tz", "j"],
            "types": ["null", "bool", "int", "float", "str", "date", "datetime", "datetime", "json"],
            "rows": [
                [null, true, 1, 1.5, "a", "2024-01-02", "2024-01-02T03:04:05", "2024-01-02T03:04:05+02:00", {"k": [1]}],
                [null, null, null, 2, null, null, null, "2024-01-02T00:00:00", null],
            ]
        }));
        let b = rows_to_batch(&f, None).unwrap();
        assert_eq!(b.num_rows(), 2);
        let s = b.schema();
        assert_eq!(s.field(0).data_type(), &DataType::Null);
        assert_eq!(
            s.field(6).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(
            s.field(7).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(s.fields().iter().all(|f| f.is_nullable()));
        let bools = b.column(1).as_any().downcast_ref::<BooleanArray>().unwrap();
        assert!(bools.value(0) && bools.is_null(1));
        assert_eq!(
            b.column(2)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0),
            1
        );
        assert_eq!(
            b.column(3)
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .value(1),
            2.0
        );
        assert_eq!(
            b.column(4)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0),
            "a"
        );
        assert_eq!(
            b.column(5)
                .as_any()
                .downcast_ref::<Date32Array>()
                .unwrap()
                .value(0),
            19724
        );
        let t = b
            .column(6)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(t.value(0), 1_704_164_645_000_000);
        let tz = b
            .column(7)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(tz.value(0), 1_704_164_645_000_000 - 2 * 3600 * 1_000_000);
        assert_eq!(
            b.column(8)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0),
            r#"{"k":[1]}"#
        );
    }

    #[test]
    fn later_frames_follow_the_first_schema() {
        let first = rows_to_batch(
            &frame(json!({"columns": ["a"], "types": ["int"], "rows": [[1]]})),
            None,
        )
        .unwrap();
        let schema = first.schema();
        let second = rows_to_batch(
            &frame(json!({"columns": ["a"], "types": ["null"], "rows": [[null]]})),
            Some(&schema),
        )
        .unwrap();
        assert_eq!(second.schema(), schema);
        let wrong = rows_to_batch(
            &frame(json!({"columns": ["b"], "types": ["int"], "rows": []})),
            Some(&schema),
        );
        assert!(wrong.unwrap_err().message.contains("changed columns"));
    }

    #[test]
    fn values_in_a_column_published_as_null_fail_loudly() {
        let first = rows_to_batch(
            &frame(json!({"columns": ["a"], "types": ["null"], "rows": [[null]]})),
            None,
        )
        .unwrap();
        let schema = first.schema();
        let later = rows_to_batch(
            &frame(json!({"columns": ["a"], "types": ["int"], "rows": [[null], [5]]})),
            Some(&schema),
        );
        assert_eq!(later.unwrap_err().code, Code::FeedRaised);
        let still_null = rows_to_batch(
            &frame(json!({"columns": ["a"], "types": ["int"], "rows": [[null]]})),
            Some(&schema),
        );
        assert_eq!(still_null.unwrap().num_rows(), 1);
        let ints = RecordBatch::try_from_iter(vec![(
            "a",
            Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
        )])
        .unwrap();
        let e = conform(ints, &schema).unwrap_err();
        assert!(e.message.contains("column 'a'"), "{}", e.message);
    }

    #[test]
    fn mistyped_values_name_the_column() {
        let e = rows_to_batch(
            &frame(json!({"columns": ["a"], "types": ["int"], "rows": [[1], ["x"]]})),
            None,
        )
        .unwrap_err();
        assert!(
            e.message.contains("column 'a'") && e.message.contains("row 1"),
            "{}",
            e.message
        );
    }

    #[test]
    fn conform_casts_and_relaxes() {
        let schema = relax(&Schema::new(vec![Field::new(
            "a",
            DataType::Float64,
            false,
        )]));
        let ints = RecordBatch::try_from_iter(vec![(
            "a",
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        )])
        .unwrap();
        let b = conform(ints, &schema).unwrap();
        assert_eq!(b.schema(), schema);
        assert_eq!(
            b.column(0)
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .value(1),
            2.0
        );
    }
}
