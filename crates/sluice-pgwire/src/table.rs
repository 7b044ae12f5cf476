//! Feeds as DataFusion tables. A feed's table has the feed's result columns plus one
//! column per parameter the result does not already carry (holding the value the call
//! used). Equality predicates on parameter columns (`where region = 'EU'`) become the
//! call's parameters; the others take their defaults. The predicates are pushed down as
//! *inexact*: DataFusion still applies them to the rows, so results are right either way.
//!
//! `param IN (a, b)` (and `param = a OR param = b`, which DataFusion makes of short `IN`
//! lists) calls the feed once per value, the calls' rows read as one table; with several
//! such parameters, once per combination, at most [`MAX_CALLS`] calls per table in a query.

use arrow_array::{Array, ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::StreamExt;
use sluice_core::params::{ParamSpec, ParamType, ParamValue};
use sluice_gateway::{Gateway, LiveFeed, RESERVED_PARAMS};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

type DfResult<T> = datafusion::error::Result<T>;

/// The most feed calls one table of a query may make (`IN` lists of parameters).
pub const MAX_CALLS: usize = 16;

/// The Arrow type of a parameter's column. `list[str]` parameters get no column (and
/// always take their default): a comma list would be ambiguous.
fn param_type(ty: ParamType) -> Option<DataType> {
    Some(match ty {
        ParamType::Str => DataType::Utf8,
        ParamType::Int => DataType::Int64,
        ParamType::Float => DataType::Float64,
        ParamType::Bool => DataType::Boolean,
        ParamType::Date => DataType::Date32,
        ParamType::DateTime => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ParamType::ListStr => return None,
    })
}

/// A gateway error carried through DataFusion.
#[derive(Debug)]
pub struct FeedError(pub sluice_core::Error);

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for FeedError {}

fn feed_error(e: sluice_core::Error) -> DataFusionError {
    DataFusionError::External(Box::new(FeedError(e)))
}

/// One feed's live revision as a table.
#[derive(Debug)]
pub struct FeedTable {
    gw: Gw,
    ws: String,
    rev: Arc<LiveFeed>,
    /// Result columns, then the parameter columns.
    schema: SchemaRef,
    /// Parameters that have a column: (column index, spec).
    param_cols: Vec<(usize, ParamSpec)>,
    /// Number of result columns (the first ones of `schema`).
    n_result: usize,
    request_id: String,
}

impl std::fmt::Debug for Gw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gateway")
    }
}

/// `Gateway` is not `Debug`; DataFusion wants its providers to be.
#[derive(Clone)]
pub struct Gw(pub Gateway);

impl FeedTable {
    pub fn new(
        gw: Gateway,
        ws: &str,
        rev: Arc<LiveFeed>,
        result: &Schema,
        request_id: &str,
    ) -> Self {
        let mut fields: Vec<Field> = result
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let n_result = fields.len();
        let mut param_cols = Vec::new();
        for p in &rev.signature.params {
            if let Some(i) = fields.iter().position(|f| f.name() == &p.name) {
                param_cols.push((i, p.clone()));
                continue;
            }
            if let Some(ty) = param_type(p.ty) {
                param_cols.push((fields.len(), p.clone()));
                fields.push(Field::new(&p.name, ty, true));
            }
        }
        FeedTable {
            gw: Gw(gw),
            ws: ws.to_string(),
            rev,
            schema: Arc::new(Schema::new(fields)),
            param_cols,
            n_result,
            request_id: request_id.to_string(),
        }
    }

    /// The key the feed declares (`@sluice.feed(key=[...])`), empty when none.
    pub fn declared_key(&self) -> &[String] {
        &self.rev.signature.key
    }

    fn param(&self, e: &Expr) -> Option<&ParamSpec> {
        let Expr::Column(col) = e else {
            return None;
        };
        self.param_cols
            .iter()
            .find(|(_, p)| p.name == col.name)
            .map(|(_, p)| p)
    }

    /// The parameter a pushed-down predicate sets, and the values it allows:
    /// `param = literal` (either side), `param IN (literals)`, or an `OR` of those on one
    /// parameter. NULLs match no row and are left out; a predicate that allows none is
    /// not a parameter's.
    fn param_values<'a>(&self, e: &'a Expr) -> Option<(&ParamSpec, Vec<&'a ScalarValue>)> {
        let (p, values) = match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) if *op == Operator::Eq => {
                match (left.as_ref(), right.as_ref()) {
                    (c @ Expr::Column(_), v) | (v, c @ Expr::Column(_)) => {
                        (self.param(c)?, vec![literal(v)?])
                    }
                    _ => return None,
                }
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) if *op == Operator::Or => {
                let (p, mut a) = self.param_values(left)?;
                let (q, b) = self.param_values(right)?;
                if p.name != q.name {
                    return None;
                }
                a.extend(b);
                (p, a)
            }
            Expr::InList(InList {
                expr,
                list,
                negated: false,
            }) => (
                self.param(expr)?,
                list.iter().map(literal).collect::<Option<Vec<_>>>()?,
            ),
            _ => return None,
        };
        let values: Vec<_> = values.into_iter().filter(|v| !v.is_null()).collect();
        (!values.is_empty()).then_some((p, values))
    }

    /// The calls a scan makes: for each parameter set by the filters, the values it may
    /// take (those every filter on it allows), combined.
    fn calls(&self, filters: &[Expr]) -> DfResult<Vec<Vec<(String, String)>>> {
        // Per parameter, in the order first named: the allowed values, as query text.
        let mut allowed: Vec<(String, Vec<String>)> = Vec::new();
        for f in filters {
            let Some((p, values)) = self.param_values(f) else {
                continue;
            };
            let mut texts: Vec<String> = Vec::new();
            for v in values {
                let t = literal_text(v)?;
                if !texts.contains(&t) {
                    texts.push(t);
                }
            }
            match allowed.iter_mut().find(|(name, _)| name == &p.name) {
                // Two filters on one parameter: the values both allow. When none is
                // left, no row can pass both; the filters DataFusion re-applies say so,
                // whatever the one call made returns.
                Some((_, have)) => {
                    let both: Vec<String> =
                        have.iter().filter(|t| texts.contains(t)).cloned().collect();
                    have.truncate(1);
                    if !both.is_empty() {
                        *have = both;
                    }
                }
                None => allowed.push((p.name.clone(), texts)),
            }
        }
        let n: usize = allowed.iter().map(|(_, v)| v.len()).product();
        if n > MAX_CALLS {
            let lists = allowed
                .iter()
                .filter(|(_, v)| v.len() > 1)
                .map(|(name, v)| format!("{name} ({} values)", v.len()))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(DataFusionError::Plan(format!(
                "feed '{}' would be called {n} times for the IN lists of its parameter {lists}: at most {MAX_CALLS} calls are made per table in a query; query fewer values at a time",
                self.rev.signature.name
            )));
        }
        let mut calls: Vec<Vec<(String, String)>> = vec![vec![]];
        for (name, values) in &allowed {
            calls = calls
                .into_iter()
                .flat_map(|call| {
                    values.iter().map(move |v| {
                        let mut c = call.clone();
                        c.push((name.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        Ok(calls)
    }
}

/// A literal, possibly behind the casts type coercion adds.
fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        Expr::Cast(c) => literal(&c.expr),
        Expr::TryCast(c) => literal(&c.expr),
        _ => None,
    }
}

/// A literal as the text the feed's parameter parser reads (the HTTP query-string form).
fn literal_text(v: &ScalarValue) -> DfResult<String> {
    Ok(match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.clone(),
        ScalarValue::Boolean(Some(b)) => b.to_string(),
        ScalarValue::TimestampMicrosecond(..)
        | ScalarValue::TimestampMillisecond(..)
        | ScalarValue::TimestampNanosecond(..)
        | ScalarValue::TimestampSecond(..) => {
            let a = v.to_array()?;
            let a = arrow_cast::cast(
                &a,
                &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            )?;
            arrow_cast::display::array_value_to_string(&a, 0)?
        }
        other => {
            let a = other.to_array()?;
            arrow_cast::display::array_value_to_string(&a, 0)?
        }
    })
}

#[async_trait]
impl TableProvider for FeedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.param_values(f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // One partition per call; DataFusion reads them as one table.
        let mut parts: Vec<Arc<dyn PartitionStream>> = Vec::new();
        for raw in self.calls(filters)? {
            let params = self
                .rev
                .signature
                .coerce(&raw, RESERVED_PARAMS)
                .map_err(feed_error)?;
            // The constant parameter columns, as one-row arrays repeated per batch.
            let mut constants: Vec<(usize, ArrayRef)> = Vec::new();
            for (i, p) in &self.param_cols {
                if *i < self.n_result {
                    continue;
                }
                let field = self.schema.field(*i);
                let value = params.get(&p.name).unwrap_or(&ParamValue::Null);
                constants.push((*i, param_array(value, field.data_type())?));
            }
            parts.push(Arc::new(FeedPartition {
                gw: self.gw.clone(),
                ws: self.ws.clone(),
                rev: self.rev.clone(),
                params,
                schema: self.schema.clone(),
                n_result: self.n_result,
                constants,
                request_id: self.request_id.clone(),
            }));
        }
        let table = StreamingTable::try_new(self.schema.clone(), parts)?;
        table.scan(state, projection, &[], limit).await
    }
}

/// A parameter's value as a one-element array of the column's type.
fn param_array(value: &ParamValue, ty: &DataType) -> DfResult<ArrayRef> {
    let text = match value.to_json() {
        serde_json::Value::Null => return Ok(new_null_array(ty, 1)),
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    let a = ScalarValue::Utf8(Some(text)).to_array()?;
    Ok(arrow_cast::cast(&a, ty)?)
}

#[derive(Debug)]
struct FeedPartition {
    gw: Gw,
    ws: String,
    rev: Arc<LiveFeed>,
    params: sluice_core::Params,
    schema: SchemaRef,
    n_result: usize,
    constants: Vec<(usize, ArrayRef)>,
    request_id: String,
}

impl PartitionStream for FeedPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The feed is called when the plan runs, not when it is planned.
    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let gw = self.gw.0.clone();
        let ws = self.ws.clone();
        let rev = self.rev.clone();
        let params = self.params.clone();
        let rid = self.request_id.clone();
        let schema = self.schema.clone();
        let n_result = self.n_result;
        let mut constants: Vec<Repeated> = self
            .constants
            .iter()
            .map(|(_, one)| Repeated::new(one.clone()))
            .collect();
        let stream =
            futures::stream::once(async move { gw.open_feed(&ws, &rev, &params, &rid).await })
                .map(|r| match r {
                    Ok(open) => open.batches.map(|b| b.map_err(feed_error)).boxed(),
                    Err(e) => futures::stream::once(async move { Err(feed_error(e)) }).boxed(),
                })
                .flatten()
                .map(move |b| conform(&b?, &schema, n_result, &mut constants));
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// A parameter's constant column: one value repeated, built once for the largest batch
/// seen and sliced for each batch (a slice is free; building it again per batch cost a
/// copy of the value per row, e.g. a string parameter on every row of a 1M-row read).
struct Repeated {
    one: ArrayRef,
    filled: ArrayRef,
}

impl Repeated {
    fn new(one: ArrayRef) -> Self {
        let filled = one.slice(0, 0);
        Repeated { one, filled }
    }

    fn column(&mut self, rows: usize) -> DfResult<ArrayRef> {
        if self.filled.len() < rows {
            // Batches are usually all the size of the first: no regrowth after it.
            let idx = arrow_array::UInt32Array::from(vec![0u32; rows]);
            self.filled = arrow_select_take(self.one.as_ref(), &idx)?;
        }
        Ok(self.filled.slice(0, rows))
    }
}

/// A batch of the feed in the table's columns: result columns by name (cast when a call
/// returned another type, null when it lacks one), then the constant parameter columns.
fn conform(
    b: &RecordBatch,
    schema: &SchemaRef,
    n_result: usize,
    constants: &mut [Repeated],
) -> DfResult<RecordBatch> {
    let rows = b.num_rows();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields().iter().take(n_result) {
        let col = match b.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => c.clone(),
            Some(c) => arrow_cast::cast(c, f.data_type())?,
            None => new_null_array(f.data_type(), rows),
        };
        cols.push(col);
    }
    for c in constants {
        cols.push(c.column(rows)?);
    }
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

fn arrow_select_take(a: &dyn Array, idx: &arrow_array::UInt32Array) -> DfResult<ArrayRef> {
    Ok(datafusion::arrow::compute::take(a, idx, None)?)
}

/// The workspace's feeds, as the tables of schema `public`. Names are listed when the
/// connection starts; a table is built when a query names it. Tables a client creates
/// (Tableau's temporary tables) live in the connection only.
#[derive(Debug)]
pub struct FeedSchema {
    gw: Gw,
    ws: String,
    feeds: Vec<String>,
    request_id: String,
    created: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
}

impl FeedSchema {
    pub fn new(gw: Gateway, ws: &str, feeds: Vec<String>, request_id: &str) -> Self {
        FeedSchema {
            gw: Gw(gw),
            ws: ws.to_string(),
            feeds,
            request_id: request_id.to_string(),
            created: RwLock::default(),
        }
    }

    /// The workspace's live feeds (tables or not).
    pub fn feed_names(&self) -> &[String] {
        &self.feeds
    }
}

#[async_trait]
impl SchemaProvider for FeedSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.feeds.clone();
        names.extend(self.created.read().expect("tables lock").keys().cloned());
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.created.read().expect("tables lock").get(name) {
            return Ok(Some(t.clone()));
        }
        if !self.feeds.iter().any(|f| f == name) {
            return Ok(None);
        }
        let gw = &self.gw.0;
        let rev = gw.live_feed(&self.ws, name).await.map_err(feed_error)?;
        // A feed whose columns are unknown (required parameters, never called through a
        // describing protocol) or whose default call fails is not a table: one broken feed
        // must not break a BI tool's whole catalog.
        match gw.result_schema(&self.ws, &rev).await {
            Ok(Some(schema)) => Ok(Some(Arc::new(FeedTable::new(
                gw.clone(),
                &self.ws,
                rev,
                &schema,
                &self.request_id,
            )))),
            Ok(None) => {
                tracing::info!(workspace = %self.ws, feed = %name, "not a table yet: its columns are unknown until it is called once with its required parameters");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(workspace = %self.ws, feed = %name, "not a table: calling it with its defaults failed: {}", e.message);
                Ok(None)
            }
        }
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if self.feeds.contains(&name) {
            return Err(DataFusionError::Plan(format!(
                "'{name}' is a feed: feeds are read-only"
            )));
        }
        Ok(self
            .created
            .write()
            .expect("tables lock")
            .insert(name, table))
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if self.feeds.iter().any(|f| f == name) {
            return Err(DataFusionError::Plan(format!(
                "'{name}' is a feed: feeds are read-only"
            )));
        }
        Ok(self.created.write().expect("tables lock").remove(name))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.feeds.iter().any(|f| f == name)
            || self.created.read().expect("tables lock").contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::FeedSignature;

    fn sig() -> FeedSignature {
        let p = |name: &str, ty| ParamSpec {
            name: name.into(),
            ty,
            default: None,
            required: false,
        };
        FeedSignature {
            name: "f".into(),
            doc: String::new(),
            params: vec![
                p("s", ParamType::Str),
                p("i", ParamType::Int),
                p("x", ParamType::Float),
                p("b", ParamType::Bool),
                p("d", ParamType::Date),
                p("t", ParamType::DateTime),
            ],
            cache: None,
            key: vec![],
        }
    }

    /// What a pushed-down literal becomes is what the HTTP path would have coerced.
    #[test]
    fn literals_coerce_like_query_strings() {
        let cases = [
            (
                "s",
                ScalarValue::Utf8(Some("a, b".into())),
                ParamValue::Str("a, b".into()),
            ),
            ("i", ScalarValue::Int64(Some(-3)), ParamValue::Int(-3)),
            ("x", ScalarValue::Float64(Some(1.5)), ParamValue::Float(1.5)),
            (
                "b",
                ScalarValue::Boolean(Some(true)),
                ParamValue::Bool(true),
            ),
            (
                "d",
                ScalarValue::Date32(Some(19875)),
                ParamValue::Date(chrono::NaiveDate::from_ymd_opt(2024, 6, 1).unwrap()),
            ),
        ];
        for (name, v, want) in cases {
            let text = literal_text(&v).unwrap();
            let got = sig()
                .coerce(&[(name.to_string(), text.clone())], &[])
                .unwrap_or_else(|e| panic!("{name} = {text}: {}", e.message));
            assert_eq!(got[name], want, "{name} = {text}");
        }
        // A timestamp literal (microseconds since the epoch, UTC) keeps its instant.
        let ts = ScalarValue::TimestampMicrosecond(Some(1_717_243_200_000_000), Some("UTC".into()));
        let text = literal_text(&ts).unwrap();
        let got = sig().coerce(&[("t".into(), text.clone())], &[]).unwrap();
        let json = got["t"].to_json();
        let back = param_array(
            &got["t"],
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        )
        .unwrap();
        let back = arrow_cast::display::array_value_to_string(&back, 0).unwrap();
        assert!(
            back.starts_with("2024-06-01T12:00:00"),
            "{text} -> {json} -> {back}"
        );
    }

    #[test]
    fn parameter_columns_hold_the_value_used() {
        let d = param_array(
            &ParamValue::Date(chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()),
            &DataType::Date32,
        )
        .unwrap();
        assert_eq!(
            arrow_cast::display::array_value_to_string(&d, 0).unwrap(),
            "2024-01-01"
        );
        let n = param_array(&ParamValue::Null, &DataType::Int64).unwrap();
        assert!(n.is_null(0));
    }

    #[test]
    fn constant_parameter_columns_repeat_the_value_for_every_batch_size() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("region", DataType::Utf8, true),
        ]));
        let one = param_array(&ParamValue::Str("EU".into()), &DataType::Utf8).unwrap();
        let mut constants = vec![Repeated::new(one)];
        for rows in [3usize, 5, 2, 0, 5] {
            let b = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)])),
                vec![Arc::new(arrow_array::Int64Array::from_iter_values(
                    0..rows as i64,
                ))],
            )
            .unwrap();
            let out = conform(&b, &schema, 1, &mut constants).unwrap();
            assert_eq!(out.num_rows(), rows);
            let region = out
                .column(1)
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .unwrap();
            assert_eq!(region.len(), rows);
            assert!(region.iter().all(|v| v == Some("EU")), "{rows} rows");
        }
        // A null parameter is a null column.
        let mut nulls = vec![Repeated::new(
            param_array(&ParamValue::Null, &DataType::Utf8).unwrap(),
        )];
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)])),
            vec![Arc::new(arrow_array::Int64Array::from(vec![1, 2]))],
        )
        .unwrap();
        let out = conform(&b, &schema, 1, &mut nulls).unwrap();
        assert_eq!(out.column(1).null_count(), 2);
    }
}
