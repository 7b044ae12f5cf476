//! What the IDE shows beside the editor: the tables and columns of a SQL data source (to
//! write `sluice.sql` against) and the new-feed templates (the ones `sluice init` writes).
//! Catalog reads go through the same pooled connections and Arrow path as feed queries;
//! they read the database's own catalog, never rows.

use crate::{Caller, handlers::ApiResult};
use axum::{
    Json,
    extract::{Path, State},
};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use sluice_core::{Code, Error};
use sluice_gateway::{
    Gateway,
    encode::{Format, encode},
};
use sluice_sources::SourceConfig;

/// At most this many columns are listed: the sidebar is for orientation, not a data
/// dictionary of a 10,000-table warehouse. Bound into both catalog queries as
/// `:max_columns`, so the limit is written once.
const MAX_COLUMNS: i64 = 5000;

const SQLITE_CATALOG: &str = "select m.name as table_name, p.name as column_name, p.type as data_type \
     from sqlite_master m join pragma_table_info(m.name) p \
     where m.type in ('table', 'view') and m.name not like 'sqlite_%' \
     order by m.name, p.cid limit :max_columns";

const POSTGRES_CATALOG: &str = "select case when c.table_schema = 'public' then c.table_name::text \
     else c.table_schema::text || '.' || c.table_name::text end as table_name, \
     c.column_name::text as column_name, c.data_type::text as data_type \
     from information_schema.columns c \
     where c.table_schema not in ('pg_catalog', 'information_schema') \
     order by c.table_schema, c.table_name, c.ordinal_position limit :max_columns";

pub async fn templates(Caller(_): Caller) -> Json<Value> {
    Json(json!(sluice_core::templates::TEMPLATES))
}

/// `GET /api/v1/sources/{name}/tables`: `[{"name", "columns": [{"name", "type"}]}]`.
pub async fn tables(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let src = gw.store().source(&name).await?;
    // Sources not granted to the caller's workspace do not exist for them.
    let src = src
        .filter(|s| {
            p.role.is_admin()
                || p.workspace
                    .as_ref()
                    .is_some_and(|ws| s.workspaces.contains(ws))
        })
        .ok_or_else(|| Error::not_found(Code::SourceNotFound, "data source", &name))?;
    let (cfg, _) = sluice_gateway::source_config(&src)?;
    let sql = match cfg {
        SourceConfig::Sqlite { .. } => SQLITE_CATALOG,
        SourceConfig::Postgres { .. } => POSTGRES_CATALOG,
    };
    let limit = Map::from_iter([("max_columns".to_string(), json!(MAX_COLUMNS))]);
    let q = gw.sources().query(&name, &cfg, sql, &limit).await?;
    let mut json_bytes = Vec::new();
    let mut s = encode(Format::Json, q.schema, q.batches);
    while let Some(chunk) = s.next().await {
        json_bytes.extend_from_slice(&chunk?);
    }
    let rows: Vec<Map<String, Value>> = serde_json::from_slice(&json_bytes)
        .map_err(|e| Error::internal(format!("could not re-read the catalog: {e}")))?;
    Ok(Json(Value::Array(group(rows))))
}

/// Catalog rows (ordered by table) → one entry per table with its columns in order.
fn group(rows: Vec<Map<String, Value>>) -> Vec<Value> {
    let text = |r: &Map<String, Value>, k: &str| {
        r.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for r in &rows {
        let table = text(r, "table_name");
        let col = json!({"name": text(r, "column_name"), "type": text(r, "data_type")});
        match out.last_mut() {
            Some((t, cols)) if *t == table => cols.push(col),
            _ => out.push((table, vec![col])),
        }
    }
    out.into_iter()
        .map(|(name, columns)| json!({"name": name, "columns": columns}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_rows_group_by_table_in_order() {
        let rows: Vec<Map<String, Value>> = serde_json::from_value(json!([
            {"table_name": "sales", "column_name": "day", "data_type": "DATE"},
            {"table_name": "sales", "column_name": "amount", "data_type": "REAL"},
            {"table_name": "products", "column_name": "id", "data_type": null},
        ]))
        .unwrap();
        assert_eq!(
            json!(group(rows)),
            json!([
                {"name": "sales", "columns": [{"name": "day", "type": "DATE"}, {"name": "amount", "type": "REAL"}]},
                {"name": "products", "columns": [{"name": "id", "type": ""}]},
            ])
        );
    }
}
