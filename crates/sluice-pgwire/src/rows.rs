//! Query results encoded as DataRows.
//!
//! `arrow-pg` encodes every value through pgwire's `ToSqlText`. For a timestamp that means
//! parsing the column's time zone, then `DateStyle`, then chrono's `strftime` format
//! string, again for every value: a sixth of the server's time on a 1M-row read, the
//! largest single cost; a decimal goes through `rust_decimal` and `fmt`. Here timestamps
//! and dates in text format under the ISO `DateStyle` (every client's default), floats in
//! text format with `extra_float_digits` > 0 (every client's default), and decimals in text
//! format, are written directly, as PostgreSQL writes them (the COPY encoder's writers,
//! which the tests compare with a real PostgreSQL's output): `5`, not `arrow-pg`'s `5.0`;
//! `2024-01-01 10:00:00+00`, not `2024-01-01 10:00:00.000000+00`. Every other value, and
//! every value in binary format, is still encoded by `arrow-pg`.
//!
//! The [`EncodeRows`] hook runs `SELECT`s the way `datafusion-postgres` does. It is the last
//! hook, so statements other hooks answer (`SET`, `SHOW`, cursors, transactions) never
//! reach it. An extended-protocol portal's result formats do not reach hooks, so the
//! connection hands them over in a [`PortalFormat`] just before execution.

use arrow_array::cast::AsArray;
use arrow_array::timezone::Tz;
use arrow_array::types::{
    ArrowTimestampType, Date32Type, Decimal128Type, Float32Type, Float64Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch, temporal_conversions};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_schema::{DataType, TimeUnit};
use async_trait::async_trait;
use bytes::BytesMut;
use chrono::{Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone};
use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::arrow_pg::encoder::encode_value;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire;
use futures::{StreamExt, stream};
use pgwire::api::ClientInfo;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use pgwire::types::format::date_style::DateStyle;
use postgres_types::{IsNull, ToSql};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The result formats of the portal being executed, set by the connection for the hook.
#[derive(Default)]
pub struct PortalFormat(Mutex<Option<Format>>);

impl PortalFormat {
    pub fn set(&self, format: Format) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(format);
    }

    fn take(&self) -> Option<Format> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Runs `SELECT`s and encodes their rows (see the module comment).
pub struct EncodeRows {
    pub format: Arc<PortalFormat>,
}

pub(crate) fn api_error(e: datafusion::error::DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}

/// `SET statement_timeout`, as `datafusion-postgres` keeps it in the client's metadata.
/// Like `datafusion-postgres`, it bounds planning; rows stream after that.
pub(crate) fn statement_timeout(metadata: &HashMap<String, String>) -> Option<Duration> {
    metadata
        .get("statement_timeout_ms")
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
}

pub(crate) async fn within<T>(
    timeout: Option<Duration>,
    f: impl Future<Output = datafusion::error::Result<T>>,
) -> PgWireResult<T> {
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, f).await.map_err(|_| {
            PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                "57014".into(),
                "canceling statement due to statement timeout".into(),
            )))
        })?,
        None => f.await,
    };
    result.map_err(api_error)
}

fn format_options(client: &dyn HookClient) -> Arc<FormatOptions> {
    Arc::new(FormatOptions::from_client_metadata(client.metadata()))
}

#[async_trait]
impl QueryHook for EncodeRows {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !matches!(statement, Statement::Query(_)) {
            return None;
        }
        let run = async {
            let sql = statement.to_string();
            let df = within(statement_timeout(client.metadata()), ctx.sql(&sql)).await?;
            encode(df, &Format::UnifiedText, format_options(client)).await
        };
        Some(run.await.map(Response::Query))
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        None
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !matches!(statement, Statement::Query(_)) {
            return None;
        }
        // Without the portal's formats, leave the statement to datafusion-postgres.
        let format = self.format.take()?;
        let run = async {
            let plan = plan
                .clone()
                .replace_params_with_values(params)
                .map_err(api_error)?;
            let plan = ctx.state().optimize(&plan).map_err(api_error)?;
            let df = within(
                statement_timeout(client.metadata()),
                ctx.execute_logical_plan(plan),
            )
            .await?;
            encode(df, &format, format_options(client)).await
        };
        Some(run.await.map(Response::Query))
    }
}

/// `arrow_pg::encode_dataframe`, with [`Rows`] as the row encoder.
async fn encode(
    df: DataFrame,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<QueryResponse> {
    let iso = is_iso(&options);
    let shortest = options.extra_float_digits > 0;
    let fields = Arc::new(arrow_schema_to_pg_fields(
        df.schema().as_arrow(),
        format,
        Some(options),
    )?);
    let batches = df.execute_stream().await.map_err(api_error)?;
    let schema = fields.clone();
    let rows = batches
        .map(move |batch| {
            let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> = match batch {
                Ok(batch) => Box::new(Rows::new(batch, schema.clone(), iso, shortest)),
                Err(e) => Box::new(std::iter::once(Err(api_error(e)))),
            };
            stream::iter(rows)
        })
        .flatten();
    Ok(QueryResponse::new(fields, rows))
}

/// The pgwire format string of an ISO `DateStyle` timestamp: the `DateStyle` whose
/// timestamps are written here.
const ISO_TIMESTAMP: &str = "%Y-%m-%d %H:%M:%S%.6f";

pub(crate) fn is_iso(options: &FormatOptions) -> bool {
    DateStyle::new(&options.date_style).full_format_str() == ISO_TIMESTAMP
}

/// How one column of a batch is encoded, with the values taken out of the array once per
/// batch rather than downcast for every value.
enum Column {
    /// By `arrow-pg`.
    Arrow,
    /// A timestamp, in its time zone when it has one.
    Timestamp {
        values: ScalarBuffer<i64>,
        unit: TimeUnit,
        zone: Option<Zone>,
    },
    /// Days since the Unix epoch.
    Date(ScalarBuffer<i32>),
    /// Shortest exact digits, as PostgreSQL's `float8out` / `float4out` write them.
    Float8(ScalarBuffer<f64>),
    Float4(ScalarBuffer<f32>),
    Decimal {
        values: ScalarBuffer<i128>,
        scale: u32,
    },
}

/// A timestamp column's time zone: a fixed offset (UTC, `+05:30`) needs no lookup.
pub(crate) enum Zone {
    Fixed(i32),
    Named(Tz),
}

impl Zone {
    pub(crate) fn parse(tz: &str) -> Option<Zone> {
        if matches!(tz, "UTC" | "Etc/UTC" | "Z" | "utc") {
            return Some(Zone::Fixed(0));
        }
        if let Ok(offset) = chrono::FixedOffset::from_str(tz) {
            return Some(Zone::Fixed(offset.local_minus_utc()));
        }
        // arrow-pg reports a zone that does not parse.
        Tz::from_str(tz).ok().map(Zone::Named)
    }

    fn offset(&self, utc: &NaiveDateTime) -> i32 {
        match self {
            Zone::Fixed(s) => *s,
            Zone::Named(tz) => tz.offset_from_utc_datetime(utc).fix().local_minus_utc(),
        }
    }
}

/// The largest scale `rust_decimal`, through which `arrow-pg` writes decimals, accepts.
pub(crate) const MAX_DECIMAL_SCALE: i8 = 28;

impl Column {
    fn of(array: &ArrayRef, field: &FieldInfo, iso: bool, shortest: bool) -> Column {
        if field.format() != FieldFormat::Text {
            return Column::Arrow;
        }
        let column = match array.data_type() {
            DataType::Timestamp(unit, tz) if iso => {
                let zone = match tz {
                    None => None,
                    // arrow-pg reports a zone that does not parse.
                    Some(tz) => match Zone::parse(tz) {
                        Some(zone) => Some(zone),
                        None => return Column::Arrow,
                    },
                };
                let values = match unit {
                    TimeUnit::Second => timestamp_values::<TimestampSecondType>(array),
                    TimeUnit::Millisecond => timestamp_values::<TimestampMillisecondType>(array),
                    TimeUnit::Microsecond => timestamp_values::<TimestampMicrosecondType>(array),
                    TimeUnit::Nanosecond => timestamp_values::<TimestampNanosecondType>(array),
                };
                values.map(|values| Column::Timestamp {
                    values,
                    unit: *unit,
                    zone,
                })
            }
            DataType::Date32 if iso => array
                .as_primitive_opt::<Date32Type>()
                .map(|a| Column::Date(a.values().clone())),
            DataType::Float64 if shortest => array
                .as_primitive_opt::<Float64Type>()
                .map(|a| Column::Float8(a.values().clone())),
            DataType::Float32 if shortest => array
                .as_primitive_opt::<Float32Type>()
                .map(|a| Column::Float4(a.values().clone())),
            DataType::Decimal128(_, scale) if (0..=MAX_DECIMAL_SCALE).contains(scale) => array
                .as_primitive_opt::<Decimal128Type>()
                .map(|a| Column::Decimal {
                    values: a.values().clone(),
                    scale: *scale as u32,
                }),
            _ => None,
        };
        column.unwrap_or(Column::Arrow)
    }
}

fn timestamp_values<T: ArrowTimestampType>(array: &ArrayRef) -> Option<ScalarBuffer<i64>> {
    Some(array.as_primitive_opt::<T>()?.values().clone())
}

/// The rows of one batch.
struct Rows {
    batch: RecordBatch,
    /// How each column is encoded, and its nulls.
    columns: Vec<(Column, Option<NullBuffer>)>,
    fields: Arc<Vec<FieldInfo>>,
    encoder: DataRowEncoder,
    row: usize,
}

impl Rows {
    fn new(batch: RecordBatch, fields: Arc<Vec<FieldInfo>>, iso: bool, shortest: bool) -> Rows {
        let columns = batch
            .columns()
            .iter()
            .zip(fields.iter())
            .map(|(array, pg)| (Column::of(array, pg, iso, shortest), array.logical_nulls()))
            .collect();
        Rows {
            batch,
            columns,
            encoder: DataRowEncoder::new(fields.clone()),
            fields,
            row: 0,
        }
    }

    fn encode_row(&mut self) -> PgWireResult<DataRow> {
        let row = self.row;
        let schema = self.batch.schema_ref();
        for (i, (column, nulls)) in self.columns.iter().enumerate() {
            let array = self.batch.column(i);
            let pg = &self.fields[i];
            let mut text = [0u8; 48];
            let written = match column {
                _ if nulls.as_ref().is_some_and(|n| n.is_null(row)) => None,
                Column::Arrow => None,
                Column::Timestamp { values, unit, zone } => {
                    timestamp(values[row], *unit, zone.as_ref()).and_then(|(local, offset)| {
                        crate::copy::encode::write_timestamp(&mut text, local, offset)
                    })
                }
                Column::Float8(values) => Some(crate::copy::encode::float8(values[row], &mut text)),
                Column::Float4(values) => Some(crate::copy::encode::float4(values[row], &mut text)),
                Column::Date(days) => temporal_conversions::date32_to_datetime(days[row])
                    .and_then(|d| write_date(&mut text, d.date())),
                Column::Decimal { values, scale } => decimal(values[row], *scale, &mut text),
            };
            match written {
                Some(n) => self.encoder.encode_field_with_type_and_format(
                    &Text(&text[..n]),
                    pg.datatype(),
                    FieldFormat::Text,
                    pg.format_options(),
                )?,
                None => encode_value(&mut self.encoder, array, row, schema.field(i), pg)?,
            }
        }
        Ok(self.encoder.take_row())
    }
}

/// A value's text form, already written. Only ever sent in text format.
#[derive(Debug)]
struct Text<'a>(&'a [u8]);

impl ToSqlText for Text<'_> {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }
}

impl ToSql for Text<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        _out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Err("a value written as text cannot be sent in binary format".into())
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    postgres_types::to_sql_checked!();
}

impl Iterator for Rows {
    type Item = PgWireResult<DataRow>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.row == self.batch.num_rows() {
            return None;
        }
        let row = self.encode_row();
        self.row += 1;
        Some(row)
    }
}

/// A timestamp's local time, and its offset from UTC in seconds when it has a zone,
/// as `arrow-pg` computes them.
pub(crate) fn timestamp(
    value: i64,
    unit: TimeUnit,
    zone: Option<&Zone>,
) -> Option<(NaiveDateTime, Option<i32>)> {
    use temporal_conversions::*;
    let utc = match unit {
        TimeUnit::Second => timestamp_s_to_datetime(value),
        TimeUnit::Millisecond => timestamp_ms_to_datetime(value),
        TimeUnit::Microsecond => timestamp_us_to_datetime(value),
        TimeUnit::Nanosecond => timestamp_ns_to_datetime(value),
    }?;
    match zone {
        None => Some((utc, None)),
        Some(zone) => {
            let offset = zone.offset(&utc);
            let local = utc.checked_add_signed(chrono::Duration::seconds(offset.into()))?;
            Some((local, Some(offset)))
        }
    }
}

/// A decimal as `rust_decimal` writes it (all `scale` digits after the point), or None
/// beyond `rust_decimal`'s 96 bits, which `arrow-pg` reports as an error.
pub(crate) fn decimal(v: i128, scale: u32, out: &mut [u8; 48]) -> Option<usize> {
    const LIMIT: u128 = 1 << 96;
    let mut m = v.unsigned_abs();
    if m >= LIMIT {
        return None;
    }
    // Digits right-aligned in a scratch buffer, then copied out with the point.
    let mut d = [b'0'; 40];
    let mut start = d.len();
    while m > 0 {
        start -= 1;
        d[start] = b'0' + (m % 10) as u8;
        m /= 10;
    }
    let scale = scale as usize;
    // At least one digit before the point, and `scale` after it.
    start = start.min(d.len() - scale - 1);
    let int = &d[start..d.len() - scale];
    let mut n = 0;
    if v < 0 {
        out[0] = b'-';
        n = 1;
    }
    out[n..n + int.len()].copy_from_slice(int);
    n += int.len();
    if scale > 0 {
        out[n] = b'.';
        out[n + 1..n + 1 + scale].copy_from_slice(&d[d.len() - scale..]);
        n += 1 + scale;
    }
    Some(n)
}

fn digits<const N: usize>(out: &mut [u8], mut v: u32) {
    for slot in out[..N].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// `YYYY-MM-DD`, or None when chrono would write it otherwise (years outside 0..=9999).
pub(crate) fn write_date(out: &mut [u8], d: NaiveDate) -> Option<usize> {
    let year = u32::try_from(d.year()).ok().filter(|y| *y <= 9999)?;
    digits::<4>(out, year);
    out[4] = b'-';
    digits::<2>(&mut out[5..], d.month());
    out[7] = b'-';
    digits::<2>(&mut out[8..], d.day());
    Some(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        Date32Array, Decimal128Array, TimestampMicrosecondArray, TimestampNanosecondArray,
    };
    use arrow_schema::{Field, Schema};
    use datafusion_postgres::arrow_pg::datatypes::encode_recordbatch;

    /// Every row as arrow-pg encodes it and as [`Rows`] does.
    fn both(batch: RecordBatch, options: FormatOptions) -> (Vec<DataRow>, Vec<DataRow>) {
        let options = Arc::new(options);
        let iso = is_iso(&options);
        let shortest = options.extra_float_digits > 0;
        let fields = Arc::new(
            arrow_schema_to_pg_fields(&batch.schema(), &Format::UnifiedText, Some(options))
                .unwrap(),
        );
        let theirs = encode_recordbatch(fields.clone(), batch.clone())
            .collect::<PgWireResult<Vec<_>>>()
            .unwrap();
        let ours = Rows::new(batch, fields, iso, shortest)
            .collect::<PgWireResult<Vec<_>>>()
            .unwrap();
        (theirs, ours)
    }

    fn one_column(name: &str, array: ArrayRef) -> RecordBatch {
        let schema = Schema::new(vec![Field::new(name, array.data_type().clone(), true)]);
        RecordBatch::try_new(Arc::new(schema), vec![array]).unwrap()
    }

    fn text(rows: &[DataRow]) -> Vec<Vec<u8>> {
        rows.iter().map(|r| r.data.to_vec()).collect()
    }

    /// A spread of instants: the epoch, before it, leap days, second boundaries, a
    /// pseudo-random walk over 0001..9999, nulls, and beyond chrono's range.
    fn micros() -> Vec<Option<i64>> {
        let mut v = vec![
            Some(0),
            Some(-1),
            Some(1),
            Some(951_782_400_000_000),     // 2000-02-29
            Some(-62_135_596_800_000_000), // 0001-01-01
            Some(253_402_300_799_999_999), // 9999-12-31 23:59:59.999999
            Some(253_402_300_800_000_000), // 10000-01-01: chrono writes +10000
            Some(-62_135_596_800_000_001), // 0000-12-31
            Some(-62_198_755_200_000_000), // year -1: chrono writes -0001
            None,
            Some(i64::MAX),
            Some(i64::MIN),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(Some(
                (x % 315_537_897_600_000_000) as i64 - 62_135_596_800_000_000,
            ));
        }
        v
    }

    /// PostgreSQL's form of what `arrow-pg` writes for a timestamp of years 1..=9999: the
    /// fraction without its trailing zeros, and none when it is zero. Other years are
    /// written by `arrow-pg`, unchanged.
    fn as_postgresql(arrow_pg: &[u8]) -> Vec<u8> {
        let s = std::str::from_utf8(arrow_pg).unwrap();
        let plain_year =
            s.len() > 4 && s[..4].bytes().all(|b| b.is_ascii_digit()) && &s[..4] != "0000";
        let Some(dot) = s.find('.').filter(|_| plain_year) else {
            return arrow_pg.to_vec();
        };
        let end = s[dot + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(s.len(), |i| dot + 1 + i);
        let fraction = s[dot + 1..end].trim_end_matches('0');
        let dot_part = if fraction.is_empty() {
            String::new()
        } else {
            format!(".{fraction}")
        };
        format!("{}{dot_part}{}", &s[..dot], &s[end..]).into_bytes()
    }

    /// A timestamp's text with its offset cut to hours, as `arrow-pg` cuts it: PostgreSQL
    /// writes the minutes and seconds of an offset that has them (`+05:30`, `+00:09:21`).
    fn offset_hours(v: Vec<u8>) -> Vec<u8> {
        let s = String::from_utf8(v).unwrap();
        match s.rfind(['+', '-']).filter(|&i| i >= 19 && s.len() > i + 3) {
            Some(i) => s.as_bytes()[..i + 3].to_vec(),
            None => s.into_bytes(),
        }
    }

    /// One text value of a one-column DataRow (after the field's 4-byte length).
    fn values(rows: &[DataRow], column: usize) -> Vec<Option<Vec<u8>>> {
        rows.iter()
            .map(|r| {
                let mut at = 0;
                let mut out = None;
                for i in 0..=column {
                    let len = i32::from_be_bytes(r.data[at..at + 4].try_into().unwrap());
                    at += 4;
                    let v = (len >= 0).then(|| r.data[at..at + len as usize].to_vec());
                    at += len.max(0) as usize;
                    if i == column {
                        out = v;
                    }
                }
                out
            })
            .collect()
    }

    /// Timestamps as PostgreSQL prints them (`arrow-pg` pads the fraction to six digits
    /// always); dates as `arrow-pg` writes them, which is PostgreSQL's form already.
    #[test]
    fn timestamps_and_dates_are_written_as_postgresql_writes_them() {
        let zones = [
            None,
            Some("UTC"),
            Some("+00:00"),
            Some("-05:00"),
            Some("+05:30"),
            Some("Europe/Paris"),
        ];
        for tz in zones {
            let ts = TimestampMicrosecondArray::from(micros()).with_timezone_opt(tz);
            let nanos = TimestampNanosecondArray::from(
                micros()
                    .into_iter()
                    .map(|m| m.and_then(|m| m.checked_mul(1000)))
                    .collect::<Vec<_>>(),
            )
            .with_timezone_opt(tz);
            let days = Date32Array::from(
                micros()
                    .into_iter()
                    .map(|m| m.map(|m| (m / 86_400_000_000) as i32))
                    .collect::<Vec<_>>(),
            );
            let schema = Arc::new(Schema::new(vec![
                Field::new("ts", ts.data_type().clone(), true),
                Field::new("ns", nanos.data_type().clone(), true),
                Field::new("d", DataType::Date32, true),
            ]));
            let batch =
                RecordBatch::try_new(schema, vec![Arc::new(ts), Arc::new(nanos), Arc::new(days)])
                    .unwrap();
            let (theirs, ours) = both(batch, FormatOptions::default());
            for column in [0, 1] {
                let want: Vec<_> = values(&theirs, column)
                    .into_iter()
                    .map(|v| v.map(|v| as_postgresql(&v)))
                    .collect();
                let ours: Vec<_> = values(&ours, column)
                    .into_iter()
                    .map(|v| v.map(offset_hours))
                    .collect();
                assert_eq!(ours, want, "time zone {tz:?}");
            }
            assert_eq!(values(&ours, 2), values(&theirs, 2), "dates");
            // The offsets `arrow-pg` cuts, as PostgreSQL writes them.
            let first = values(&ours, 0)[0].clone().unwrap();
            let year_one = values(&ours, 0)[4].clone().unwrap();
            match tz {
                Some("+05:30") => assert_eq!(first, b"1970-01-01 05:30:00+05:30"),
                Some("Europe/Paris") => assert_eq!(year_one, b"0001-01-01 00:09:21+00:09:21"),
                _ => {}
            }
        }
    }

    #[test]
    fn decimals_are_the_bytes_arrow_pg_writes() {
        const LIMIT: i128 = 1 << 96;
        let mut values: Vec<Option<i128>> = [
            0,
            1,
            -1,
            5,
            -5,
            10,
            -10,
            99,
            100,
            -12345,
            LIMIT - 1,
            1 - LIMIT,
        ]
        .into_iter()
        .map(Some)
        .chain([None])
        .collect();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for i in 0..5000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Magnitudes of every width up to 96 bits, both signs.
            let v = (i128::from(x) << 32 | i128::from(x >> 11)) % (LIMIT >> (i % 96));
            values.push(Some(if i % 2 == 0 { v } else { -v }));
        }
        for scale in [0i8, 1, 2, 5, 10, 27, 28] {
            let array = Decimal128Array::from(values.clone())
                .with_precision_and_scale(38, scale)
                .unwrap();
            let batch = one_column("n", Arc::new(array));
            let (theirs, ours) = both(batch, FormatOptions::default());
            assert_eq!(text(&theirs), text(&ours), "scale {scale}");
        }
        // Beyond rust_decimal's range arrow-pg reports an error, and so do we.
        let array = Decimal128Array::from(vec![LIMIT])
            .with_precision_and_scale(38, 2)
            .unwrap();
        let batch = one_column("n", Arc::new(array));
        let fields = Arc::new(
            arrow_schema_to_pg_fields(&batch.schema(), &Format::UnifiedText, None).unwrap(),
        );
        assert!(
            Rows::new(batch, fields, true, true)
                .next()
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn the_iso_date_style_is_written_here_and_others_by_arrow_pg() {
        let ts =
            TimestampMicrosecondArray::from(vec![Some(951_782_400_123_456)]).with_timezone("UTC");
        let batch = one_column("ts", Arc::new(ts));
        for style in [
            "ISO, MDY",
            "ISO, DMY",
            "ISO",
            "SQL, DMY",
            "German",
            "Postgres, MDY",
        ] {
            let mut options = FormatOptions::default();
            options.date_style = style.into();
            let (theirs, ours) = both(batch.clone(), options);
            assert_eq!(text(&theirs), text(&ours), "DateStyle {style}");
        }
        // What a client reads back, under the default.
        let (_, ours) = both(batch, FormatOptions::default());
        assert_eq!(&text(&ours)[0][4..], b"2000-02-29 00:00:00.123456+00");
    }

    #[test]
    fn floats_and_whole_seconds_are_written_as_postgresql_writes_them() {
        use arrow_array::{Float32Array, Float64Array};
        let f8 = Float64Array::from(vec![
            Some(5.0),
            Some(0.1),
            Some(1e20),
            Some(-1.5e-7),
            Some(123_456_789_012_345.0),
            Some(1e15),
            Some(f64::INFINITY),
            Some(f64::NAN),
            Some(-0.0),
            None,
        ]);
        let batch = one_column("x", Arc::new(f8));
        let (_, ours) = both(batch.clone(), FormatOptions::default());
        let got: Vec<Option<String>> = values(&ours, 0)
            .into_iter()
            .map(|v| v.map(|v| String::from_utf8(v).unwrap()))
            .collect();
        // What `select score::text` prints on PostgreSQL 12 and later.
        let want = [
            "5",
            "0.1",
            "1e+20",
            "-1.5e-07",
            "123456789012345",
            "1e+15",
            "Infinity",
            "NaN",
            "-0",
        ];
        let want: Vec<Option<String>> = want
            .iter()
            .map(|s| Some(s.to_string()))
            .chain([None])
            .collect();
        assert_eq!(got, want);
        let f4 = Float32Array::from(vec![Some(2.5f32), Some(1e6f32), Some(0.1f32)]);
        let (_, ours) = both(one_column("y", Arc::new(f4)), FormatOptions::default());
        let got: Vec<String> = values(&ours, 0)
            .into_iter()
            .map(|v| String::from_utf8(v.unwrap()).unwrap())
            .collect();
        assert_eq!(got, ["2.5", "1e+06", "0.1"]);
        // With extra_float_digits 0 or less the client asked for rounded digits: arrow-pg.
        let mut options = FormatOptions::default();
        options.extra_float_digits = 0;
        let (theirs, ours) = both(batch, options);
        assert_eq!(text(&theirs), text(&ours));
        // A whole-second timestamp has no fraction.
        let ts =
            TimestampMicrosecondArray::from(vec![Some(1_704_103_200_000_000)]).with_timezone("UTC");
        let (_, ours) = both(one_column("t", Arc::new(ts)), FormatOptions::default());
        assert_eq!(values(&ours, 0), [Some(b"2024-01-01 10:00:00+00".to_vec())]);
    }
}
