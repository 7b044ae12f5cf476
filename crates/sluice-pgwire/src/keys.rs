//! Primary keys: a feed that declares `key=[...]` (`@sluice.feed(key=["id"])`) reports it
//! as its table's primary key, named `<feed>_pkey`, when every column it names is a column
//! of the table (the rule OData's entity keys follow); other feeds have none.
//!
//! `pg_constraint` and `pg_index` stay empty: the clients' key queries (pgjdbc's
//! `getPrimaryKeys`, SQLAlchemy's `get_pk_constraint`) are rewritten (`rewrite.rs`) to read
//! the table function `sluice_primary_keys()`, one row per key column:
//! `table_name, column_name, key_seq (1-based), attnum, pk_name, key_len` (the
//! number of key columns).

use crate::table::{FeedSchema, FeedTable};
use arrow_array::{Int16Array, Int32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::TableFunctionArgs;
use datafusion::catalog::{MemTable, SchemaProvider, Session, TableFunctionImpl, TableProvider};
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

type DfResult<T> = datafusion::error::Result<T>;

pub const FUNCTION: &str = "sluice_primary_keys";

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_seq", DataType::Int32, false),
        Field::new("attnum", DataType::Int16, false),
        Field::new("pk_name", DataType::Utf8, false),
        Field::new("key_len", DataType::Int16, false),
    ]))
}

/// `sluice_primary_keys()`.
#[derive(Debug)]
pub struct PrimaryKeysFunction {
    pub feeds: Arc<FeedSchema>,
}

impl TableFunctionImpl for PrimaryKeysFunction {
    fn call_with_args(&self, _args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        Ok(Arc::new(PrimaryKeys {
            feeds: self.feeds.clone(),
            schema: schema(),
        }))
    }
}

#[derive(Debug)]
struct PrimaryKeys {
    feeds: Arc<FeedSchema>,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for PrimaryKeys {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    /// The keys are read when the query runs: each feed's table (its live revision and
    /// cached columns), as `pg_class` lists them.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (mut tables, mut columns, mut seqs, mut attnums, mut names, mut lens) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut feeds = self.feeds.feed_names().to_vec();
        feeds.sort();
        for feed in feeds {
            let Some(table) = self.feeds.table(&feed).await? else {
                continue;
            };
            let Some(table) = table.downcast_ref::<FeedTable>() else {
                continue;
            };
            let key = table.declared_key();
            let schema = table.schema();
            let positions: Option<Vec<usize>> = key
                .iter()
                .map(|k| schema.fields().iter().position(|f| f.name() == k))
                .collect();
            let Some(positions) = positions.filter(|p| !p.is_empty()) else {
                continue;
            };
            for (seq, (col, pos)) in key.iter().zip(positions).enumerate() {
                tables.push(feed.clone());
                columns.push(col.clone());
                seqs.push(seq as i32 + 1);
                attnums.push(pos as i16 + 1);
                names.push(format!("{feed}_pkey"));
                lens.push(key.len() as i16);
            }
        }
        let batch = RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from(tables)),
                Arc::new(StringArray::from(columns)),
                Arc::new(Int32Array::from(seqs)),
                Arc::new(Int16Array::from(attnums)),
                Arc::new(StringArray::from(names)),
                Arc::new(Int16Array::from(lens)),
            ],
        )?;
        MemTable::try_new(self.schema.clone(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
