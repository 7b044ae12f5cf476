//! The integration tests of sluice-kube, in one test binary (one link instead of six).
//! Run one group with `cargo test -p sluice-kube --test integration <group>::`.

mod build;
mod chart;
mod control;
mod crds;
mod e2e;
mod index;
mod reconcile;
mod scale;
