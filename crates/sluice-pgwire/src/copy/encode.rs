//! Rows of Arrow batches as `COPY ... TO STDOUT` sends them, written straight into one
//! byte buffer: PostgreSQL's text format (backslash escapes, `\N`), its CSV (quoting as
//! its `CopyAttributeOutCSV`) and its binary format (`PGCOPY` signature, length-prefixed
//! binary values).
//!
//! Each value's text is PostgreSQL's own, as its output functions write it under the
//! ISO `DateStyle`: strings, integers, booleans `t`/`f`, numerics with their scale, dates,
//! timestamps (`2024-01-01 00:00:00+00`, the fraction only when there is one) and floats
//! (the shortest form that reads back the same, `1e+20`, `Infinity`). These common
//! types are written here without a per-value allocation; any other type, and every
//! value in binary format, is encoded by `arrow-pg` as the row encoder does (`rows.rs`).

use super::parse::{Format, Options};
use crate::rows::{MAX_DECIMAL_SCALE, Zone, decimal, timestamp, write_date};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch, temporal_conversions};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, TimeUnit};
use bytes::{BufMut, BytesMut};
use chrono::{Datelike, NaiveDateTime, Timelike};
use datafusion_postgres::arrow_pg::encoder::{Encoder, encode_value};
use datafusion_postgres::pgwire;
use pgwire::api::results::FieldInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::types::ToSqlText;
use postgres_types::{IsNull, ToSql};
use std::sync::Arc;

/// The binary format's signature, flags and header extension length.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Encodes the rows of one `COPY`.
pub struct RowEncoder {
    format: Format,
    delimiter: u8,
    null: Vec<u8>,
    quote: u8,
    escape: u8,
    /// Per column: CSV values always quoted (`FORCE_QUOTE`).
    force_quote: Vec<bool>,
    /// Bytes a text value escapes, or that make a CSV value quoted.
    special: [bool; 256],
    fields: Arc<Vec<FieldInfo>>,
    /// Dates and timestamps in the ISO style (the client's `DateStyle`): written here.
    iso: bool,
    /// Floats in their shortest exact form (`extra_float_digits` > 0): written here.
    shortest: bool,
    /// A value's text from `arrow-pg`, before it is escaped.
    scratch: BytesMut,
}

impl RowEncoder {
    pub fn new(
        options: &Options,
        force_quote: Vec<bool>,
        fields: Arc<Vec<FieldInfo>>,
        iso: bool,
        extra_float_digits: i8,
    ) -> RowEncoder {
        let mut special = [false; 256];
        match options.format {
            Format::Text => {
                for b in [b'\\', 8, 9, 10, 11, 12, 13, options.delimiter] {
                    special[b as usize] = true;
                }
            }
            Format::Csv => {
                for b in [options.delimiter, options.quote, b'\n', b'\r'] {
                    special[b as usize] = true;
                }
            }
            Format::Binary => {}
        }
        RowEncoder {
            format: options.format,
            delimiter: options.delimiter,
            null: options.null.clone(),
            quote: options.quote,
            escape: options.escape,
            force_quote,
            special,
            fields,
            iso,
            shortest: extra_float_digits > 0,
            scratch: BytesMut::new(),
        }
    }

    /// The column names line of `HEADER`.
    pub fn header(&self, out: &mut BytesMut) {
        let single = self.fields.len() == 1;
        for (i, f) in self.fields.iter().enumerate() {
            if i > 0 {
                out.put_u8(self.delimiter);
            }
            self.value(out, f.name().as_bytes(), false, single);
        }
        out.put_u8(b'\n');
    }

    /// What the binary format starts with (sent with the first row, as PostgreSQL does).
    pub fn signature(out: &mut BytesMut) {
        out.extend_from_slice(SIGNATURE);
    }

    /// What the binary format ends with.
    pub fn trailer(out: &mut BytesMut) {
        out.put_i16(-1);
    }

    /// Rows `start..` of `batch` into `out`, the end offset of each in `ends`, until `out`
    /// holds `limit` bytes or the batch ends. The next row to encode.
    pub fn rows(
        &mut self,
        batch: &RecordBatch,
        start: usize,
        out: &mut BytesMut,
        ends: &mut Vec<usize>,
        limit: usize,
    ) -> PgWireResult<usize> {
        let schema = batch.schema();
        let columns: Vec<(Column, Option<NullBuffer>)> = batch
            .columns()
            .iter()
            .map(|a| {
                let column = match self.format {
                    Format::Binary => Column::binary(a),
                    _ => Column::of(a, self.iso, self.shortest),
                };
                (column, a.logical_nulls())
            })
            .collect();
        let single = columns.len() == 1;
        let mut row = start;
        while row < batch.num_rows() && out.len() < limit {
            if self.format == Format::Binary {
                out.put_i16(columns.len() as i16);
            }
            for (i, (column, nulls)) in columns.iter().enumerate() {
                let null = nulls.as_ref().is_some_and(|n| n.is_null(row));
                if self.format == Format::Binary {
                    if null {
                        out.put_i32(-1);
                    } else if let Column::Decimal { values, scale } = column {
                        numeric_binary(out, values[row], *scale);
                    } else {
                        let array = batch.column(i);
                        let mut field = Binary {
                            out: &mut *out,
                            written: false,
                        };
                        encode_value(&mut field, array, row, schema.field(i), &self.fields[i])?;
                        if !field.written {
                            return Err(unsupported(schema.field(i)));
                        }
                    }
                    continue;
                }
                if i > 0 {
                    out.put_u8(self.delimiter);
                }
                if null {
                    out.extend_from_slice(&self.null);
                    continue;
                }
                let force = self.force_quote.get(i).copied().unwrap_or(false);
                let mut text = [0u8; 48];
                let n = match column {
                    Column::Utf8(a) => {
                        self.value(out, a.value(row).as_bytes(), force, single);
                        continue;
                    }
                    Column::LargeUtf8(a) => {
                        self.value(out, a.value(row).as_bytes(), force, single);
                        continue;
                    }
                    Column::Utf8View(a) => {
                        self.value(out, a.value(row).as_bytes(), force, single);
                        continue;
                    }
                    Column::Bool(a) => {
                        text[0] = if a.value(row) { b't' } else { b'f' };
                        Some(1)
                    }
                    Column::Int(v) => Some(put_str(&mut text, itoa::Buffer::new().format(v(row)))),
                    Column::UInt(v) => Some(put_str(&mut text, itoa::Buffer::new().format(v(row)))),
                    Column::Float8(v) => Some(float8(v[row], &mut text)),
                    Column::Float4(v) => Some(float4(v[row], &mut text)),
                    Column::Decimal { values, scale } => decimal(values[row], *scale, &mut text),
                    Column::Date(days) => temporal_conversions::date32_to_datetime(days[row])
                        .map(|d| d.date())
                        .filter(|d| d.year() >= 1)
                        .and_then(|d| write_date(&mut text, d)),
                    Column::Timestamp { values, unit, zone } => {
                        timestamp(values[row], *unit, zone.as_ref())
                            .and_then(|(local, offset)| write_timestamp(&mut text, local, offset))
                    }
                    Column::Arrow => None,
                };
                match n {
                    Some(n) => self.value(out, &text[..n], force, single),
                    None => {
                        // arrow-pg's text, escaped like any other.
                        let mut scratch = std::mem::take(&mut self.scratch);
                        scratch.clear();
                        let mut field = Text {
                            out: &mut scratch,
                            null: None,
                        };
                        encode_value(
                            &mut field,
                            batch.column(i),
                            row,
                            schema.field(i),
                            &self.fields[i],
                        )?;
                        match field.null {
                            None => return Err(unsupported(schema.field(i))),
                            Some(true) => out.extend_from_slice(&self.null),
                            Some(false) => self.value(out, &scratch, force, single),
                        }
                        self.scratch = scratch;
                    }
                }
            }
            if self.format != Format::Binary {
                out.put_u8(b'\n');
            }
            ends.push(out.len());
            row += 1;
        }
        Ok(row)
    }

    /// A value (not NULL) in text or CSV.
    fn value(&self, out: &mut BytesMut, v: &[u8], force: bool, single: bool) {
        match self.format {
            Format::Csv => self.csv(out, v, force, single),
            _ => self.text(out, v),
        }
    }

    /// PostgreSQL's `CopyAttributeOutText`: backslash, the delimiter and the control
    /// characters with a letter escape (`\b \f \n \r \t \v`) are backslashed.
    fn text(&self, out: &mut BytesMut, v: &[u8]) {
        if !v.iter().any(|b| self.special[*b as usize]) {
            out.extend_from_slice(v);
            return;
        }
        let mut start = 0;
        for (i, &b) in v.iter().enumerate() {
            if !self.special[b as usize] {
                continue;
            }
            out.extend_from_slice(&v[start..i]);
            let escaped = match b {
                8 => b'b',
                9 => b't',
                10 => b'n',
                11 => b'v',
                12 => b'f',
                13 => b'r',
                other => other,
            };
            out.put_u8(b'\\');
            out.put_u8(escaped);
            start = i + 1;
        }
        out.extend_from_slice(&v[start..]);
    }

    /// PostgreSQL's `CopyAttributeOutCSV`: quoted when forced, when the value reads as
    /// the NULL string, when it is `\.` alone on its line, or when it holds the
    /// delimiter, the quote or a line break; inside quotes, the quote and the escape
    /// character are preceded by the escape character.
    fn csv(&self, out: &mut BytesMut, v: &[u8], force: bool, single: bool) {
        let quoted = force
            || v == self.null.as_slice()
            || (single && v == b"\\.")
            || v.iter().any(|b| self.special[*b as usize]);
        if !quoted {
            out.extend_from_slice(v);
            return;
        }
        out.put_u8(self.quote);
        let mut start = 0;
        for (i, &b) in v.iter().enumerate() {
            if b == self.quote || b == self.escape {
                out.extend_from_slice(&v[start..i]);
                out.put_u8(self.escape);
                start = i;
            }
        }
        out.extend_from_slice(&v[start..]);
        out.put_u8(self.quote);
    }
}

fn unsupported(field: &Field) -> PgWireError {
    PgWireError::ApiError(
        format!(
            "column \"{}\" of type {} cannot be sent by COPY",
            field.name(),
            field.data_type()
        )
        .into(),
    )
}

fn put_str(out: &mut [u8; 48], s: &str) -> usize {
    out[..s.len()].copy_from_slice(s.as_bytes());
    s.len()
}

/// How one column of a batch is written, its values taken out of the array once.
enum Column {
    Utf8(arrow_array::StringArray),
    LargeUtf8(arrow_array::LargeStringArray),
    Utf8View(arrow_array::StringViewArray),
    Bool(arrow_array::BooleanArray),
    Int(Box<dyn Fn(usize) -> i64>),
    UInt(Box<dyn Fn(usize) -> u64>),
    Float8(ScalarBuffer<f64>),
    Float4(ScalarBuffer<f32>),
    Decimal {
        values: ScalarBuffer<i128>,
        scale: u32,
    },
    /// Days since the Unix epoch.
    Date(ScalarBuffer<i32>),
    Timestamp {
        values: ScalarBuffer<i64>,
        unit: TimeUnit,
        zone: Option<Zone>,
    },
    /// By `arrow-pg`.
    Arrow,
}

macro_rules! int {
    ($array:expr, $t:ty, $variant:ident, $as:ty) => {{
        let v = $array.as_primitive_opt::<$t>()?.values().clone();
        Column::$variant(Box::new(move |i| v[i] as $as))
    }};
}

impl Column {
    /// In binary format, decimals are written here (`rust_decimal`, through which
    /// `arrow-pg` writes them, drops the scale of a zero and stops at 96 bits).
    fn binary(a: &ArrayRef) -> Column {
        match (a.data_type(), a.as_primitive_opt::<Decimal128Type>()) {
            (DataType::Decimal128(_, scale), Some(d)) if *scale >= 0 => Column::Decimal {
                values: d.values().clone(),
                scale: *scale as u32,
            },
            _ => Column::Arrow,
        }
    }

    fn of(array: &ArrayRef, iso: bool, shortest: bool) -> Column {
        Self::fast(array, iso, shortest).unwrap_or(Column::Arrow)
    }

    fn fast(a: &ArrayRef, iso: bool, shortest: bool) -> Option<Column> {
        Some(match a.data_type() {
            DataType::Utf8 => Column::Utf8(a.as_string_opt::<i32>()?.clone()),
            DataType::LargeUtf8 => Column::LargeUtf8(a.as_string_opt::<i64>()?.clone()),
            DataType::Utf8View => Column::Utf8View(a.as_string_view_opt()?.clone()),
            DataType::Boolean => Column::Bool(a.as_boolean_opt()?.clone()),
            DataType::Int8 => int!(a, Int8Type, Int, i64),
            DataType::Int16 => int!(a, Int16Type, Int, i64),
            DataType::Int32 => int!(a, Int32Type, Int, i64),
            DataType::Int64 => int!(a, Int64Type, Int, i64),
            DataType::UInt8 => int!(a, UInt8Type, UInt, u64),
            DataType::UInt16 => int!(a, UInt16Type, UInt, u64),
            DataType::UInt32 => int!(a, UInt32Type, UInt, u64),
            DataType::UInt64 => int!(a, UInt64Type, UInt, u64),
            DataType::Float64 if shortest => {
                Column::Float8(a.as_primitive_opt::<Float64Type>()?.values().clone())
            }
            DataType::Float32 if shortest => {
                Column::Float4(a.as_primitive_opt::<Float32Type>()?.values().clone())
            }
            DataType::Decimal128(_, scale) if (0..=MAX_DECIMAL_SCALE).contains(scale) => {
                Column::Decimal {
                    values: a.as_primitive_opt::<Decimal128Type>()?.values().clone(),
                    scale: *scale as u32,
                }
            }
            DataType::Date32 if iso => {
                Column::Date(a.as_primitive_opt::<Date32Type>()?.values().clone())
            }
            DataType::Timestamp(unit, tz) if iso => {
                let zone = match tz {
                    None => None,
                    Some(tz) => Some(Zone::parse(tz)?),
                };
                let values = match unit {
                    TimeUnit::Second => a.as_primitive_opt::<TimestampSecondType>()?.values(),
                    TimeUnit::Millisecond => {
                        a.as_primitive_opt::<TimestampMillisecondType>()?.values()
                    }
                    TimeUnit::Microsecond => {
                        a.as_primitive_opt::<TimestampMicrosecondType>()?.values()
                    }
                    TimeUnit::Nanosecond => {
                        a.as_primitive_opt::<TimestampNanosecondType>()?.values()
                    }
                };
                Column::Timestamp {
                    values: values.clone(),
                    unit: *unit,
                    zone,
                }
            }
            _ => return None,
        })
    }
}

/// `arrow-pg`'s encoder interface, taking one value's text.
struct Text<'a> {
    out: &'a mut BytesMut,
    /// Whether the value was NULL; None when nothing was encoded.
    null: Option<bool>,
}

impl Encoder for Text<'_> {
    type Item = ();

    fn encode_field<T>(&mut self, value: &T, pg_field: &FieldInfo) -> PgWireResult<()>
    where
        T: ToSql + ToSqlText + Sized,
    {
        let is_null =
            value.to_sql_text(pg_field.datatype(), self.out, pg_field.format_options())?;
        self.null = Some(matches!(is_null, IsNull::Yes));
        Ok(())
    }

    fn take_row(&mut self) {}
}

/// `arrow-pg`'s encoder interface, writing one value in binary format with its length.
struct Binary<'a> {
    out: &'a mut BytesMut,
    written: bool,
}

impl Encoder for Binary<'_> {
    type Item = ();

    fn encode_field<T>(&mut self, value: &T, pg_field: &FieldInfo) -> PgWireResult<()>
    where
        T: ToSql + ToSqlText + Sized,
    {
        let at = self.out.len();
        self.out.put_i32(-1);
        if let IsNull::No = value.to_sql(pg_field.datatype(), self.out)? {
            let len = (self.out.len() - at - 4) as i32;
            self.out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        self.written = true;
        Ok(())
    }

    fn take_row(&mut self) {}
}

/// PostgreSQL's binary `numeric` (its `numeric_send`), with its length: base-10000
/// digits around the decimal point, without leading or trailing zero digits, the weight
/// of the first, the sign, and the scale to print.
fn numeric_binary(out: &mut BytesMut, v: i128, scale: u32) {
    // The decimal digits of |v|, then laid out on whole groups of four each side of the
    // point.
    let mut m = v.unsigned_abs();
    let mut dec = [0u8; 40];
    let mut len = 0;
    while m > 0 {
        dec[len] = (m % 10) as u8;
        m /= 10;
        len += 1;
    }
    let s = scale as usize;
    let frac_groups = s.div_ceil(4);
    let int_groups = len.saturating_sub(s).div_ceil(4);
    let digit = |pos: isize| -> i16 {
        // pos: the power of ten, 0 for units, -1 for tenths.
        let i = pos + s as isize;
        if i < 0 || i as usize >= len {
            0
        } else {
            i16::from(dec[i as usize])
        }
    };
    let mut groups: Vec<i16> = Vec::with_capacity(int_groups + frac_groups);
    let top = 4 * int_groups as isize - 1;
    let mut pos = top;
    while pos >= -(4 * frac_groups as isize) {
        groups
            .push(digit(pos) * 1000 + digit(pos - 1) * 100 + digit(pos - 2) * 10 + digit(pos - 3));
        pos -= 4;
    }
    let mut weight = int_groups as i16 - 1;
    let lead = groups.iter().take_while(|g| **g == 0).count();
    let trail = groups[lead..].iter().rev().take_while(|g| **g == 0).count();
    let digits = &groups[lead..groups.len() - trail];
    weight -= lead as i16;
    if digits.is_empty() {
        weight = 0;
    }
    out.put_i32(8 + 2 * digits.len() as i32);
    out.put_u16(digits.len() as u16);
    out.put_i16(weight);
    out.put_u16(if v < 0 && !digits.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_u16(scale as u16);
    for g in digits {
        out.put_i16(*g);
    }
}

/// PostgreSQL's `float8out` (`extra_float_digits` > 0): the shortest digits that read
/// back as the same double, positional from 1e-4 to below 1e15, else `d.ddde+XX`.
pub fn float8(v: f64, out: &mut [u8; 48]) -> usize {
    if !v.is_finite() || v == 0.0 {
        return special(v, out);
    }
    shortest(ryu::Buffer::new().format_finite(v), 15, out)
}

/// PostgreSQL's `float4out`: the same, positional below 1e6.
pub fn float4(v: f32, out: &mut [u8; 48]) -> usize {
    if !v.is_finite() || v == 0.0 {
        return special(f64::from(v), out);
    }
    shortest(ryu::Buffer::new().format_finite(v), 6, out)
}

fn special(v: f64, out: &mut [u8; 48]) -> usize {
    let s = if v.is_nan() {
        "NaN"
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }
    } else if v.is_sign_negative() {
        "-0"
    } else {
        "0"
    };
    put_str(out, s)
}

/// Ryu's shortest digits (as the `ryu` crate writes them: `1.5`, `123.0`, `1e20`,
/// `1.5e-7`) laid out as PostgreSQL does: positional when the decimal exponent is in
/// `-4..fixed_below`, else scientific with a signed exponent of at least two digits.
fn shortest(ryu: &str, fixed_below: i32, out: &mut [u8; 48]) -> usize {
    let (negative, s) = match ryu.strip_prefix('-') {
        Some(s) => (true, s),
        None => (false, ryu),
    };
    let (mantissa, exp) = match s.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let mut digits = [0u8; 32];
    let mut len = 0;
    let mut point = None;
    for b in mantissa.bytes() {
        if b == b'.' {
            point = Some(len);
        } else if len < digits.len() {
            digits[len] = b;
            len += 1;
        }
    }
    let point = point.unwrap_or(len) as i32;
    let lead = digits[..len].iter().take_while(|d| **d == b'0').count();
    let mut end = len;
    while end > lead + 1 && digits[end - 1] == b'0' {
        end -= 1;
    }
    let d = &digits[lead..end];
    // The decimal exponent of the first significant digit.
    let e10 = point - lead as i32 - 1 + exp;
    let mut n = 0;
    let mut put = |b: u8| {
        out[n] = b;
        n += 1;
    };
    if negative {
        put(b'-');
    }
    if (-4..fixed_below).contains(&e10) {
        if e10 >= 0 {
            let int = e10 as usize + 1;
            for i in 0..int {
                put(d.get(i).copied().unwrap_or(b'0'));
            }
            if d.len() > int {
                put(b'.');
                d[int..].iter().for_each(|b| put(*b));
            }
        } else {
            put(b'0');
            put(b'.');
            for _ in 0..(-e10 - 1) {
                put(b'0');
            }
            d.iter().for_each(|b| put(*b));
        }
    } else {
        put(d[0]);
        if d.len() > 1 {
            put(b'.');
            d[1..].iter().for_each(|b| put(*b));
        }
        put(b'e');
        put(if e10 < 0 { b'-' } else { b'+' });
        let e = e10.unsigned_abs();
        if e >= 100 {
            put(b'0' + (e / 100) as u8);
        }
        put(b'0' + (e / 10 % 10) as u8);
        put(b'0' + (e % 10) as u8);
    }
    n
}

/// PostgreSQL's ISO timestamp: `YYYY-MM-DD HH:MM:SS`, the microseconds only when not
/// zero and without their trailing zeros, and with a zone its offset as `+HH`, `+HH:MM`
/// or `+HH:MM:SS`. None for years outside 1..=9999 (PostgreSQL writes `BC` or five
/// digits), which `arrow-pg` then writes.
pub fn write_timestamp(out: &mut [u8; 48], t: NaiveDateTime, offset: Option<i32>) -> Option<usize> {
    let nanos = t.nanosecond();
    if nanos >= 1_000_000_000 || t.year() < 1 {
        return None;
    }
    write_date(out, t.date())?;
    out[10] = b' ';
    two(&mut out[11..], t.hour());
    out[13] = b':';
    two(&mut out[14..], t.minute());
    out[16] = b':';
    two(&mut out[17..], t.second());
    let mut n = 19;
    let mut micros = nanos / 1000;
    if micros > 0 {
        let mut width = 6;
        while micros.is_multiple_of(10) {
            micros /= 10;
            width -= 1;
        }
        out[n] = b'.';
        for i in (0..width).rev() {
            out[n + 1 + i] = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        n += 1 + width;
    }
    if let Some(offset) = offset {
        let abs = offset.unsigned_abs();
        if abs / 3600 > 99 {
            return None;
        }
        out[n] = if offset < 0 { b'-' } else { b'+' };
        two(&mut out[n + 1..], abs / 3600);
        n += 3;
        let (minutes, seconds) = (abs % 3600 / 60, abs % 60);
        if minutes != 0 || seconds != 0 {
            out[n] = b':';
            two(&mut out[n + 1..], minutes);
            n += 3;
        }
        if seconds != 0 {
            out[n] = b':';
            two(&mut out[n + 1..], seconds);
            n += 3;
        }
    }
    Some(n)
}

fn two(out: &mut [u8], v: u32) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::parse::ForceQuote;
    use arrow_array::{
        BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow_schema::Schema;
    use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
    use pgwire::api::portal::Format as PortalFormat;

    fn f8(v: f64) -> String {
        let mut out = [0u8; 48];
        let n = float8(v, &mut out);
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    fn f4(v: f32) -> String {
        let mut out = [0u8; 48];
        let n = float4(v, &mut out);
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    /// What PostgreSQL 15 prints for these (`select x::text from unnest(array[...]::float8[])`).
    #[test]
    fn floats_as_postgresql_prints_them() {
        for (v, pg) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (5.0, "5"),
            (12.5, "12.5"),
            (-3.25, "-3.25"),
            (0.1, "0.1"),
            (1e15, "1e+15"),
            (1e14, "100000000000000"),
            (123456789012345.0, "123456789012345"),
            (1234567890123456.0, "1.234567890123456e+15"),
            (1e16, "1e+16"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (1e20, "1e+20"),
            (1e100, "1e+100"),
            (1e-100, "1e-100"),
            (2.5e300, "2.5e+300"),
            (9007199254740993.0, "9.007199254740992e+15"),
            (4.9e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(f8(v), pg, "{v:e}");
        }
        for (v, pg) in [
            (1e5f32, "100000"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1.1, "1.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (16777216.0, "1.6777216e+07"),
            (3.4e38, "3.4e+38"),
        ] {
            assert_eq!(f4(v), pg, "{v:e}");
        }
    }

    fn ts(micros: i64, offset: Option<i32>) -> String {
        let t = temporal_conversions::timestamp_us_to_datetime(micros).unwrap();
        let t = t + chrono::Duration::seconds(offset.unwrap_or(0).into());
        let mut out = [0u8; 48];
        let n = write_timestamp(&mut out, t, offset).unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn timestamps_as_postgresql_prints_them() {
        let jan1 = 1_704_067_200_000_000; // 2024-01-01 00:00:00 UTC
        assert_eq!(ts(jan1, Some(0)), "2024-01-01 00:00:00+00");
        assert_eq!(ts(jan1 + 500_000, Some(0)), "2024-01-01 00:00:00.5+00");
        assert_eq!(ts(jan1 + 123, Some(0)), "2024-01-01 00:00:00.000123+00");
        assert_eq!(ts(jan1 + 36_000_000_000, None), "2024-01-01 10:00:00");
        assert_eq!(ts(jan1, Some(19_800)), "2024-01-01 05:30:00+05:30");
        assert_eq!(ts(jan1, Some(-18_000)), "2023-12-31 19:00:00-05");
        // Local mean time offsets have seconds (1900 in Asia/Kolkata).
        assert_eq!(
            ts(-2_208_988_800_000_000, Some(19_270)),
            "1900-01-01 05:21:10+05:21:10"
        );
    }

    fn encode(batch: &RecordBatch, options: &Options, force: Vec<bool>) -> Vec<Vec<u8>> {
        let format = if options.format == Format::Binary {
            PortalFormat::UnifiedBinary
        } else {
            PortalFormat::UnifiedText
        };
        let fields = Arc::new(arrow_schema_to_pg_fields(&batch.schema(), &format, None).unwrap());
        let mut enc = RowEncoder::new(options, force, fields, true, 1);
        let mut out = BytesMut::new();
        let mut ends = vec![];
        if options.header {
            enc.header(&mut out);
            ends.push(out.len());
        }
        let mut next = 0;
        while next < batch.num_rows() {
            // A small chunk: rows are never split across chunks.
            let limit = out.len() + 10;
            next = enc.rows(batch, next, &mut out, &mut ends, limit).unwrap();
        }
        let mut start = 0;
        ends.iter()
            .map(|&e| {
                let row = out[start..e].to_vec();
                start = e;
                row
            })
            .collect()
    }

    fn options(format: Format) -> Options {
        let csv = format == Format::Csv;
        Options {
            format,
            delimiter: if csv { b',' } else { b'\t' },
            null: if csv { vec![] } else { b"\\N".to_vec() },
            header: false,
            quote: b'"',
            escape: b'"',
            force_quote: ForceQuote::None,
        }
    }

    fn tricky() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5, 6, 7, 8])),
                Arc::new(StringArray::from(vec![
                    Some("a\tb"),
                    Some("line1\nline2"),
                    Some("back\\slash"),
                    Some("cr\rx"),
                    None,
                    Some(""),
                    Some("q\"uote,comma"),
                    Some("bs\u{8} ff\u{c} vt\u{b} bell\u{7}"),
                ])),
            ],
        )
        .unwrap()
    }

    /// The bytes PostgreSQL 15 sends for the same rows (checked with `\copy`).
    #[test]
    fn text_escapes_as_postgresql_does() {
        let rows = encode(&tricky(), &options(Format::Text), vec![]);
        let want: Vec<&[u8]> = vec![
            b"1\ta\\tb\n",
            b"2\tline1\\nline2\n",
            b"3\tback\\\\slash\n",
            b"4\tcr\\rx\n",
            b"5\t\\N\n",
            b"6\t\n",
            b"7\tq\"uote,comma\n",
            b"8\tbs\\b ff\\f vt\\v bell\x07\n",
        ];
        assert_eq!(rows, want);
        // Another delimiter is backslashed, tabs are still escaped.
        let mut o = options(Format::Text);
        o.delimiter = b',';
        let rows = encode(&tricky(), &o, vec![]);
        assert_eq!(rows[0], b"1,a\\tb\n");
        assert_eq!(rows[6], b"7,q\"uote\\,comma\n");
    }

    #[test]
    fn csv_quotes_as_postgresql_does() {
        let mut o = options(Format::Csv);
        o.header = true;
        let rows = encode(&tricky(), &o, vec![]);
        let want: Vec<&[u8]> = vec![
            b"id,s\n",
            b"1,a\tb\n",
            b"2,\"line1\nline2\"\n",
            b"3,back\\slash\n",
            b"4,\"cr\rx\"\n",
            b"5,\n",
            b"6,\"\"\n",
            b"7,\"q\"\"uote,comma\"\n",
            b"8,bs\x08 ff\x0c vt\x0b bell\x07\n",
        ];
        assert_eq!(rows, want);
        // FORCE_QUOTE quotes every value of its columns but never NULL; another escape
        // character is doubled inside quotes only.
        o.header = false;
        o.escape = b'\\';
        let rows = encode(&tricky(), &o, vec![false, true]);
        assert_eq!(rows[0], b"1,\"a\tb\"\n");
        assert_eq!(rows[2], b"3,\"back\\\\slash\"\n");
        assert_eq!(rows[4], b"5,\n");
        assert_eq!(rows[6], b"7,\"q\\\"uote,comma\"\n");
        // `\.` alone on a line is quoted, and so is a value equal to the NULL string.
        let one = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x,y", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec!["\\.", "N"]))],
        )
        .unwrap();
        let mut o = options(Format::Csv);
        o.header = true;
        o.null = b"N".to_vec();
        let rows = encode(&one, &o, vec![]);
        assert_eq!(rows, vec![&b"\"x,y\"\n"[..], b"\"\\.\"\n", b"\"N\"\n"]);
    }

    #[test]
    fn common_types_as_postgresql_prints_them() {
        let schema = Schema::new(vec![
            Field::new("b", DataType::Boolean, true),
            Field::new("n", DataType::Decimal128(10, 2), true),
            Field::new("d", DataType::Date32, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("f", DataType::Float64, true),
            Field::new("i", DataType::Int64, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
                Arc::new(
                    Decimal128Array::from(vec![Some(1230), Some(-5), None])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
                Arc::new(Date32Array::from(vec![Some(19_782), Some(0), None])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        Some(1_704_067_200_000_000),
                        Some(1_704_067_200_250_000),
                        None,
                    ])
                    .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(vec![Some(5.0), Some(-1e20), None])),
                Arc::new(Int64Array::from(vec![Some(-42), Some(i64::MAX), None])),
            ],
        )
        .unwrap();
        let rows = encode(&batch, &options(Format::Text), vec![]);
        let want: Vec<&[u8]> = vec![
            b"t\t12.30\t2024-02-29\t2024-01-01 00:00:00+00\t5\t-42\n",
            b"f\t-0.05\t1970-01-01\t2024-01-01 00:00:00.25+00\t-1e+20\t9223372036854775807\n",
            b"\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n",
        ];
        assert_eq!(rows, want);
    }

    fn numeric(v: i128, scale: u32) -> Vec<u8> {
        let mut out = BytesMut::new();
        numeric_binary(&mut out, v, scale);
        out.to_vec()
    }

    /// `numeric_send` of PostgreSQL 15: `select numeric_send(12.30::numeric(10,2))` and so on.
    #[test]
    fn numerics_in_binary_as_postgresql_sends_them() {
        let be =
            |words: &[i16]| -> Vec<u8> { words.iter().flat_map(|w| w.to_be_bytes()).collect() };
        let with_len = |body: Vec<u8>| -> Vec<u8> {
            let mut v = (body.len() as i32).to_be_bytes().to_vec();
            v.extend(body);
            v
        };
        // ndigits, weight, sign, dscale, digits.
        for (v, scale, want) in [
            (1230, 2, vec![2, 0, 0, 2, 12, 3000]),                  // 12.30
            (0, 2, vec![0, 0, 0, 2]),                               // 0.00
            (-5, 2, vec![1, -1, 0x4000, 2, 500]),                   // -0.05
            (9_999_999_999, 2, vec![3, 1, 0, 2, 9999, 9999, 9900]), // 99999999.99
            (100_000_000, 0, vec![1, 2, 0, 0, 1]),                  // 100000000
            (123_456_789, 9, vec![3, -1, 0, 9, 1234, 5678, 9000]),  // 0.123456789
            (-10_000, 0, vec![1, 1, 0x4000, 0, 1]),                 // -10000
        ] {
            let words: Vec<i16> = want.iter().map(|w: &i32| *w as u16 as i16).collect();
            assert_eq!(numeric(v, scale), with_len(be(&words)), "{v} scale {scale}");
        }
    }

    #[test]
    fn binary_rows_are_length_prefixed_values() {
        let batch = tricky();
        let rows = encode(&batch, &options(Format::Binary), vec![]);
        // 1, "a\tb": two fields, an int8 and a text.
        let mut want = vec![0u8, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3];
        want.extend_from_slice(b"a\tb");
        assert_eq!(rows[0], want);
        // NULL is length -1.
        assert_eq!(&rows[4][14..], &[0xff, 0xff, 0xff, 0xff]);
        let mut sig = BytesMut::new();
        RowEncoder::signature(&mut sig);
        assert_eq!(sig.len(), 19);
    }
}
