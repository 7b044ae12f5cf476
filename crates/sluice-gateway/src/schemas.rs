//! The columns of a feed's result, for protocols that describe feeds before calling them
//! (OData `$metadata`, the PostgreSQL catalog). A feed's result schema is only known by
//! running it, so it is learnt by calling the feed with its defaults, or from any call
//! made through those protocols, and kept per revision: revisions are immutable.

use crate::open::LiveFeed;
use crate::{RESERVED_PARAMS, state::Gateway};
use arrow_schema::SchemaRef;
use futures::StreamExt;
use sluice_core::Result;

impl Gateway {
    /// The result schema of `rev`: remembered, or learnt now by calling the feed with its
    /// defaults (a logged call like any other). `None` when the feed has required
    /// parameters and was never called through a describing protocol, or returned no
    /// columns.
    pub async fn result_schema(&self, ws: &str, rev: &LiveFeed) -> Result<Option<SchemaRef>> {
        if let Some(s) = self.known_schema(&rev.scope) {
            return Ok(Some(s));
        }
        if rev.signature.params.iter().any(|p| p.required) {
            return Ok(None);
        }
        let params = rev.signature.coerce(&[], RESERVED_PARAMS)?;
        let open = self.open_feed(ws, rev, &params, "describe").await?;
        let schema = open.schema.clone();
        if open.passthrough {
            // The columns are known before the first row: stop the query, a success.
            open.enough
                .store(true, std::sync::atomic::Ordering::Relaxed);
        } else {
            // A Python feed is read to its end so its worker finishes the call normally
            // instead of being replaced.
            let mut batches = open.batches;
            while let Some(b) = batches.next().await {
                b?;
            }
        }
        if schema.fields().is_empty() {
            return Ok(None);
        }
        self.remember_schema(&rev.scope, &schema);
        Ok(Some(schema))
    }

    /// `scope` is a [`LiveFeed::scope`]: a revision's, immutable like its code.
    pub fn known_schema(&self, scope: &str) -> Option<SchemaRef> {
        self.inner
            .schemas
            .read()
            .expect("schemas lock")
            .get(scope)
            .cloned()
    }

    /// Keep the schema a call of `scope` produced (empty results say nothing).
    pub fn remember_schema(&self, scope: &str, schema: &SchemaRef) {
        if !schema.fields().is_empty() {
            self.inner
                .schemas
                .write()
                .expect("schemas lock")
                .insert(scope.to_string(), schema.clone());
        }
    }
}
