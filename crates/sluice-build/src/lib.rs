//! Daemonless OCI image builds for feed revisions (`sluice build`, run in-cluster as a Job by
//! the operator). No Docker daemon, no privileges: layers are made in memory as reproducible
//! tarballs and pushed through the registry's distribution API.
//!
//! An image is the base runtime's layers + a dependency layer keyed by the lock hash (reused
//! across revisions) + a code layer. This crate knows nothing of Kubernetes or the store.

pub mod cli;
pub mod image;
pub mod layer;
pub mod registry;
