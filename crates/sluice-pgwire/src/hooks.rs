//! Statements clients send that `datafusion-postgres` does not answer, answered before
//! its own hooks. Feeds are read-only, so savepoints have nothing to keep: they are
//! acknowledged (SQLAlchemy and psycopg's nested transactions use them), and
//! `DISCARD ALL` (Npgsql's connection reset) drops nothing a read-only session holds.
//! Temporary tables (Tableau's connect check) are tables of the connection's own
//! session: every table a client creates lives only as long as its connection. A `COPY`
//! that reaches the hooks (one among other statements) is refused.

use async_trait::async_trait;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire;
use pgwire::api::ClientInfo;
use pgwire::api::results::{Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::response::TransactionStatus;
use std::sync::Arc;

#[derive(Debug)]
pub struct ReadOnlyStatements;

fn tag(statement: &Statement) -> Option<&'static str> {
    match statement {
        Statement::Savepoint { .. } => Some("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Some("RELEASE"),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => Some("ROLLBACK"),
        Statement::Discard { .. } => Some("DISCARD ALL"),
        // psycopg follows a DISCARD ALL with it. Statements a client prepares again
        // under the same name replace the old ones.
        Statement::Deallocate { name, .. } if name.value.eq_ignore_ascii_case("all") => {
            Some("DEALLOCATE ALL")
        }
        _ => None,
    }
}

/// Tables of the session: `CREATE [LOCAL] TEMPORARY TABLE ... [ON COMMIT ...]` as a
/// plain `CREATE TABLE`, which DataFusion plans, and their `CREATE`/`DROP` answered with
/// PostgreSQL's command tags (DataFusion's answer is an empty result).
fn session_ddl(statement: &Statement) -> Option<(String, &'static str)> {
    match statement {
        Statement::CreateTable(ct) => {
            let mut ct = ct.clone();
            ct.temporary = false;
            ct.global = None;
            ct.on_commit = None;
            Some((Statement::CreateTable(ct).to_string(), "CREATE TABLE"))
        }
        Statement::Drop {
            object_type: ObjectType::Table,
            ..
        } => Some((statement.to_string(), "DROP TABLE")),
        _ => None,
    }
}

async fn run_ddl(ctx: &SessionContext, sql: &str, tag: &str) -> PgWireResult<Response> {
    let err = |e: datafusion::error::DataFusionError| PgWireError::ApiError(Box::new(e));
    ctx.sql(sql)
        .await
        .map_err(err)?
        .collect()
        .await
        .map_err(err)?;
    Ok(Response::Execution(Tag::new(tag)))
}

#[async_trait]
impl QueryHook for ReadOnlyStatements {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some((sql, tag)) = session_ddl(statement) {
            return Some(run_ddl(ctx, &sql, tag).await);
        }
        // A COPY alone is run by the connection (`copy/`); one among other statements
        // must not reach DataFusion, whose own COPY writes files on the server.
        if matches!(statement, Statement::Copy { .. }) {
            return Some(Err(crate::copy::refuse_in_batch()));
        }
        let t = tag(statement)?;
        // ROLLBACK TO SAVEPOINT leaves a failed transaction usable again.
        if matches!(statement, Statement::Rollback { .. })
            && client.transaction_status() == TransactionStatus::Error
        {
            client.set_transaction_status(TransactionStatus::Transaction);
        }
        Some(Ok(Response::Execution(Tag::new(t))))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if matches!(statement, Statement::Copy { .. }) {
            return Some(Err(crate::copy::refuse_in_batch()));
        }
        if tag(statement).is_none() && session_ddl(statement).is_none() {
            return None;
        }
        Some(Ok(LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: false,
            schema: Arc::new(DFSchema::empty()),
        })))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.handle_simple_query(statement, ctx, client).await
    }
}
