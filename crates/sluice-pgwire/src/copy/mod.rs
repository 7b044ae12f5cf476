//! `COPY (query) TO STDOUT` and `COPY feed [(columns)] TO STDOUT`: the way psql's
//! `\copy` and psycopg's `cursor.copy()` read a large result fast, in PostgreSQL's text,
//! CSV or binary format. Feeds are read-only, so `COPY ... FROM` is refused, and so is
//! anything that would write a file or run a program on the server.
//!
//! The query inside `COPY (...)` (or `SELECT ... FROM feed` for a table) is planned
//! exactly like a plain `SELECT` on the connection's session: the same catalog rewrites
//! and column names (`rewrite.rs`, `colnames.rs`), the same compatibility parser, the
//! same catalog of the feeds the key may read, and so the same feed parameters taken
//! from its `WHERE`.
//!
//! Rows stream as DataFusion produces them, one `CopyData` message per row as
//! PostgreSQL sends them (psycopg's `Copy.rows()` reads one row per message), encoded a
//! bounded chunk at a time (`encode.rs`). The connection writes the messages itself
//! rather than through pgwire's `Response::CopyOut`, which counts messages as rows for
//! the command tag and answers an error in the middle with `CopyFail`, a message only
//! clients send: here an error ends the copy with an `ErrorResponse`, as in PostgreSQL.

pub(crate) mod encode;
mod parse;

use crate::rows::{api_error, is_iso, statement_timeout, within};
use bytes::BytesMut;
use datafusion::arrow::datatypes::Schema;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::pgwire;
use encode::RowEncoder;
use futures::{Sink, SinkExt, StreamExt};
use parse::{Copy, ForceQuote, Format, Refusal};
use pgwire::api::ClientInfo;
use pgwire::api::portal::Format as PortalFormat;
use pgwire::api::results::Tag;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::types::format::FormatOptions;
use std::fmt::Debug;
use std::sync::{Arc, LazyLock};

/// Rows are encoded up to this many bytes at a time, then sent.
const CHUNK: usize = 256 * 1024;

/// The `COPY` statement `sql` is, if it is one: what it sends, or the error PostgreSQL
/// would answer it with. Every other statement is None, without being parsed here.
pub fn statement(sql: &str) -> Option<PgWireResult<Copy>> {
    parse::is_copy(sql).then(|| parse::parse(sql).map_err(refusal))
}

fn refusal(r: Refusal) -> PgWireError {
    let mut e = ErrorInfo::new("ERROR".into(), r.code.into(), r.message);
    e.hint = r.hint.map(str::to_string);
    PgWireError::UserError(Box::new(e))
}

/// A `COPY` inside a query string of several statements, which reaches the statement
/// hooks (`hooks.rs`): DataFusion must never run it (its own `COPY ... TO 'file'` writes
/// files on the server).
pub fn refuse_in_batch() -> PgWireError {
    refusal(Refusal {
        code: "0A000",
        message: "COPY must be sent as a query of its own".into(),
        hint: Some("send the COPY statement alone (psql: \\copy, or its own -c)"),
    })
}

/// The compatibility parser `datafusion-postgres` reads every query with.
static COMPAT: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

/// The `SELECT` a `COPY` sends the rows of, as the SQL the session plans: through the
/// rewrites a plain query goes through on its way to DataFusion.
fn select_sql(copy: &Copy) -> PgWireResult<String> {
    let sql = copy.source.select();
    let rewritten = crate::rewrite::rewrite(&sql);
    let sql = rewritten.as_deref().unwrap_or(&sql);
    let named = crate::colnames::name_columns(sql);
    let sql = named.as_deref().unwrap_or(sql);
    let statements = COMPAT
        .parse(sql)
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    match statements.as_slice() {
        [s @ Statement::Query(q)]
            if matches!(
                q.body.as_ref(),
                SetExpr::Select(_)
                    | SetExpr::Query(_)
                    | SetExpr::SetOperation { .. }
                    | SetExpr::Values(_)
                    | SetExpr::Table(_)
            ) =>
        {
            Ok(s.to_string())
        }
        _ => Err(refusal(Refusal {
            code: "0A000",
            message: "COPY (...) takes one SELECT, VALUES or WITH ... SELECT query".into(),
            hint: None,
        })),
    }
}

/// Which columns `FORCE_QUOTE` names, as PostgreSQL resolves them.
fn force_quote(fq: &ForceQuote, schema: &Schema) -> PgWireResult<Vec<bool>> {
    let n = schema.fields().len();
    match fq {
        ForceQuote::None => Ok(vec![false; n]),
        ForceQuote::All => Ok(vec![true; n]),
        ForceQuote::Columns(columns) => {
            let mut quoted = vec![false; n];
            for c in columns {
                let name = match c.quote_style {
                    Some(_) => c.value.clone(),
                    None => c.value.to_lowercase(),
                };
                let i = schema
                    .fields()
                    .iter()
                    .position(|f| *f.name() == name)
                    .ok_or_else(|| {
                        refusal(Refusal {
                            code: "42703",
                            message: format!(
                                "FORCE_QUOTE column \"{name}\" not referenced by COPY"
                            ),
                            hint: None,
                        })
                    })?;
                quoted[i] = true;
            }
            Ok(quoted)
        }
    }
}

/// Run a `COPY ... TO STDOUT` on the connection's session and stream its rows to the
/// client: `CopyOutResponse`, a `CopyData` per row, `CopyDone`. The command tag
/// (`COPY n`) is the caller's to send.
pub async fn copy_out<C>(ctx: &SessionContext, client: &mut C, copy: Copy) -> PgWireResult<Tag>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let sql = select_sql(&copy)?;
    let options = FormatOptions::from_client_metadata(client.metadata());
    let df = within(statement_timeout(client.metadata()), ctx.sql(&sql)).await?;
    let schema = df.schema().as_arrow().clone();
    let quoted = force_quote(&copy.options.force_quote, &schema)?;
    let binary = copy.options.format == Format::Binary;
    let portal = if binary {
        PortalFormat::UnifiedBinary
    } else {
        PortalFormat::UnifiedText
    };
    let (iso, extra_float_digits) = (is_iso(&options), options.extra_float_digits);
    let fields = Arc::new(arrow_schema_to_pg_fields(
        &schema,
        &portal,
        Some(Arc::new(options)),
    )?);
    let columns = fields.len();
    let mut encoder = RowEncoder::new(&copy.options, quoted, fields, iso, extra_float_digits);
    let mut batches = df.execute_stream().await.map_err(api_error)?;

    let code = i16::from(binary);
    client
        .feed(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
            code as i8,
            columns as i16,
            vec![code; columns],
        )))
        .await?;
    let mut out = BytesMut::with_capacity(CHUNK + CHUNK / 4);
    let mut ends = Vec::new();
    if copy.options.header {
        encoder.header(&mut out);
        ends.push(out.len());
    }
    if binary {
        RowEncoder::signature(&mut out);
    }
    let mut rows = 0;
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(api_error)?;
        let mut next = 0;
        while next < batch.num_rows() {
            let from = next;
            next = encoder.rows(&batch, next, &mut out, &mut ends, CHUNK)?;
            rows += next - from;
            send(client, &mut out, &mut ends).await?;
        }
    }
    if binary {
        RowEncoder::trailer(&mut out);
        ends.push(out.len());
    }
    send(client, &mut out, &mut ends).await?;
    client
        .feed(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await?;
    Ok(Tag::new("COPY").with_rows(rows))
}

/// The rows encoded in `out` (ending at `ends`), one `CopyData` each, all slices of one
/// buffer. What follows the last row (the binary signature, before the first row)
/// stays in `out`.
async fn send<C>(client: &mut C, out: &mut BytesMut, ends: &mut Vec<usize>) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let Some(&last) = ends.last() else {
        return Ok(());
    };
    let chunk = out.split_to(last).freeze();
    let mut start = 0;
    for end in ends.drain(..) {
        client
            .feed(PgWireBackendMessage::CopyData(CopyData::new(
                chunk.slice(start..end),
            )))
            .await?;
        start = end;
    }
    Ok(())
}
