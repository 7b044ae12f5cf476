//! The cluster side of runtime = kubernetes, as the control API needs it: write a feed's
//! new revision where the operator picks it up, and say how far it got. Implemented over
//! `sluice_kube::control::KubeFeeds` by the `sluice` binary; a trait here so the gateway and
//! control crates stay free of the Kubernetes client.
//!
//! Also where calls go: a feed's [`AgentRoute`] (its agent, and a canary taking a share of
//! the calls), chosen per call by [`pick`], which names the revision that will serve it: the
//! gateway checks the call's parameters against that revision's signature and logs the call
//! under it.

use futures::future::BoxFuture;
use sluice_core::Result;
use sluice_store::Revision;

/// A feed as the cluster reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterFeed {
    pub name: String,
    /// The revision being served.
    pub live_revision: Option<String>,
    pub ready: bool,
    /// What it waits for when not ready (a condition's reason).
    pub waiting_for: Option<String>,
    /// Where its agent answers inside the cluster, once ready.
    pub agent_url: Option<String>,
    /// Written through the API (false: applied by GitOps).
    pub managed_by_server: bool,
    /// The cache duration its spec declares.
    pub cache: Option<String>,
}

impl ClusterFeed {
    /// Where its calls go once it is ready: its agent, serving its live revision.
    pub fn route(&self) -> Option<AgentRoute> {
        match (&self.agent_url, &self.live_revision) {
            (Some(url), Some(rev)) if self.ready => Some(AgentRoute::live(url, rev)),
            _ => None,
        }
    }
}

pub trait Cluster: Send + Sync {
    /// Make `rev` the feed's live revision in the cluster (a deploy or a rollback).
    fn deploy<'a>(&'a self, ws: &'a str, rev: &'a Revision) -> BoxFuture<'a, Result<ClusterFeed>>;
    /// Every feed of the workspace in the cluster, however it was created.
    fn list<'a>(&'a self, ws: &'a str) -> BoxFuture<'a, Result<Vec<ClusterFeed>>>;
    /// Follow the rollout of `rev` after [`Cluster::deploy`] (a deploy whose client watches):
    /// what it waits for and its build's log go to `progress` as they come, until it is
    /// Ready, fails, or the implementation's time limit passes; answers the state then.
    fn follow<'a>(
        &'a self,
        ws: &'a str,
        rev: &'a Revision,
        since: chrono::DateTime<chrono::Utc>,
        progress: &'a (dyn Fn(Rollout) + Send + Sync),
    ) -> BoxFuture<'a, Result<ClusterFeed>>;
    /// Remove the feed from the cluster (the operator's finalizer takes its pods down).
    /// A feed that is not there is not an error.
    fn delete<'a>(&'a self, ws: &'a str, feed: &'a str) -> BoxFuture<'a, Result<()>>;
    /// A scale-to-zero feed: record that a call is being sent to its pods (`AgentRoute::wake`
    /// names them), which the operator's idle timer counts from.
    fn touch<'a>(&'a self, wake: &'a str) -> BoxFuture<'a, Result<()>>;
    /// A scale-to-zero feed with no pod: start one (an autoscaler takes over from there).
    fn wake<'a>(&'a self, wake: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// What a rollout reports while [`Cluster::follow`] watches it.
#[derive(Clone, Debug, PartialEq)]
pub enum Rollout {
    /// Now waiting for this (a condition's reason: Building, PodsNotReady, ...).
    Waiting(String),
    /// A line the image build printed.
    BuildLog(String),
}

/// What the gateway knows of one of the cluster's feeds (a watch of the Feeds keeps it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Ready: where its calls go.
    Ready(AgentRoute),
    /// In the cluster but not serving yet: what it waits for (a condition's reason, e.g.
    /// `Building` or `PodsNotReady`). Calls get `feed_not_ready` (503, Retry-After).
    Waiting(String),
}

impl Route {
    /// The route a feed takes when the cluster reports `seen` and the gateway routed it by
    /// `before`. A feed that was Ready keeps its route while its next revision builds or
    /// rolls out (the operator keeps the previous revision's Deployment and Service serving
    /// until the new one is Ready, and then switches in one status write): a new revision
    /// goes live atomically, and until then calls are the previous one's, not 503s. Only a
    /// feed that has never been Ready (since this gateway started) waits.
    pub fn carried(before: Option<&Route>, seen: Route) -> Route {
        match (before, seen) {
            (Some(Route::Ready(r)), Route::Waiting(_)) => Route::Ready(r.clone()),
            (_, seen) => seen,
        }
    }
}

/// Where a ready feed's calls go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRoute {
    /// The live revision's agent.
    pub url: String,
    /// The revision it serves (the Feed's `status.revision`): what its calls are logged
    /// under and whose signature their parameters are checked against.
    pub revision: String,
    pub canary: Option<CanaryRoute>,
    /// Set for a feed that scales to zero: what names its pods to [`Cluster::touch`] and
    /// [`Cluster::wake`] (`namespace/deployment`).
    pub wake: Option<String>,
}

/// A canary revision's agent and the share of calls it takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryRoute {
    pub url: String,
    /// The canary's revision (the Feed's `spec.canary.revision`).
    pub revision: String,
    /// Percent of calls, 0 to 100.
    pub weight: u8,
}

impl AgentRoute {
    pub fn live(url: impl Into<String>, revision: impl Into<String>) -> AgentRoute {
        AgentRoute {
            url: url.into(),
            revision: revision.into(),
            canary: None,
            wake: None,
        }
    }

    /// The live agent, whatever the split says.
    pub fn live_target(&self) -> Target<'_> {
        Target {
            url: &self.url,
            revision: &self.revision,
            canary: false,
        }
    }
}

/// The agent chosen for one call, and the revision it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    pub url: &'a str,
    pub revision: &'a str,
    pub canary: bool,
}

/// The agent that serves the call with this request id: the canary for `weight` percent of
/// request ids, the live agent for the rest. Deterministic (a request retried with its id
/// lands on the same revision, and every gateway replica agrees) and uniform: the bucket
/// is a hash of the id modulo 100, FNV-1a so it does not change with the Rust version.
pub fn pick<'a>(route: &'a AgentRoute, request_id: &str) -> Target<'a> {
    match &route.canary {
        Some(c) if bucket(request_id) < u32::from(c.weight) => Target {
            url: &c.url,
            revision: &c.revision,
            canary: true,
        },
        _ => route.live_target(),
    }
}

fn bucket(request_id: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in request_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % 100) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(weight: u8) -> AgentRoute {
        AgentRoute {
            wake: None,
            url: "http://live".into(),
            revision: "3".into(),
            canary: Some(CanaryRoute {
                url: "http://canary".into(),
                revision: "4".into(),
                weight,
            }),
        }
    }

    fn canary_share(r: &AgentRoute, n: usize) -> usize {
        (0..n)
            .filter(|i| pick(r, &format!("req-{i:08x}")).url == "http://canary")
            .count()
    }

    #[test]
    fn the_canary_gets_its_weight_of_calls() {
        let n = 20_000;
        for weight in [1u8, 10, 25, 50, 90] {
            let got = canary_share(&route(weight), n) as f64 / n as f64 * 100.0;
            assert!(
                (got - f64::from(weight)).abs() < 1.5,
                "weight {weight}: {got:.2}% of calls went to the canary"
            );
        }
    }

    #[test]
    fn zero_and_full_weights_and_no_canary_are_exact() {
        assert_eq!(canary_share(&route(0), 1000), 0);
        assert_eq!(canary_share(&route(100), 1000), 1000);
        let live = AgentRoute::live("http://live", "3");
        assert!((0..1000).all(|i| pick(&live, &i.to_string()).url == "http://live"));
    }

    #[test]
    fn the_same_request_id_always_lands_on_the_same_revision() {
        let r = route(30);
        for i in 0..200 {
            let id = format!("{i}-retry");
            let first = pick(&r, &id);
            assert!((0..5).all(|_| pick(&r, &id) == first));
        }
        // Raising the weight only moves calls to the canary, never back (buckets are fixed).
        let (low, high) = (route(10), route(40));
        for i in 0..2000 {
            let id = i.to_string();
            if pick(&low, &id).url == "http://canary" {
                assert_eq!(pick(&high, &id).url, "http://canary", "{id}");
            }
        }
    }

    #[test]
    fn the_target_names_the_revision_of_the_agent_it_picks() {
        let r = route(50);
        let (mut canary, mut live) = (0, 0);
        for i in 0..400 {
            let t = pick(&r, &i.to_string());
            if t.url == "http://canary" {
                assert_eq!((t.revision, t.canary), ("4", true));
                canary += 1;
            } else {
                assert_eq!((t.url, t.revision, t.canary), ("http://live", "3", false));
                live += 1;
            }
        }
        assert!(canary > 100 && live > 100, "{canary} canary, {live} live");
        assert_eq!(r.live_target().revision, "3");
    }

    #[test]
    fn a_feed_that_was_ready_keeps_its_route_until_the_next_revision_is_ready() {
        let v3 = Route::Ready(AgentRoute::live("http://sales.ns.svc", "3"));
        let v4 = Route::Ready(AgentRoute::live("http://sales.ns.svc", "4"));
        let building = || Route::Waiting("Building".into());
        // Building, then rolling out revision 4: revision 3 keeps the calls.
        let mut r = Route::carried(Some(&v3), building());
        assert_eq!(r, v3);
        r = Route::carried(Some(&r), Route::Waiting("RollingOut".into()));
        assert_eq!(r, v3, "still carried on the next change");
        // Revision 4 is Ready: it takes the calls at once.
        assert_eq!(Route::carried(Some(&r), v4.clone()), v4);
        // Never Ready: it waits (`feed_not_ready`), whatever it waited for before.
        assert_eq!(Route::carried(None, building()), building());
        assert_eq!(
            Route::carried(Some(&building()), Route::Waiting("PodsNotReady".into())),
            Route::Waiting("PodsNotReady".into())
        );
    }

    #[test]
    fn buckets_are_stable_across_releases() {
        // FNV-1a 64 of "abc" is 0xe71fa2190541574b; a change of hash would reshuffle
        // which calls hit a canary in the middle of a rollout.
        assert_eq!(bucket("abc"), (0xe71f_a219_0541_574b_u64 % 100) as u32);
        assert_eq!(bucket(""), (0xcbf2_9ce4_8422_2325_u64 % 100) as u32);
    }
}
