//! Sluice on Kubernetes: the `Workspace`, `Feed` and `DataSource` custom resources
//! ([`crd`]), the pure build steps that turn one of them into the Kubernetes objects it needs
//! ([`build`]), and the operator that applies those with server-side apply ([`reconcile`],
//! [`operator`]), and what `sluice server` needs to deploy and read Feeds when its runtime is
//! Kubernetes ([`control`]), with a watched view of the cluster's Feeds ([`index`]).
//!
//! This crate owns everything the operator writes to a cluster. It never touches the store,
//! the gateway or the local runtime: the control plane talks to it only through Feed objects.

pub mod build;
pub mod conditions;
pub mod control;
pub mod crd;
pub mod crdgen;
pub mod index;
pub mod lease;
pub mod metrics;
pub mod operator;
pub mod reconcile;
