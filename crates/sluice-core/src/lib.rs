//! The domain of Sluice, with no IO: the words of the product (workspace, feed, revision,
//! key, role), feed signatures and how request parameters are checked against them, the
//! rewriting of named SQL parameters, and the error type every other crate reports with.
//!
//! This crate must never touch a socket, a file, a database or a process: everything
//! here is a pure function on plain data so it can be tested in microseconds.

pub mod agent;
pub mod error;
pub mod keys;
pub mod names;
pub mod params;
pub mod role;
pub mod sqlparams;
pub mod templates;

pub use error::{Code, Error, Result};
pub use params::{FeedSignature, ParamSpec, ParamType, ParamValue, Params};
pub use role::Role;
