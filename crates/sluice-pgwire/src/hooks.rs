//! Statements clients send that `datafusion-postgres` does not answer, answered before
//! its own hooks. Feeds are read-only, so savepoints have nothing to keep: they are
//! acknowledged (SQLAlchemy and psycopg's nested transactions use them), and
//! `DISCARD ALL` (Npgsql's connection reset) drops nothing a read-only session holds.

use async_trait::async_trait;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire;
use pgwire::api::ClientInfo;
use pgwire::api::results::{Response, Tag};
use pgwire::error::PgWireResult;
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
        _ => None,
    }
}

#[async_trait]
impl QueryHook for ReadOnlyStatements {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
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
        tag(statement)?;
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
