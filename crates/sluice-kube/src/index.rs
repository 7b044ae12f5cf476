//! The server's live view of the cluster's Feeds (runtime = kubernetes), kept current by a
//! watch: which feeds are Ready and where their agents (and canaries) answer, whoever
//! created them (the API or GitOps), and which namespace belongs to which workspace.
//!
//! [`FeedIndex`] is plain data fed by watch events and tested synchronously; [`watch`] is
//! the thin shell that feeds it from the API server (kube-rs watchers over Feeds and
//! Workspaces in every namespace) and tells the caller after each change, so the gateway's
//! routes follow the cluster without a deploy through this server.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::{StreamExt, TryStreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};

use crate::build::workspace::{default_namespace, namespace_of};
use crate::control::FeedView;
use crate::crd::{Feed, Workspace};

/// Feeds and workspaces as last seen.
#[derive(Clone, Debug, Default)]
pub struct FeedIndex {
    /// Workspace name → namespace, from Workspace objects.
    workspaces: BTreeMap<String, String>,
    /// (namespace, object name) → what the API shows of the Feed.
    feeds: BTreeMap<(String, String), FeedView>,
}

/// Where a workspace's feed is served.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub workspace: String,
    /// The feed as the API names it (the function).
    pub feed: String,
    pub view: FeedView,
}

impl FeedIndex {
    pub fn apply_workspace(&mut self, ws: &Workspace) {
        self.workspaces.insert(ws.name_any(), namespace_of(ws));
    }

    pub fn delete_workspace(&mut self, ws: &Workspace) {
        self.workspaces.remove(&ws.name_any());
    }

    /// Every Workspace there is (after a (re)list: the ones not in it are gone).
    pub fn reset_workspaces(&mut self, all: &[Workspace]) {
        self.workspaces.clear();
        for w in all {
            self.apply_workspace(w);
        }
    }

    pub fn apply_feed(&mut self, f: &Feed) {
        let v = FeedView::from_feed(f);
        self.feeds.insert((v.namespace.clone(), f.name_any()), v);
    }

    pub fn delete_feed(&mut self, f: &Feed) {
        let ns = f.namespace().unwrap_or_else(|| "default".into());
        self.feeds.remove(&(ns, f.name_any()));
    }

    /// Every Feed there is (after a (re)list: the ones not in it are gone).
    pub fn reset_feeds(&mut self, all: &[Feed]) {
        self.feeds.clear();
        for f in all {
            self.apply_feed(f);
        }
    }

    /// The namespace of a workspace: its Workspace object's, else `sluice-<workspace>`.
    pub fn namespace_of(&self, ws: &str) -> String {
        self.workspaces
            .get(ws)
            .cloned()
            .unwrap_or_else(|| default_namespace(ws))
    }

    /// The workspace a namespace belongs to: the Workspace object that names it, else
    /// `<ws>` for `sluice-<ws>` when no Workspace object claims another namespace for that
    /// name. Feeds in other namespaces belong to no workspace and are not served.
    pub fn workspace_of(&self, ns: &str) -> Option<String> {
        if let Some((ws, _)) = self.workspaces.iter().find(|(_, n)| n.as_str() == ns) {
            return Some(ws.clone());
        }
        let ws = ns.strip_prefix("sluice-").filter(|w| !w.is_empty())?;
        match self.workspaces.get(ws) {
            Some(_) => None, // that workspace lives elsewhere
            None => Some(ws.to_string()),
        }
    }

    /// Workspace → namespace of every Workspace object.
    pub fn namespaces(&self) -> &BTreeMap<String, String> {
        &self.workspaces
    }

    /// Every feed that belongs to a workspace, keyed by (workspace, feed name).
    pub fn routes(&self) -> BTreeMap<(String, String), Route> {
        let mut out = BTreeMap::new();
        for ((ns, _), v) in &self.feeds {
            let Some(ws) = self.workspace_of(ns) else {
                continue;
            };
            let key = (ws.clone(), v.function.clone());
            out.insert(
                key,
                Route {
                    workspace: ws,
                    feed: v.function.clone(),
                    view: v.clone(),
                },
            );
        }
        out
    }

    /// The feeds of one workspace, sorted by name.
    pub fn feeds_of(&self, ws: &str) -> Vec<FeedView> {
        let ns = self.namespace_of(ws);
        let mut out: Vec<FeedView> = self
            .feeds
            .iter()
            .filter(|((n, _), _)| *n == ns)
            .map(|(_, v)| v.clone())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// An event of either watch. Boxed: a Feed is much larger than a Workspace.
enum Seen {
    Feed(Box<Event<Feed>>),
    Workspace(Box<Event<Workspace>>),
}

/// Keep `index` current from the API server until the task is dropped, calling `changed`
/// after each change that can move a route (not for each object of a (re)list: once the
/// list is complete). Watch errors are logged and retried with backoff; a relist replaces
/// what was known, so deletions missed while disconnected are not kept.
pub async fn watch(
    client: Client,
    index: Arc<RwLock<FeedIndex>>,
    changed: impl Fn(&FeedIndex) + Send + Sync,
) {
    let feeds = watcher::watcher(Api::<Feed>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map_ok(|e| Seen::Feed(Box::new(e)));
    let workspaces = watcher::watcher(Api::<Workspace>::all(client), watcher::Config::default())
        .default_backoff()
        .map_ok(|e| Seen::Workspace(Box::new(e)));
    let mut events = futures::stream::select(feeds.boxed(), workspaces.boxed());
    // Objects of a (re)list in progress: applied all at once when it is complete.
    let mut listing_feeds: Vec<Feed> = Vec::new();
    let mut listing_workspaces: Vec<Workspace> = Vec::new();
    while let Some(ev) = events.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "watching Feeds: retrying");
                continue;
            }
        };
        let mut idx = index.write().expect("index lock");
        let publish = match ev {
            Seen::Feed(e) => step(
                *e,
                &mut listing_feeds,
                &mut idx,
                FeedIndex::apply_feed,
                FeedIndex::delete_feed,
                FeedIndex::reset_feeds,
            ),
            Seen::Workspace(e) => step(
                *e,
                &mut listing_workspaces,
                &mut idx,
                FeedIndex::apply_workspace,
                FeedIndex::delete_workspace,
                FeedIndex::reset_workspaces,
            ),
        };
        if publish {
            changed(&idx);
        }
    }
}

/// One watch event into the index: objects of a (re)list gather in `listing` and replace
/// what was known once it is complete. True when routes may have moved.
fn step<K>(
    e: Event<K>,
    listing: &mut Vec<K>,
    idx: &mut FeedIndex,
    apply: fn(&mut FeedIndex, &K),
    delete: fn(&mut FeedIndex, &K),
    reset: fn(&mut FeedIndex, &[K]),
) -> bool {
    match e {
        Event::Init => {
            listing.clear();
            false
        }
        Event::InitApply(k) => {
            listing.push(k);
            false
        }
        Event::InitDone => {
            reset(idx, &std::mem::take(listing));
            true
        }
        Event::Apply(k) => {
            apply(idx, &k);
            true
        }
        Event::Delete(k) => {
            delete(idx, &k);
            true
        }
    }
}
