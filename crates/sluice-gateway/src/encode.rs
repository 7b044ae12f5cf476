//! Response encoding: a schema plus a stream of Arrow record batches in, a stream of body
//! chunks out, in JSON (one array of objects), NDJSON, CSV (RFC 4180) or the Arrow IPC
//! stream format.
//!
//! This is the hottest loop of the gateway, so the text encoders are hand-rolled rather than
//! built on arrow-json / arrow-csv: the contract (keys kept for nulls, NaN → null, `Z` on UTC
//! timestamps, decimals as exact JSON numbers, CRLF CSV with a header even for zero rows) is
//! written once here, and each row is produced by one pass over typed columns with no
//! intermediate values. Output is gathered into chunks of about [`CHUNK_BYTES`] so the
//! socket sees few, large writes while memory stays bounded by one batch plus one chunk.
//!
//! An error from the batch stream is passed on after whatever was already yielded; the
//! caller aborts the connection so a client never mistakes a truncated body for a full one.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use sluice_core::{Code, Error, Result};

/// A chunk is handed to the socket once it holds at least this much.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// A text body's first buffer.
const START_BYTES: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Ndjson,
    Arrow,
}

impl Format {
    /// The `?format=` query value.
    pub fn from_query(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "ndjson" => Some(Format::Ndjson),
            "arrow" => Some(Format::Arrow),
            _ => None,
        }
    }

    /// The best format for an `Accept` header: highest q-value wins, an exact media type
    /// beats a wildcard at equal q, then the order of the header. `*/*` and `application/*`
    /// mean JSON (the default), `text/*` means CSV. An empty header accepts anything.
    pub fn from_accept(accept: &str) -> Option<Format> {
        if accept.trim().is_empty() {
            return Some(Format::Json);
        }
        let mut best: Option<(f32, bool, Format)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0f32;
            for p in parts {
                if let Some((_, v)) = p
                    .split_once('=')
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            let (format, exact) = match media.as_str() {
                "application/json" => (Format::Json, true),
                "text/csv" => (Format::Csv, true),
                "application/x-ndjson" | "application/ndjson" => (Format::Ndjson, true),
                "application/vnd.apache.arrow.stream" => (Format::Arrow, true),
                "*/*" | "application/*" => (Format::Json, false),
                "text/*" => (Format::Csv, false),
                _ => continue,
            };
            if q <= 0.0 {
                continue;
            }
            if best.is_none_or(|(bq, bexact, _)| q > bq || (q == bq && exact && !bexact)) {
                best = Some((q, exact, format));
            }
        }
        best.map(|(_, _, f)| f)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Ndjson => "application/x-ndjson",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::Arrow => "arrow",
        }
    }
}

/// Turn batches into body chunks; each chunk holds one or more encoded batches (at least
/// [`CHUNK_BYTES`] except the last), never the whole result.
pub fn encode(
    format: Format,
    schema: SchemaRef,
    batches: BoxStream<'static, Result<RecordBatch>>,
) -> BoxStream<'static, Result<Bytes>> {
    let encoder = match format {
        Format::Json => Encoder::Text(TextEncoder::new(TextKind::Json, &schema)),
        Format::Ndjson => Encoder::Text(TextEncoder::new(TextKind::Ndjson, &schema)),
        Format::Csv => Encoder::Text(TextEncoder::new(TextKind::Csv, &schema)),
        Format::Arrow => {
            match arrow_ipc::writer::StreamWriter::try_new(Vec::with_capacity(CHUNK_BYTES), &schema)
            {
                Ok(w) => Encoder::Arrow(Box::new(w)),
                Err(e) => return futures::stream::once(async move { Err(arrow_error(e)) }).boxed(),
            }
        }
    };
    run(encoder, batches)
}

fn run(
    encoder: Encoder,
    batches: BoxStream<'static, Result<RecordBatch>>,
) -> BoxStream<'static, Result<Bytes>> {
    let state = State {
        encoder,
        batches,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.batches.next().await {
                Some(Ok(batch)) => {
                    if let Err(e) = st.encoder.batch(&batch) {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    if st.encoder.buffered() >= CHUNK_BYTES {
                        return Some((Ok(st.encoder.take()), st));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.done = true;
                    return Some((st.encoder.end(), st));
                }
            }
        }
    })
    .boxed()
}

/// The closing part of a wrapped JSON body, produced after the last row.
pub type Tail = Box<dyn FnOnce() -> Vec<u8> + Send>;

/// JSON rows inside a caller's envelope (OData's `{"@odata.context":..,"value":[` ... `]}`):
/// `head`, the rows as array elements, `]`, then `tail()`, called once the rows have ended
/// so it can say what only the end knows (a next-page link). Timestamps without a zone are
/// written as UTC with `Z`, as OData's DateTimeOffset requires.
pub fn encode_wrapped(
    schema: SchemaRef,
    batches: BoxStream<'static, Result<RecordBatch>>,
    head: Vec<u8>,
    tail: Tail,
) -> BoxStream<'static, Result<Bytes>> {
    let mut t = TextEncoder::new(TextKind::Json, &schema);
    let mut out = head;
    out.append(&mut t.out);
    t.out = out;
    t.utc = true;
    t.tail = Some(tail);
    run(Encoder::Text(t), batches)
}

struct State {
    encoder: Encoder,
    batches: BoxStream<'static, Result<RecordBatch>>,
    done: bool,
}

enum Encoder {
    Text(TextEncoder),
    Arrow(Box<arrow_ipc::writer::StreamWriter<Vec<u8>>>),
}

impl Encoder {
    fn batch(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            Encoder::Text(t) => t.batch(batch),
            Encoder::Arrow(w) if batch.num_rows() > 0 => w.write(batch).map_err(arrow_error),
            Encoder::Arrow(_) => Ok(()),
        }
    }

    fn buffered(&mut self) -> usize {
        match self {
            Encoder::Text(t) => t.out.len(),
            Encoder::Arrow(w) => w.get_mut().len(),
        }
    }

    fn take(&mut self) -> Bytes {
        let buf = match self {
            Encoder::Text(t) => &mut t.out,
            Encoder::Arrow(w) => w.get_mut(),
        };
        Bytes::from(std::mem::replace(buf, Vec::with_capacity(CHUNK_BYTES * 2)))
    }

    fn end(&mut self) -> Result<Bytes> {
        match self {
            Encoder::Text(t) => t.end(),
            Encoder::Arrow(w) => w.finish().map_err(arrow_error)?,
        }
        // Nothing follows: no fresh buffer (a 128 KiB allocation per small response).
        Ok(Bytes::from(std::mem::take(match self {
            Encoder::Text(t) => &mut t.out,
            Encoder::Arrow(w) => w.get_mut(),
        })))
    }
}

fn arrow_error(e: arrow_schema::ArrowError) -> Error {
    Error::internal(format!("could not encode the result as Arrow IPC: {e}"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TextKind {
    Json,
    Ndjson,
    Csv,
}

struct TextEncoder {
    kind: TextKind,
    out: Vec<u8>,
    /// Per column, what precedes its value: `{"name":` / `,"name":` for JSON.
    keys: Vec<Vec<u8>>,
    rows: usize,
    /// Write timestamps without a zone as UTC (`Z`) too.
    utc: bool,
    tail: Option<Tail>,
}

impl TextEncoder {
    fn new(kind: TextKind, schema: &SchemaRef) -> TextEncoder {
        // Small to start: most feeds answer a few rows, and the buffer grows by doubling
        // (then stays at [`CHUNK_BYTES`] × 2 after the first chunk, see `take`).
        let mut out = Vec::with_capacity(START_BYTES);
        let mut keys = Vec::new();
        match kind {
            TextKind::Json | TextKind::Ndjson => {
                for (i, f) in schema.fields().iter().enumerate() {
                    let mut k = Vec::new();
                    k.push(if i == 0 { b'{' } else { b',' });
                    json_str(&mut k, f.name().as_bytes());
                    k.push(b':');
                    keys.push(k);
                }
                if kind == TextKind::Json {
                    out.push(b'[');
                }
            }
            TextKind::Csv => {
                for (i, f) in schema.fields().iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    csv_str(&mut out, f.name().as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        TextEncoder {
            kind,
            out,
            keys,
            rows: 0,
            utc: false,
            tail: None,
        }
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let schema = batch.schema();
        let cols = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(a, f)| Column::new(a, f.name(), self.utc))
            .collect::<Result<Vec<_>>>()?;
        let json = self.kind != TextKind::Csv;
        let out = &mut self.out;
        for row in 0..batch.num_rows() {
            match self.kind {
                TextKind::Json if self.rows > 0 => out.push(b','),
                _ => {}
            }
            self.rows += 1;
            for (i, c) in cols.iter().enumerate() {
                if json {
                    out.extend_from_slice(&self.keys[i]);
                } else if i > 0 {
                    out.push(b',');
                }
                c.write(row, out, json);
            }
            match self.kind {
                TextKind::Json if cols.is_empty() => out.extend_from_slice(b"{}"),
                TextKind::Json => out.push(b'}'),
                TextKind::Ndjson if cols.is_empty() => out.extend_from_slice(b"{}\n"),
                TextKind::Ndjson => out.extend_from_slice(b"}\n"),
                TextKind::Csv => out.extend_from_slice(b"\r\n"),
            }
        }
        Ok(())
    }

    fn end(&mut self) {
        if self.kind == TextKind::Json {
            self.out.push(b']');
        }
        if let Some(tail) = self.tail.take() {
            self.out.extend_from_slice(&tail());
        }
    }
}

/// One column of a batch, downcast once per batch so the row loop only matches an enum.
struct Column<'a> {
    /// Validity bits (true = valid) as a boolean array: arrow-buffer's `NullBuffer` is not a
    /// dependency of this crate, and a bit lookup is a bit lookup.
    valid: Option<arrow_array::BooleanArray>,
    values: Values<'a>,
}

enum Values<'a> {
    Null,
    Bool(&'a arrow_array::BooleanArray),
    I64(&'a [i64]),
    I32(&'a [i32]),
    I16(&'a [i16]),
    I8(&'a [i8]),
    U64(&'a [u64]),
    U32(&'a [u32]),
    U16(&'a [u16]),
    U8(&'a [u8]),
    F64(&'a [f64]),
    F32(&'a [f32]),
    Str(&'a arrow_array::StringArray),
    LargeStr(&'a arrow_array::LargeStringArray),
    StrView(&'a arrow_array::StringViewArray),
    Bin(&'a arrow_array::BinaryArray),
    LargeBin(&'a arrow_array::LargeBinaryArray),
    Date32(&'a [i32]),
    Date64(&'a [i64]),
    /// Values, sub-second digits of the unit (0, 3, 6, 9), and whether to write `Z`.
    Ts(&'a [i64], u32, bool),
    /// Time of day since midnight, with the sub-second digits of the unit.
    Time32(&'a [i32], u32),
    Time64(&'a [i64], u32),
    Dec128(&'a [i128], i8),
    Dec256(&'a arrow_array::Decimal256Array, i8),
    Dict(Vec<usize>, Box<Column<'a>>),
}

impl<'a> Column<'a> {
    fn new(a: &'a ArrayRef, name: &str, utc: bool) -> Result<Column<'a>> {
        let values = match a.data_type() {
            DataType::Null => Values::Null,
            DataType::Boolean => Values::Bool(a.as_boolean()),
            DataType::Int64 => Values::I64(a.as_primitive::<Int64Type>().values()),
            DataType::Int32 => Values::I32(a.as_primitive::<Int32Type>().values()),
            DataType::Int16 => Values::I16(a.as_primitive::<Int16Type>().values()),
            DataType::Int8 => Values::I8(a.as_primitive::<Int8Type>().values()),
            DataType::UInt64 => Values::U64(a.as_primitive::<UInt64Type>().values()),
            DataType::UInt32 => Values::U32(a.as_primitive::<UInt32Type>().values()),
            DataType::UInt16 => Values::U16(a.as_primitive::<UInt16Type>().values()),
            DataType::UInt8 => Values::U8(a.as_primitive::<UInt8Type>().values()),
            DataType::Float64 => Values::F64(a.as_primitive::<Float64Type>().values()),
            DataType::Float32 => Values::F32(a.as_primitive::<Float32Type>().values()),
            DataType::Utf8 => Values::Str(a.as_string::<i32>()),
            DataType::LargeUtf8 => Values::LargeStr(a.as_string::<i64>()),
            DataType::Utf8View => Values::StrView(a.as_string_view()),
            DataType::Binary => Values::Bin(a.as_binary::<i32>()),
            DataType::LargeBinary => Values::LargeBin(a.as_binary::<i64>()),
            DataType::Date32 => Values::Date32(a.as_primitive::<Date32Type>().values()),
            DataType::Date64 => Values::Date64(a.as_primitive::<Date64Type>().values()),
            DataType::Timestamp(unit, tz) => {
                let (v, digits) = match unit {
                    TimeUnit::Second => (a.as_primitive::<TimestampSecondType>().values(), 0),
                    TimeUnit::Millisecond => {
                        (a.as_primitive::<TimestampMillisecondType>().values(), 3)
                    }
                    TimeUnit::Microsecond => {
                        (a.as_primitive::<TimestampMicrosecondType>().values(), 6)
                    }
                    TimeUnit::Nanosecond => {
                        (a.as_primitive::<TimestampNanosecondType>().values(), 9)
                    }
                };
                // Arrow stores instants in UTC whatever the zone; writing them as UTC with `Z`
                // is exact for every zone and needs no time-zone database.
                Values::Ts(v, digits, utc || tz.is_some())
            }
            DataType::Time32(unit) => {
                let (v, digits) = match unit {
                    TimeUnit::Millisecond => {
                        (a.as_primitive::<Time32MillisecondType>().values(), 3)
                    }
                    _ => (a.as_primitive::<Time32SecondType>().values(), 0),
                };
                Values::Time32(v, digits)
            }
            DataType::Time64(unit) => {
                let (v, digits) = match unit {
                    TimeUnit::Nanosecond => (a.as_primitive::<Time64NanosecondType>().values(), 9),
                    _ => (a.as_primitive::<Time64MicrosecondType>().values(), 6),
                };
                Values::Time64(v, digits)
            }
            DataType::Decimal128(_, s) => {
                Values::Dec128(a.as_primitive::<Decimal128Type>().values(), *s)
            }
            DataType::Decimal256(_, s) => Values::Dec256(a.as_primitive::<Decimal256Type>(), *s),
            DataType::Dictionary(_, _) => {
                let d = a.as_any_dictionary();
                let values: &'a ArrayRef = d.values();
                Values::Dict(
                    d.normalized_keys(),
                    Box::new(Column::new(values, name, utc)?),
                )
            }
            other => {
                return Err(Error::new(
                    Code::Internal,
                    format!(
                        "column '{name}' has Arrow type {other} which the gateway cannot encode yet; \
                         convert it to text in the feed (e.g. df['{name}'] = df['{name}'].astype(str))"
                    ),
                )
                .with("column", name));
            }
        };
        let valid = a
            .logical_nulls()
            .map(|n| arrow_array::BooleanArray::new(n.into_inner(), None));
        Ok(Column { valid, values })
    }

    #[inline]
    fn write(&self, row: usize, out: &mut Vec<u8>, json: bool) {
        if self.valid.as_ref().is_some_and(|v| !v.value(row)) {
            if json {
                out.extend_from_slice(b"null");
            }
            return;
        }
        match &self.values {
            Values::Null => {
                if json {
                    out.extend_from_slice(b"null")
                }
            }
            Values::Bool(a) => out.extend_from_slice(if a.value(row) { b"true" } else { b"false" }),
            Values::I64(v) => int(out, v[row] as i128),
            Values::I32(v) => int(out, v[row] as i128),
            Values::I16(v) => int(out, v[row] as i128),
            Values::I8(v) => int(out, v[row] as i128),
            Values::U64(v) => int(out, v[row] as i128),
            Values::U32(v) => int(out, v[row] as i128),
            Values::U16(v) => int(out, v[row] as i128),
            Values::U8(v) => int(out, v[row] as i128),
            Values::F64(v) => float(out, v[row], json),
            Values::F32(v) => float(out, v[row] as f64, json),
            Values::Str(a) => text(out, a.value(row).as_bytes(), json),
            Values::LargeStr(a) => text(out, a.value(row).as_bytes(), json),
            Values::StrView(a) => text(out, a.value(row).as_bytes(), json),
            Values::Bin(a) => hex(out, a.value(row), json),
            Values::LargeBin(a) => hex(out, a.value(row), json),
            Values::Date32(v) => quoted(out, json, |o| date(o, v[row] as i64)),
            Values::Date64(v) => quoted(out, json, |o| date(o, v[row].div_euclid(86_400_000))),
            Values::Ts(v, digits, z) => quoted(out, json, |o| timestamp(o, v[row], *digits, *z)),
            Values::Time32(v, digits) => quoted(out, json, |o| time(o, v[row] as i64, *digits)),
            Values::Time64(v, digits) => quoted(out, json, |o| time(o, v[row], *digits)),
            Values::Dec128(v, s) => decimal(out, &v[row].to_string(), *s),
            Values::Dec256(a, s) => decimal(out, &a.value(row).to_string(), *s),
            Values::Dict(keys, values) => values.write(keys[row], out, json),
        }
    }
}

fn quoted(out: &mut Vec<u8>, json: bool, f: impl FnOnce(&mut Vec<u8>)) {
    if json {
        out.push(b'"');
    }
    f(out);
    if json {
        out.push(b'"');
    }
}

fn int(out: &mut Vec<u8>, v: i128) {
    // Digits are produced backwards into a stack buffer: no allocation, no formatter.
    let mut buf = [0u8; 40];
    let mut i = buf.len();
    let neg = v < 0;
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if neg {
        i -= 1;
        buf[i] = b'-';
    }
    out.extend_from_slice(&buf[i..]);
}

fn float(out: &mut Vec<u8>, v: f64, json: bool) {
    use std::io::Write;
    if v.is_finite() {
        // Rust's float Display is the shortest text that reads back to the same value.
        let _ = write!(out, "{v}");
    } else if json {
        // JSON has no NaN or Infinity; BI tools choke on the non-standard tokens.
        out.extend_from_slice(b"null");
    }
}

fn text(out: &mut Vec<u8>, s: &[u8], json: bool) {
    if json {
        json_str(out, s)
    } else {
        csv_str(out, s)
    }
}

fn json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// RFC 4180: quote a field only when it holds a comma, a quote or a line break; double the
/// quotes inside.
fn csv_str(out: &mut Vec<u8>, s: &[u8]) {
    if !s.iter().any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        out.extend_from_slice(s);
        return;
    }
    out.push(b'"');
    for &b in s {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn hex(out: &mut Vec<u8>, s: &[u8], json: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    quoted(out, json, |o| {
        for &b in s {
            o.push(HEX[(b >> 4) as usize]);
            o.push(HEX[(b & 15) as usize]);
        }
    })
}

fn pad(out: &mut Vec<u8>, v: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut n = v;
    for i in (10 - width..10).rev() {
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[10 - width..]);
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (Howard Hinnant's
/// `civil_from_days`), so no date library runs per value.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn date(out: &mut Vec<u8>, days: i64) {
    let (y, m, d) = civil(days);
    if (0..=9999).contains(&y) {
        pad(out, y as u32, 4);
    } else {
        int(out, y as i128);
    }
    out.push(b'-');
    pad(out, m, 2);
    out.push(b'-');
    pad(out, d, 2);
}

/// ISO 8601 `YYYY-MM-DDTHH:MM:SS[.fff…][Z]`; the fraction appears only when non-zero, with
/// the digits of the column's unit.
fn timestamp(out: &mut Vec<u8>, v: i64, digits: u32, z: bool) {
    let per_sec = 10i64.pow(digits);
    date(out, v.div_euclid(per_sec).div_euclid(86_400));
    out.push(b'T');
    time(out, v.rem_euclid(per_sec * 86_400), digits);
    if z {
        out.push(b'Z');
    }
}

/// `hh:mm:ss[.fff]` of a time since midnight in units of 10^-digits s.
fn time(out: &mut Vec<u8>, v: i64, digits: u32) {
    let per_sec = 10i64.pow(digits);
    let secs = v.div_euclid(per_sec);
    let frac = v.rem_euclid(per_sec);
    let s = secs.rem_euclid(86_400) as u32;
    pad(out, s / 3600, 2);
    out.push(b':');
    pad(out, s / 60 % 60, 2);
    out.push(b':');
    pad(out, s % 60, 2);
    if frac != 0 {
        out.push(b'.');
        pad(out, frac as u32, digits as usize);
    }
}

/// An unscaled integer's decimal text with the point put back: exact, never through f64.
fn decimal(out: &mut Vec<u8>, unscaled: &str, scale: i8) {
    let (sign, digits) = match unscaled.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", unscaled),
    };
    out.extend_from_slice(sign.as_bytes());
    if scale <= 0 {
        out.extend_from_slice(digits.as_bytes());
        if digits != "0" {
            out.extend(std::iter::repeat_n(b'0', (-scale) as usize));
        }
        return;
    }
    let scale = scale as usize;
    if digits.len() > scale {
        let (i, f) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(i.as_bytes());
        out.push(b'.');
        out.extend_from_slice(f.as_bytes());
    } else {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow_schema::{Field, Schema};
    use std::sync::Arc;

    fn sample() -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("d", DataType::Date32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new(
                "tz",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("amt", DataType::Decimal128(12, 2), true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(-7), None, Some(i64::MAX)])),
            Arc::new(StringArray::from(vec![
                Some("a,\"b\"\nc"),
                Some("Zürich ✓\t\u{1}"),
                None,
            ])),
            Arc::new(Float64Array::from(vec![Some(0.1), Some(f64::NAN), None])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(Date32Array::from(vec![Some(19_723), Some(-1), None])), // 2024-01-01, 1969-12-31
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(1_704_067_200_000_000),
                Some(-1),
                None,
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1_704_067_200_123_456), None, Some(0)])
                    .with_timezone("UTC"),
            ),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), Some(-5), None])
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        (schema, batch)
    }

    async fn run(
        format: Format,
        schema: SchemaRef,
        batches: Vec<Result<RecordBatch>>,
    ) -> Vec<Result<Bytes>> {
        encode(format, schema, futures::stream::iter(batches).boxed())
            .collect()
            .await
    }

    async fn body(format: Format, schema: SchemaRef, batches: Vec<RecordBatch>) -> String {
        let chunks = run(format, schema, batches.into_iter().map(Ok).collect()).await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn formats_from_query_and_accept() {
        assert_eq!(Format::from_query("CSV"), Some(Format::Csv));
        assert_eq!(Format::from_query("arrow"), Some(Format::Arrow));
        assert_eq!(Format::from_query("xml"), None);
        assert_eq!(Format::from_accept("text/csv"), Some(Format::Csv));
        assert_eq!(
            Format::from_accept("application/json; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_accept("application/ndjson"),
            Some(Format::Ndjson)
        );
        assert_eq!(
            Format::from_accept("application/x-ndjson"),
            Some(Format::Ndjson)
        );
        assert_eq!(
            Format::from_accept("application/vnd.apache.arrow.stream"),
            Some(Format::Arrow)
        );
        assert_eq!(
            Format::from_accept("text/csv;q=0.5, application/json;q=0.9"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_accept("*/*;q=0.1, text/csv"),
            Some(Format::Csv)
        );
        assert_eq!(
            Format::from_accept("*/*, text/csv"),
            Some(Format::Csv),
            "exact beats wildcard at equal q"
        );
        assert_eq!(Format::from_accept("*/*"), Some(Format::Json));
        assert_eq!(Format::from_accept("text/*"), Some(Format::Csv));
        assert_eq!(Format::from_accept("text/html, image/png"), None);
        assert_eq!(Format::from_accept("application/json;q=0"), None);
        assert_eq!(
            Format::Csv.content_type(),
            "text/csv; charset=utf-8; header=present"
        );
        assert_eq!(Format::Ndjson.extension(), "ndjson");
    }

    #[tokio::test]
    async fn wrapped_json_writes_utc_times_and_the_tail_after_the_rows() {
        let (schema, batch) = sample();
        let times = Schema::new(vec![
            Field::new("t64", DataType::Time64(TimeUnit::Microsecond), true),
            Field::new("t32", DataType::Time32(TimeUnit::Second), true),
        ]);
        let tb = RecordBatch::try_new(
            Arc::new(times),
            vec![
                Arc::new(arrow_array::Time64MicrosecondArray::from(vec![Some(
                    (13 * 3600 + 4 * 60 + 5) * 1_000_000 + 250_000,
                )])) as ArrayRef,
                Arc::new(arrow_array::Time32SecondArray::from(vec![Some(59)])),
            ],
        )
        .unwrap();
        let body = |schema: SchemaRef, batch: RecordBatch| async move {
            let chunks: Vec<Result<Bytes>> = encode_wrapped(
                schema,
                futures::stream::iter(vec![Ok(batch)]).boxed(),
                br#"{"head":1,"value":"#.to_vec(),
                Box::new(|| br#","tail":2}"#.to_vec()),
            )
            .collect()
            .await;
            let bytes: Vec<u8> = chunks
                .into_iter()
                .flat_map(|c| c.unwrap().to_vec())
                .collect();
            String::from_utf8(bytes).unwrap()
        };
        let out = body(schema, batch).await;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["head"], 1);
        assert_eq!(v["tail"], 2);
        assert_eq!(v["value"].as_array().unwrap().len(), 3);
        // A timestamp without a zone is written as UTC for OData's DateTimeOffset.
        assert_eq!(v["value"][0]["ts"], "2024-01-01T00:00:00Z");
        assert_eq!(v["value"][1]["ts"], "1969-12-31T23:59:59.999999Z");
        let out = body(tb.schema(), tb).await;
        assert_eq!(
            out,
            r#"{"head":1,"value":[{"t64":"13:04:05.250000","t32":"00:00:59"}],"tail":2}"#
        );
    }

    #[tokio::test]
    async fn json_keeps_null_keys_and_formats_values() {
        let (schema, batch) = sample();
        let out = body(Format::Json, schema, vec![batch]).await;
        let expected = concat!(
            r#"[{"id":-7,"name":"a,\"b\"\nc","x":0.1,"ok":true,"d":"2024-01-01","ts":"2024-01-01T00:00:00","#,
            r#""tz":"2024-01-01T00:00:00.123456Z","amt":123.45},"#,
            r#"{"id":null,"name":"Zürich ✓\t\u0001","x":null,"ok":false,"d":"1969-12-31","ts":"1969-12-31T23:59:59.999999","#,
            r#""tz":null,"amt":-0.05},"#,
            r#"{"id":9223372036854775807,"name":null,"x":null,"ok":null,"d":null,"ts":null,"tz":"1970-01-01T00:00:00Z","amt":null}]"#
        );
        assert_eq!(out, expected);
        // And it is valid JSON that a parser reads back.
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[1]["name"], "Zürich ✓\t\u{1}");
        assert_eq!(v[0]["name"], "a,\"b\"\nc");
    }

    #[tokio::test]
    async fn ndjson_is_one_object_per_line() {
        let (schema, batch) = sample();
        let out = body(Format::Ndjson, schema, vec![batch.clone(), batch]).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6);
        for l in &lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(
                v.as_object().unwrap().len(),
                8,
                "every key present, nulls included"
            );
        }
        assert!(out.ends_with("}\n"));
    }

    #[tokio::test]
    async fn csv_is_rfc4180() {
        let (schema, batch) = sample();
        let out = body(Format::Csv, schema, vec![batch]).await;
        let expected = "id,name,x,ok,d,ts,tz,amt\r\n\
            -7,\"a,\"\"b\"\"\nc\",0.1,true,2024-01-01,2024-01-01T00:00:00,2024-01-01T00:00:00.123456Z,123.45\r\n\
            ,Zürich ✓\t\u{1},,false,1969-12-31,1969-12-31T23:59:59.999999,,-0.05\r\n\
            9223372036854775807,,,,,,1970-01-01T00:00:00Z,\r\n";
        assert_eq!(out, expected);
    }

    #[tokio::test]
    async fn empty_results_have_shape() {
        let (schema, _) = sample();
        assert_eq!(body(Format::Json, schema.clone(), vec![]).await, "[]");
        assert_eq!(body(Format::Ndjson, schema.clone(), vec![]).await, "");
        assert_eq!(
            body(Format::Csv, schema.clone(), vec![]).await,
            "id,name,x,ok,d,ts,tz,amt\r\n"
        );
        let empty = RecordBatch::new_empty(schema.clone());
        assert_eq!(body(Format::Json, schema.clone(), vec![empty]).await, "[]");
        let header = "\"we,ird\",\"q\"\"uote\"\r\n";
        let odd = Arc::new(Schema::new(vec![
            Field::new("we,ird", DataType::Int64, true),
            Field::new("q\"uote", DataType::Utf8, true),
        ]));
        assert_eq!(body(Format::Csv, odd, vec![]).await, header);
    }

    #[tokio::test]
    async fn arrow_round_trips_through_the_ipc_reader() {
        let (schema, batch) = sample();
        let out = run(
            Format::Arrow,
            schema.clone(),
            vec![Ok(batch.clone()), Ok(batch.clone())],
        )
        .await;
        let bytes: Vec<u8> = out.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
        let reader =
            arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        assert_eq!(reader.schema(), schema);
        let got: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(got, vec![batch.clone(), batch]);

        // Zero rows: still a readable stream with the schema.
        let out = run(Format::Arrow, schema.clone(), vec![]).await;
        let bytes: Vec<u8> = out.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
        let reader =
            arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        assert_eq!(reader.schema(), schema);
        assert_eq!(reader.count(), 0);
    }

    fn wide(rows: usize, offset: i64) -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, true),
            Field::new("day", DataType::Date32, false),
            // "+00:00" rather than "UTC": arrow-json/arrow-csv without chrono-tz reject named
            // zones, and the benchmark below compares against them.
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                false,
            ),
        ]));
        let regions = ["north", "south", "east", "west, central"];
        let r = 0..rows as i64;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(r.clone().map(|i| i + offset))),
            Arc::new(StringArray::from_iter_values(
                r.clone().map(|i| regions[i as usize % 4]),
            )),
            Arc::new(Float64Array::from_iter(
                r.clone().map(|i| (i % 10 != 0).then_some(i as f64 * 1.25)),
            )),
            Arc::new(Date32Array::from_iter_values(
                r.clone().map(|i| 19_000 + (i % 1000) as i32),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    r.map(|i| 1_700_000_000_000_000 + i * 1_000_123),
                )
                .with_timezone("+00:00"),
            ),
        ];
        (schema.clone(), RecordBatch::try_new(schema, cols).unwrap())
    }

    #[tokio::test]
    async fn large_results_stream_in_bounded_chunks_and_errors_follow_data() {
        let (schema, _) = wide(1, 0);
        let batches: Vec<Result<RecordBatch>> =
            (0..13).map(|i| Ok(wide(8192, i * 8192).1)).collect();
        for format in [Format::Json, Format::Csv, Format::Ndjson, Format::Arrow] {
            let chunks = run(format, schema.clone(), batches.clone()).await;
            assert!(chunks.len() > 5, "{format:?}: {} chunks", chunks.len());
            let n = chunks.len();
            for (i, c) in chunks.iter().enumerate() {
                let len = c.as_ref().unwrap().len();
                assert!(
                    i == n - 1 || len >= CHUNK_BYTES,
                    "{format:?} chunk {i} has {len} bytes"
                );
                assert!(
                    len < 8 * CHUNK_BYTES + 2_000_000,
                    "{format:?} chunk {i} too large: {len}"
                );
            }
        }
        let json = body(
            Format::Json,
            schema.clone(),
            batches.iter().map(|b| b.clone().unwrap()).collect(),
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 13 * 8192);
        assert_eq!(v[106_495]["id"], 106_495);

        let mut with_error = batches[..10].to_vec();
        with_error.push(Err(Error::new(Code::SourceQueryFailed, "connection lost")));
        with_error.push(Ok(wide(10, 0).1));
        let chunks = run(Format::Csv, schema, with_error).await;
        let last = chunks.last().unwrap();
        assert_eq!(last.as_ref().unwrap_err().code, Code::SourceQueryFailed);
        assert!(chunks[..chunks.len() - 1].iter().all(|c| c.is_ok()));
        assert!(chunks.len() > 2, "data before the error was sent");
    }

    #[tokio::test]
    async fn other_arrow_types_encode_or_fail_clearly() {
        use arrow_array::{
            DictionaryArray, Int32Array, LargeStringArray, TimestampNanosecondArray,
            types::Int8Type,
        };
        let dict: DictionaryArray<Int8Type> =
            vec![Some("a"), None, Some("b")].into_iter().collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("s", DataType::LargeUtf8, true),
            Field::new("c", dict.data_type().clone(), true),
            Field::new(
                "ns",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+02:00".into())),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int32Array::from(vec![1, 2, 3])),
                Arc::new(LargeStringArray::from(vec!["x", "y", "z"])),
                Arc::new(dict),
                Arc::new(
                    TimestampNanosecondArray::from(vec![1, 0, 1_000_000_000])
                        .with_timezone("+02:00"),
                ),
            ],
        )
        .unwrap();
        let out = body(Format::Ndjson, schema, vec![batch]).await;
        assert_eq!(
            out,
            "{\"i\":1,\"s\":\"x\",\"c\":\"a\",\"ns\":\"1970-01-01T00:00:00.000000001Z\"}\n\
             {\"i\":2,\"s\":\"y\",\"c\":null,\"ns\":\"1970-01-01T00:00:00Z\"}\n\
             {\"i\":3,\"s\":\"z\",\"c\":\"b\",\"ns\":\"1970-01-01T00:00:01Z\"}\n"
        );

        let list = arrow_array::ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(
            vec![Some(1)],
        )]);
        let schema = Arc::new(Schema::new(vec![Field::new(
            "tags",
            list.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(list)]).unwrap();
        let chunks = run(Format::Json, schema, vec![Ok(batch)]).await;
        let err = chunks.into_iter().find_map(|c| c.err()).unwrap();
        assert!(err.message.contains("column 'tags'"), "{}", err.message);
    }

    #[test]
    fn decimals_and_dates_are_exact() {
        let mut o = Vec::new();
        decimal(&mut o, "12345", 2);
        o.push(b' ');
        decimal(&mut o, "-5", 3);
        o.push(b' ');
        decimal(&mut o, "7", -2);
        o.push(b' ');
        decimal(&mut o, "99999999999999999999999999999999999999", 10);
        assert_eq!(
            String::from_utf8(o).unwrap(),
            "123.45 -0.005 700 9999999999999999999999999999.9999999999"
        );
        for (days, s) in [
            (0, "1970-01-01"),
            (11_016, "2000-02-29"),
            (-719_528, "0000-01-01"),
            (2_932_896, "9999-12-31"),
        ] {
            let mut o = Vec::new();
            date(&mut o, days);
            assert_eq!(String::from_utf8(o).unwrap(), s);
        }
    }

    /// Measures the hand-rolled encoders against arrow-json / arrow-csv on 100k rows x 5
    /// columns and checks they are not slower. Run with `--release --nocapture` for figures.
    #[tokio::test]
    async fn throughput_versus_arrow_writers() {
        let batches: Vec<RecordBatch> = (0..13).map(|i| wide(8192, i * 8192).1).collect();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let schema = batches[0].schema();
        let time = |f: &mut dyn FnMut() -> usize| {
            let t = std::time::Instant::now();
            let bytes = f();
            (t.elapsed().as_secs_f64(), bytes)
        };
        let mut figures = Vec::new();
        for (format, name) in [
            (Format::Json, "json"),
            (Format::Csv, "csv"),
            (Format::Arrow, "arrow"),
        ] {
            let t = std::time::Instant::now();
            let chunks = run(
                format,
                schema.clone(),
                batches.iter().cloned().map(Ok).collect(),
            )
            .await;
            let ours = t.elapsed().as_secs_f64();
            let bytes: usize = chunks.iter().map(|c| c.as_ref().unwrap().len()).sum();
            let (theirs, their_bytes) = match format {
                Format::Json => time(&mut || {
                    let mut w = arrow_json::ArrayWriter::new(Vec::new());
                    for b in &batches {
                        w.write(b).unwrap();
                    }
                    w.finish().unwrap();
                    w.into_inner().len()
                }),
                Format::Csv => time(&mut || {
                    let mut w = arrow_csv::Writer::new(Vec::new());
                    for b in &batches {
                        w.write(b).unwrap();
                    }
                    w.into_inner().len()
                }),
                _ => (ours, bytes),
            };
            figures.push(format!(
                "{name}: ours {:.0} rows/s ({} B), arrow writer {:.0} rows/s ({} B)",
                rows as f64 / ours,
                bytes,
                rows as f64 / theirs,
                their_bytes
            ));
            // Generous margin: this is a regression tripwire, not a benchmark.
            assert!(
                ours < theirs * 3.0 + 0.05,
                "{name}: ours {ours}s vs arrow writer {theirs}s"
            );
        }
        println!("{}", figures.join("\n"));
    }
}
