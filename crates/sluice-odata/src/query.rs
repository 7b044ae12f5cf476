//! System query options of a request, and the DataFusion plan that applies them to a
//! feed's rows: rename to OData property names, `$filter`, `$orderby`, `$skip`/`$top`
//! (plus the page), `$select`.

use crate::csdl::{Edm, EntitySet, ROW_KEY};
use crate::cursor::SkipToken;
use crate::filter::{self, CmpOp, Func, Literal, OrderBy, ParseError};
use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::{Column, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions::expr_fn as f;
use datafusion::logical_expr::{Expr, SortExpr, cast, lit};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use futures::stream::BoxStream;
use sluice_core::{Code, Error, Result};
use std::sync::{Arc, Mutex};

/// Query options that change which rows come back, parsed and checked.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Options {
    pub select: Option<Vec<String>>,
    pub filter: Option<filter::Expr>,
    pub orderby: Vec<OrderBy>,
    pub top: Option<u64>,
    pub skip: u64,
    pub count: bool,
    /// Rows of this query already delivered on earlier pages, and the cursor holding the
    /// rest (our `$skiptoken`, see `cursor.rs`).
    pub skiptoken: SkipToken,
}

/// Options we know and deliberately do not implement: 501, naming the option.
const NOT_IMPLEMENTED: &[&str] = &[
    "$expand",
    "$search",
    "$apply",
    "$compute",
    "$levels",
    "$index",
    "$schemaversion",
    "$id",
];

/// Split a request's query into system options and the feed's parameters (custom query
/// options). `api_key` belongs to authentication and is dropped.
pub fn parse(pairs: &[(String, String)]) -> Result<(Options, Vec<(String, String)>)> {
    let mut o = Options::default();
    let mut custom = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in pairs {
        if !k.starts_with('$') {
            if k.starts_with('@') {
                return Err(not_implemented(format!(
                    "parameter alias {k} is not supported: write the value into the expression"
                )));
            }
            if k != "api_key" {
                custom.push((k.clone(), v.clone()));
            }
            continue;
        }
        if !seen.insert(k.as_str()) {
            return Err(invalid(k, v, format!("{k} is given twice")));
        }
        match k.as_str() {
            "$select" => {
                let v = v.trim();
                if v != "*" {
                    let names: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
                    if names.iter().any(|n| n.is_empty()) {
                        return Err(invalid(
                            k,
                            v,
                            "$select lists property names separated by commas",
                        ));
                    }
                    if let Some(n) = names.iter().find(|n| n.contains(['/', '(', '*'])) {
                        return Err(not_implemented(format!(
                            "'{n}' in $select is not supported: select property names (or *)"
                        )));
                    }
                    o.select = Some(names);
                }
            }
            "$filter" => {
                o.filter = Some(filter::parse_filter(v).map_err(|e| parse_error(k, v, e))?)
            }
            "$orderby" => o.orderby = filter::parse_orderby(v).map_err(|e| parse_error(k, v, e))?,
            "$top" => o.top = Some(non_negative(k, v)?),
            "$skip" => o.skip = non_negative(k, v)?,
            "$skiptoken" => {
                o.skiptoken = SkipToken::parse(v).ok_or_else(|| {
                    invalid(
                        k,
                        v,
                        "$skiptoken is not one this service issued: follow @odata.nextLink as given, or start again without $skiptoken",
                    )
                })?
            }
            "$count" => {
                o.count = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid(k, v, "$count is true or false")),
                }
            }
            "$format" => {
                let v = v.to_ascii_lowercase();
                if !(v == "json" || v.starts_with("application/json")) {
                    return Err(not_implemented(format!(
                        "$format={v} is not supported: this service speaks JSON only ($format=json)"
                    )));
                }
            }
            other if NOT_IMPLEMENTED.contains(&other) => {
                return Err(not_implemented(format!(
                    "the query option {other} is not supported by this read-only service"
                )));
            }
            other => {
                return Err(invalid(
                    other,
                    v,
                    format!(
                        "unknown system query option {other}: supported are $select, $filter, $orderby, $top, $skip, $count, $format"
                    ),
                ));
            }
        }
    }
    Ok((o, custom))
}

fn non_negative(k: &str, v: &str) -> Result<u64> {
    v.trim().parse::<u64>().map_err(|_| {
        invalid(
            k,
            v,
            format!("{k} must be a non-negative integer, got '{v}'"),
        )
    })
}

fn invalid(option: &str, value: &str, message: impl Into<String>) -> Error {
    Error::new(Code::InvalidQuery, message.into())
        .with("option", option)
        .with("value", value)
}

fn not_implemented(message: impl Into<String>) -> Error {
    Error::new(Code::NotImplemented, message.into())
}

fn parse_error(option: &str, value: &str, e: ParseError) -> Error {
    match e {
        ParseError::Unsupported(_) => {
            not_implemented(format!("in {option}: {e}")).with("option", option)
        }
        ParseError::Syntax { .. } => invalid(option, value, format!("{option} is not valid: {e}")),
    }
}

/// A feed's rows as they arrive from the gateway, numbered if the entity set's key is
/// the generated row number, as a one-shot DataFusion table.
struct OneShot {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl std::fmt::Debug for OneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneShot")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PartitionStream for OneShot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().ok().and_then(|mut s| s.take());
        taken.unwrap_or_else(|| {
            // Plans here execute once; a second execution is a bug, not an empty result.
            let schema = self.schema.clone();
            Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::once(async {
                    Err(datafusion::error::DataFusionError::Internal(
                        "feed stream executed twice".into(),
                    ))
                }),
            ))
        })
    }
}

/// Wrap the feed's stream as a table whose columns are the entity set's properties.
fn table(
    set: &EntitySet,
    schema: SchemaRef,
    batches: BoxStream<'static, Result<RecordBatch>>,
) -> Result<StreamingTable> {
    let numbered = set.generated_key();
    let mut fields: Vec<Field> = Vec::new();
    if numbered {
        fields.push(Field::new(ROW_KEY, DataType::Int64, false));
    }
    fields.extend(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true)),
    );
    let out_schema = Arc::new(Schema::new(fields));
    let target = out_schema.clone();
    let mut next_row: i64 = 1;
    let stream = batches.map(move |b| {
        let b =
            b.map_err(|e| datafusion::error::DataFusionError::External(Box::new(FeedError(e))))?;
        let mut cols = Vec::with_capacity(target.fields().len());
        if numbered {
            let n = b.num_rows() as i64;
            cols.push(Arc::new(Int64Array::from_iter_values(next_row..next_row + n)) as _);
            next_row += n;
        }
        cols.extend(b.columns().iter().cloned());
        Ok(RecordBatch::try_new(target.clone(), cols)?)
    });
    let part = OneShot {
        schema: out_schema.clone(),
        stream: Mutex::new(Some(Box::pin(RecordBatchStreamAdapter::new(
            out_schema.clone(),
            stream,
        )))),
    };
    StreamingTable::try_new(out_schema, vec![Arc::new(part)]).map_err(df_error)
}

/// A gateway error carried through DataFusion so it comes out with its own code.
#[derive(Debug)]
pub struct FeedError(pub Error);

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for FeedError {}

pub fn df_error(e: datafusion::error::DataFusionError) -> Error {
    let root = e.find_root();
    if let datafusion::error::DataFusionError::External(inner) = root
        && let Some(FeedError(err)) = inner.downcast_ref::<FeedError>()
    {
        return err.clone();
    }
    Error::internal(format!("the OData query failed: {root}"))
}

/// What to run over the filtered rows.
pub enum Shape {
    /// The rows of the whole request (`$skip`, `$top` and the `$skiptoken` offset applied),
    /// streamed in one response.
    Rows,
    /// The rows from position `from` of the filtered, ordered result (`$skip` is the
    /// caller's to add), at most `fetch`: what a paging cursor holds.
    Window { from: u64, fetch: Option<u64> },
    /// Just the rows `$filter` keeps, to count them.
    Count,
}

/// Build the DataFusion frame for `opts` over one call's rows.
pub fn frame(
    ctx: &SessionContext,
    set: &EntitySet,
    schema: SchemaRef,
    batches: BoxStream<'static, Result<RecordBatch>>,
    opts: &Options,
    shape: Shape,
) -> Result<DataFrame> {
    let t = table(set, schema, batches)?;
    let mut df = ctx.read_table(Arc::new(t)).map_err(df_error)?;
    // Rename columns to their OData property names first, so everything after speaks OData.
    let renamed: Vec<Expr> = set
        .properties
        .iter()
        .map(|p| {
            let c = p.column.as_deref().unwrap_or(ROW_KEY);
            Expr::Column(Column::new_unqualified(c)).alias(&p.name)
        })
        .collect();
    df = df.select(renamed).map_err(df_error)?;
    if let Some(e) = &opts.filter {
        let (e, _) = translate(set, e)?;
        df = df.filter(e).map_err(df_error)?;
    }
    let (skip, fetch) = match shape {
        Shape::Count => return Ok(df),
        Shape::Rows => {
            let delivered = opts.skiptoken.offset;
            (
                opts.skip + delivered,
                opts.top.map(|t| t.saturating_sub(delivered)),
            )
        }
        Shape::Window { from, fetch } => (from, fetch),
    };
    if !opts.orderby.is_empty() {
        let mut sort: Vec<SortExpr> = Vec::new();
        for o in &opts.orderby {
            property(set, &o.property, "$orderby")?;
            // OData: null sorts before every other value when ascending.
            sort.push(ident(&o.property).sort(!o.descending, !o.descending));
        }
        df = df.sort(sort).map_err(df_error)?;
    }
    if skip > 0 || fetch.is_some() {
        df = df
            .limit(skip as usize, fetch.map(|f| f as usize))
            .map_err(df_error)?;
    }
    if let Some(names) = &opts.select {
        let mut cols = Vec::new();
        for n in names {
            property(set, n, "$select")?;
            cols.push(ident(n));
        }
        df = df.select(cols).map_err(df_error)?;
    }
    Ok(df)
}

fn ident(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

fn property<'a>(set: &'a EntitySet, name: &str, option: &str) -> Result<&'a crate::csdl::Property> {
    set.property(name).ok_or_else(|| {
        let names: Vec<&str> = set.properties.iter().map(|p| p.name.as_str()).collect();
        Error::new(
            Code::InvalidQuery,
            format!(
                "{option} names '{name}', which is not a property of '{}': its properties are {}",
                set.name,
                names.join(", ")
            ),
        )
        .with("option", option)
        .with("property", name)
    })
}

/// The kinds of value an expression has, for type checks with clear messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Number,
    Bool,
    Date,
    DateTime,
    Time,
    Null,
}

impl Kind {
    fn of(edm: Edm) -> Kind {
        match edm {
            Edm::String => Kind::String,
            Edm::Int64 | Edm::Double | Edm::Decimal { .. } => Kind::Number,
            Edm::Boolean => Kind::Bool,
            Edm::Date => Kind::Date,
            Edm::DateTimeOffset { .. } => Kind::DateTime,
            Edm::TimeOfDay { .. } => Kind::Time,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Date => "a date",
            Kind::DateTime => "a date-time",
            Kind::Time => "a time of day",
            Kind::Null => "null",
        }
    }
}

fn type_error(message: String) -> Error {
    Error::new(Code::InvalidQuery, format!("$filter: {message}")).with("option", "$filter")
}

/// A `$filter` AST as a DataFusion expression over the renamed columns.
fn translate(set: &EntitySet, e: &filter::Expr) -> Result<(Expr, Kind)> {
    use filter::Expr as F;
    Ok(match e {
        F::Property(name) => {
            let p = property(set, name, "$filter")?;
            (ident(name), Kind::of(p.edm))
        }
        F::Literal(l) => literal(l),
        F::And(a, b) => (
            bool_arg(set, a, "and")?.and(bool_arg(set, b, "and")?),
            Kind::Bool,
        ),
        F::Or(a, b) => (
            bool_arg(set, a, "or")?.or(bool_arg(set, b, "or")?),
            Kind::Bool,
        ),
        F::Not(a) => (Expr::Not(Box::new(bool_arg(set, a, "not")?)), Kind::Bool),
        F::Cmp(op, a, b) => (compare(set, *op, a, b)?, Kind::Bool),
        F::Call(func, args) => call(set, *func, args)?,
    })
}

fn bool_arg(set: &EntitySet, e: &filter::Expr, op: &str) -> Result<Expr> {
    let (x, k) = translate(set, e)?;
    if k != Kind::Bool {
        return Err(type_error(format!(
            "'{op}' needs true/false on both sides, got {}",
            k.name()
        )));
    }
    Ok(x)
}

fn literal(l: &Literal) -> (Expr, Kind) {
    match l {
        Literal::Null => (lit(ScalarValue::Null), Kind::Null),
        Literal::Bool(b) => (lit(*b), Kind::Bool),
        Literal::Int(i) => (lit(*i), Kind::Number),
        Literal::Double(d) => (lit(*d), Kind::Number),
        Literal::Decimal(s) => {
            // Exact: a Decimal128 literal with the written scale.
            let neg = s.starts_with('-');
            let (int, frac) = s.trim_start_matches('-').split_once('.').unwrap_or((s, ""));
            let digits = format!("{int}{frac}");
            match digits.parse::<i128>() {
                Ok(v) if digits.len() <= 38 => {
                    let v = if neg { -v } else { v };
                    let scale = frac.len() as i8;
                    let precision = (digits.len() as u8).max(scale as u8 + 1).min(38);
                    (
                        lit(ScalarValue::Decimal128(Some(v), precision, scale)),
                        Kind::Number,
                    )
                }
                _ => (lit(s.parse::<f64>().unwrap_or(f64::NAN)), Kind::Number),
            }
        }
        Literal::String(s) => (lit(s.clone()), Kind::String),
        Literal::Date(d) => {
            let days =
                (*d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days();
            (lit(ScalarValue::Date32(Some(days as i32))), Kind::Date)
        }
        Literal::DateTime(dt) => (
            lit(ScalarValue::TimestampMicrosecond(
                Some(dt.timestamp_micros()),
                Some("UTC".into()),
            )),
            Kind::DateTime,
        ),
        Literal::TimeOfDay(t) => {
            use chrono::Timelike;
            let us =
                t.num_seconds_from_midnight() as i64 * 1_000_000 + (t.nanosecond() / 1000) as i64;
            (lit(ScalarValue::Time64Microsecond(Some(us))), Kind::Time)
        }
    }
}

fn compare(set: &EntitySet, op: CmpOp, a: &filter::Expr, b: &filter::Expr) -> Result<Expr> {
    let (mut x, ka) = translate(set, a)?;
    let (mut y, kb) = translate(set, b)?;
    if ka == Kind::Null || kb == Kind::Null {
        let other = if ka == Kind::Null { y } else { x };
        return match op {
            CmpOp::Eq => Ok(other.is_null()),
            CmpOp::Ne => Ok(other.is_not_null()),
            _ => Err(type_error("null can only be compared with eq or ne".into())),
        };
    }
    let compatible = ka == kb
        || matches!(
            (ka, kb),
            (Kind::Date, Kind::DateTime) | (Kind::DateTime, Kind::Date)
        );
    if !compatible {
        return Err(type_error(format!(
            "cannot compare {} with {} ({:?} {} {:?})",
            ka.name(),
            kb.name(),
            a,
            op_name(op),
            b
        )));
    }
    // Bring a literal to its column's exact type (timestamps with or without a zone,
    // dates against date-times), so DataFusion compares like with like.
    let col_type = |e: &filter::Expr| match e {
        filter::Expr::Property(n) => set.property(n).map(|p| p.edm),
        _ => None,
    };
    if let (Some(t), filter::Expr::Literal(_)) = (col_type(a), b) {
        y = cast_to(y, t);
    } else if let (Some(t), filter::Expr::Literal(_)) = (col_type(b), a) {
        x = cast_to(x, t);
    }
    Ok(match op {
        CmpOp::Eq => x.eq(y),
        CmpOp::Ne => x.not_eq(y),
        CmpOp::Gt => x.gt(y),
        CmpOp::Ge => x.gt_eq(y),
        CmpOp::Lt => x.lt(y),
        CmpOp::Le => x.lt_eq(y),
    })
}

fn cast_to(e: Expr, edm: Edm) -> Expr {
    match edm {
        Edm::DateTimeOffset { .. } => cast(
            e,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ),
        Edm::Date => cast(e, DataType::Date32),
        _ => e,
    }
}

fn op_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "eq",
        CmpOp::Ne => "ne",
        CmpOp::Gt => "gt",
        CmpOp::Ge => "ge",
        CmpOp::Lt => "lt",
        CmpOp::Le => "le",
    }
}

fn call(set: &EntitySet, func: Func, args: &[filter::Expr]) -> Result<(Expr, Kind)> {
    let mut xs = Vec::with_capacity(args.len());
    for a in args {
        xs.push(translate(set, a)?);
    }
    let want = |i: usize, k: Kind| -> Result<Expr> {
        let (x, got) = &xs[i];
        if *got != k && *got != Kind::Null {
            return Err(type_error(format!(
                "{}() expects {} as argument {}, got {}",
                func.name(),
                k.name(),
                i + 1,
                got.name()
            )));
        }
        Ok(x.clone())
    };
    let date_part = |part: &str| -> Result<(Expr, Kind)> {
        let (x, k) = &xs[0];
        if !matches!(k, Kind::Date | Kind::DateTime) {
            return Err(type_error(format!(
                "{}() expects a date or date-time, got {}",
                func.name(),
                k.name()
            )));
        }
        Ok((
            cast(f::date_part(lit(part), x.clone()), DataType::Int64),
            Kind::Number,
        ))
    };
    Ok(match func {
        Func::Contains => (
            f::contains(want(0, Kind::String)?, want(1, Kind::String)?),
            Kind::Bool,
        ),
        Func::StartsWith => (
            f::starts_with(want(0, Kind::String)?, want(1, Kind::String)?),
            Kind::Bool,
        ),
        Func::EndsWith => (
            f::ends_with(want(0, Kind::String)?, want(1, Kind::String)?),
            Kind::Bool,
        ),
        Func::ToLower => (f::lower(want(0, Kind::String)?), Kind::String),
        Func::ToUpper => (f::upper(want(0, Kind::String)?), Kind::String),
        Func::Trim => (f::btrim(vec![want(0, Kind::String)?]), Kind::String),
        Func::Length => (
            cast(f::character_length(want(0, Kind::String)?), DataType::Int64),
            Kind::Number,
        ),
        Func::Year => date_part("year")?,
        Func::Month => date_part("month")?,
        Func::Day => date_part("day")?,
    })
}
