//! The `pg_catalog` of a connection, built from tables every connection shares.
//!
//! `datafusion-pg-catalog`'s `setup_pg_catalog` decodes its ~60 static catalog tables
//! (`pg_type`, `pg_proc`, `pg_operator`, ...: Arrow files embedded in the crate) for every
//! session it sets up: ~150 ms per connection in a debug build, the bulk of connection
//! setup, paid again by every connection a BI tool opens. Those tables are the same for
//! every workspace and key, so they are decoded once per process ([`statics`]) and shared
//! by `Arc`; only what depends on the connection (the catalog list the dynamic tables like
//! `pg_class` read, the database name, the OID cache) is made per session.
//!
//! [`setup`] is `setup_pg_catalog` of datafusion-pg-catalog 0.19 with the shared tables
//! passed in (the upstream function builds its own); keep it in step when upgrading.

use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::{
    self as pgc, PgCatalogSchemaProvider, PgCatalogStaticTables, array_bounds_udf,
    context::EmptyContextProvider, format_type, generate_series_arg_coercion, has_privilege_udf,
    oid_type_planner, pg_get_expr_udf, quote_ident_udf,
};
use std::sync::{Arc, OnceLock};

static STATICS: OnceLock<Result<Arc<PgCatalogStaticTables>, String>> = OnceLock::new();

/// The static catalog tables of the process, decoded on first use.
pub fn statics() -> Result<Arc<PgCatalogStaticTables>, DataFusionError> {
    STATICS
        .get_or_init(|| {
            PgCatalogStaticTables::try_new()
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(DataFusionError::Internal)
}

/// Register `pg_catalog` (as schema of `catalog_name`) and the PostgreSQL functions
/// clients call, over the shared static tables.
pub fn setup(ctx: &SessionContext, catalog_name: &str) -> Result<(), DataFusionError> {
    let static_tables = statics()?;
    let pg_catalog = Arc::new(PgCatalogSchemaProvider::try_new(
        ctx.state().catalog_list().clone(),
        static_tables.clone(),
        EmptyContextProvider,
    )?);
    ctx.catalog(catalog_name)
        .ok_or_else(|| {
            DataFusionError::Configuration(format!(
                "Catalog not found when registering pg_catalog: {catalog_name}"
            ))
        })?
        .register_schema("pg_catalog", pg_catalog)?;

    ctx.register_udf(pgc::create_current_database_udf(catalog_name));
    ctx.register_udf(pgc::create_current_schema_udf());
    ctx.register_udf(pgc::create_current_schemas_udf());
    ctx.register_udf(pgc::create_pg_get_userbyid_udf());
    for name in [
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_any_column_privilege",
    ] {
        ctx.register_udf(has_privilege_udf::create_has_privilege_udf(name));
    }
    ctx.register_udf(pgc::create_pg_table_is_visible());
    ctx.register_udf(format_type::create_format_type_udf());
    ctx.register_udf(pgc::create_session_user_udf());
    ctx.register_udtf("pg_get_keywords", static_tables.pg_get_keywords.clone());
    ctx.register_udf(pg_get_expr_udf::create_pg_get_expr_udf());
    ctx.register_udf(pgc::create_pg_get_partkeydef_udf());
    ctx.register_udf(pgc::create_pg_relation_is_publishable_udf());
    ctx.register_udf(pgc::create_pg_get_statisticsobjdef_columns_udf());
    ctx.register_udf(pgc::create_pg_encoding_to_char_udf());
    ctx.register_udf(pgc::create_pg_backend_pid_udf());
    ctx.register_udf(pgc::create_pg_relation_size_udf());
    ctx.register_udf(pgc::create_pg_total_relation_size_udf());
    ctx.register_udf(pgc::create_pg_stat_get_numscans());
    ctx.register_udf(pgc::create_pg_get_constraintdef());
    ctx.register_udf(pgc::create_pg_get_partition_ancestors_udf());
    ctx.register_udf(quote_ident_udf::create_quote_ident_udf());
    ctx.register_udf(quote_ident_udf::create_parse_ident_udf());
    ctx.register_udf(array_bounds_udf::create_array_upper_udf());
    ctx.register_udf(array_bounds_udf::create_array_lower_udf());
    // PostgreSQL's OID alias types (`regclass`, `regproc`, ...) as planner types.
    {
        let state = ctx.state_ref();
        let existing = state.read().clone();
        let new_state = SessionStateBuilder::new_from_existing(existing)
            .with_type_planner(Arc::new(oid_type_planner::PgOidTypePlanner))
            .build();
        *state.write() = new_state;
    }
    // int4 bounds for generate_series / range, as PostgreSQL accepts them.
    generate_series_arg_coercion::CoerceIntArgsToBigInt::widen(ctx);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionConfig;

    fn ctx(ws: &str) -> SessionContext {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(ws, "public")
            .with_information_schema(true);
        SessionContext::new_with_config(config)
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The shared tables answer like the upstream setup, connection after connection.
    #[tokio::test]
    async fn shared_catalog_answers_like_the_upstream_one() {
        let upstream = ctx("demo");
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
            &upstream,
            "demo",
            EmptyContextProvider,
        )
        .unwrap();
        for sql in [
            "select oid, typname, typlen from pg_catalog.pg_type order by oid limit 20",
            "select count(*) from pg_catalog.pg_proc",
            "select current_database(), format_type(23, -1), quote_ident('a b')",
            "select nspname from pg_catalog.pg_namespace order by 1",
            "select * from generate_series(1, array_upper(make_array(1, 2, 3), 1))",
            "select cast(oid as regtype) from pg_catalog.pg_type where typname = 'int4'",
        ] {
            let want = rows(&upstream, sql).await;
            for _ in 0..2 {
                let shared = ctx("demo");
                setup(&shared, "demo").unwrap();
                assert_eq!(rows(&shared, sql).await, want, "{sql}");
            }
        }
        let a = statics().unwrap();
        assert!(Arc::ptr_eq(&a, &statics().unwrap()), "decoded once");
    }

    /// Setting up a connection's catalog no longer decodes the static tables.
    #[test]
    fn setup_is_cheap_once_the_tables_are_decoded() {
        statics().unwrap();
        let t = std::time::Instant::now();
        for _ in 0..10 {
            setup(&ctx("demo"), "demo").unwrap();
        }
        let each = t.elapsed() / 10;
        // ~150 ms per setup (debug) when each one decoded the tables; ~1 ms now.
        assert!(
            each < std::time::Duration::from_millis(40),
            "catalog setup took {each:?}"
        );
    }
}
