//! OData v4, read-only: one service per workspace at `/odata/{ws}/`, one entity set per
//! live feed the caller may read. Feed parameters are custom query options; the system
//! query options run in DataFusion over the feed's Arrow batches as they stream.
//!
//! Keys: a feed that declares `key=[...]` gets it; others get a generated `_row`
//! property (see [`csdl::ROW_KEY`]). Paging: the whole result streams in one response
//! unless the client sends `Prefer: odata.maxpagesize=N`; then each page ends with an
//! absolute `@odata.nextLink` carrying every parameter and a `$skiptoken` that names a
//! server-side cursor, so a paged read calls the feed once (see [`cursor`]).

pub mod csdl;
pub mod cursor;
pub mod filter;
pub mod query;
mod service;

pub use cursor::PagingConfig;
pub use service::{router, router_with};
