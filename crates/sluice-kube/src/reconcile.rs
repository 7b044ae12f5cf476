//! Reconcile: dereference → build (pure, [`crate::build`]) → apply → sweep → status.
//!
//! Everything here is the thin IO shell around the build steps: reads of what an object refers
//! to, server-side apply of what the build step produced (one field manager, forced, so the
//! operator owns exactly the fields it sets), deletion of objects it made earlier that the
//! build no longer produces (the orphan sweep), then a status patch and an Event. The
//! `tests/reconcile.rs` scenario mock asserts every request these functions make.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::build::feed::{self, FeedInputs, FeedPlan};
use crate::build::workspace::{self, WorkspaceInputs, namespace_of};
use crate::build::{FIELD_MANAGER, LABEL_FEED, Object, Settings};
use crate::conditions::{condition, merge};
use crate::crd::{
    DataSource, DataSourceStatus, Draining, Feed, FeedStatus, Workspace, WorkspaceStatus,
};
use crate::metrics::Metrics;

/// The finalizer the operator puts on Feeds and Workspaces.
pub const FINALIZER: &str = "sluice.dev/cleanup";

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// The operator's namespace (where the registry push Secret is).
    pub namespace: String,
    /// Clock for condition times; a test pins it.
    pub now: fn() -> String,
    /// Consecutive failures per object, for the error policy's backoff.
    pub failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

/// Why a reconcile failed. `category()` is a bounded metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("feed source: {0}")]
    Source(String),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::Finalizer(_) => "finalizer",
            Error::Source(_) => "source",
        }
    }
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Server-side apply of one built object.
pub async fn apply(client: &Client, obj: &Object) -> Result<DynamicObject, kube::Error> {
    let api: Api<DynamicObject> = match &obj.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &obj.resource),
        None => Api::all_with(client.clone(), &obj.resource),
    };
    api.patch(
        &obj.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj.body),
    )
    .await
}

async fn publish(
    ctx: &Context,
    obj: &impl Resource<DynamicType = ()>,
    warning: bool,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    // An event that cannot be written is not worth failing the reconcile for.
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

/// Reconcile one Feed (the controller's entry point).
pub async fn reconcile_feed(feed: Arc<Feed>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.timer("feed");
    let ns = feed.namespace().unwrap_or_default();
    let api: Api<Feed> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, feed, |event| async {
        match event {
            Finalized::Apply(feed) => apply_feed(&feed, &ctx).await,
            Finalized::Cleanup(feed) => cleanup_feed(&feed, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .record("feed", result.as_ref().err().map(Error::category));
    result
}

async fn feed_inputs(feed: &Feed, ctx: &Context) -> Result<FeedInputs, Error> {
    let ns = feed.namespace().unwrap_or_default();
    let client = &ctx.client;
    let namespace = Api::<Namespace>::all(client.clone()).get_opt(&ns).await?;
    let workspace = namespace
        .and_then(|n| n.labels().get(crate::build::LABEL_WORKSPACE).cloned())
        .unwrap_or_else(|| ns.trim_start_matches("sluice-").to_string());
    let source = match (&feed.spec.source.inline, &feed.spec.source.config_map_ref) {
        (Some(text), _) => text.clone(),
        (None, Some(r)) => {
            let key = r.key.clone().unwrap_or_else(|| "feed.py".into());
            let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get_opt(&r.name)
                .await?;
            cm.and_then(|cm| cm.data.and_then(|mut d| d.remove(&key)))
                .ok_or_else(|| {
                    Error::Source(format!("ConfigMap {}/{} has no key {key}", ns, r.name))
                })?
        }
        (None, None) => return Err(Error::Source("the feed has no source".into())),
    };
    let mut data_sources = Vec::new();
    for name in &feed.spec.data_sources {
        if let Some(ds) = Api::<DataSource>::all(client.clone()).get_opt(name).await? {
            data_sources.push(ds);
        }
    }
    let mut inputs = FeedInputs {
        workspace,
        source,
        data_sources,
        ..Default::default()
    };
    if feed.spec.image.is_none() {
        let hash = feed::content_hash(feed, &inputs.source, &ctx.settings);
        let job = Api::<Job>::namespaced(client.clone(), &ns)
            .get_opt(&feed::build_job_name(&feed.name_any(), &hash))
            .await?;
        let status = job.and_then(|j| j.status).unwrap_or_default();
        inputs.build_succeeded = status.succeeded.unwrap_or(0) > 0;
        if inputs.build_succeeded {
            inputs.image_digest =
                build_digest(client, &ns, &feed::build_job_name(&feed.name_any(), &hash)).await?;
        }
        inputs.build_failed = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True");
    }
    Ok(inputs)
}

/// The digest a succeeded build Job wrote to its termination message.
async fn build_digest(client: &Client, ns: &str, job: &str) -> Result<Option<String>, Error> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await?;
    Ok(pods.items.iter().find_map(|p| {
        let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
        let t = statuses.first()?.state.as_ref()?.terminated.as_ref()?;
        let m = t.message.as_deref()?.trim();
        (t.exit_code == 0 && m.starts_with("sha256:") && m.len() == 71).then(|| m.to_string())
    }))
}

async fn apply_feed(feed: &Feed, ctx: &Context) -> Result<Action, Error> {
    let inputs = feed_inputs(feed, ctx).await?;
    let old = feed.status.clone().unwrap_or_default();
    let generation = feed.metadata.generation;
    let plan = match feed::build(feed, &inputs, &ctx.settings) {
        Ok(plan) => plan,
        Err(invalid) => {
            let conditions = vec![
                condition("Deployed", false, invalid.reason(), invalid.to_string()),
                condition("Ready", false, invalid.reason(), invalid.to_string()),
            ];
            let status = FeedStatus {
                conditions: merge(&old.conditions, conditions, generation, &(ctx.now)()),
                observed_generation: generation,
                ..old.clone()
            };
            patch_feed_status(feed, ctx, &status).await?;
            publish(ctx, feed, true, invalid.reason(), invalid.to_string()).await;
            // Nothing to retry until someone changes the feed or the data source.
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
    };

    // The new revision's Deployment as applied: its status says whether it rolled out.
    let mut fresh = None;
    for obj in &plan.objects {
        let applied = apply(&ctx.client, obj).await?;
        if obj.resource.kind == "Deployment" && plan.serving_name.as_ref() == Some(&obj.name) {
            fresh = Some(applied);
        }
    }
    // Until the new revision takes over, the Ready condition is about the pods of the one
    // that still serves.
    let before = serving_before(feed, &old);
    let previous = match &before {
        Some(name) if !switches(&plan, before.as_deref(), fresh.as_ref()) => {
            Api::<DynamicObject>::namespaced_with(
                ctx.client.clone(),
                &feed.namespace().unwrap_or_default(),
                &kube::api::ApiResource::erase::<Deployment>(&()),
            )
            .get_opt(name)
            .await?
        }
        _ => None,
    };
    let now = (ctx.now)();
    let status = feed_status(
        feed,
        &inputs,
        &plan,
        fresh.as_ref(),
        previous.as_ref(),
        &old,
        &now,
    );
    sweep_feed(feed, &plan, &status, ctx).await?;
    // A scale-to-zero feed whose serving pods had no call for its idle time stops them.
    let idle = match fresh
        .as_ref()
        .filter(|_| status.service == plan.serving_name)
    {
        Some(d) => idle(feed, d, &now),
        None => Idle::Busy(None),
    };
    if idle == Idle::ScaleDown {
        let name = plan.serving_name.as_deref().unwrap_or_default();
        Api::<Deployment>::namespaced(ctx.client.clone(), &feed.namespace().unwrap_or_default())
            .patch_scale(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 0}})),
            )
            .await?;
        publish(
            ctx,
            feed,
            false,
            "ScaledToZero",
            format!(
                "no call for {} s: its pods stop until the next one",
                idle_timeout(feed).as_secs()
            ),
        )
        .await;
    }
    patch_feed_status(feed, ctx, &status).await?;
    if old.revision != status.revision && status.revision.as_deref() == Some(&plan.revision) {
        publish(
            ctx,
            feed,
            false,
            "Deployed",
            format!("revision {} is deployed as {}", plan.revision, plan.image),
        )
        .await;
    }
    if inputs.build_failed {
        publish(
            ctx,
            feed,
            true,
            "BuildFailed",
            format!("the build of {} failed; see its Job's logs", plan.image),
        )
        .await;
    }
    // Deployments and Jobs are watched too; these are safety nets, except the end of a
    // drain, which nothing else announces.
    let mut next = if plan.image_ready {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(30)
    };
    if let Some(left) = status.draining.as_ref().and_then(|d| until(&d.until, &now)) {
        next = next.min(left + Duration::from_secs(1));
    }
    if let Idle::Busy(Some(left)) = idle {
        next = next.min(left + Duration::from_secs(1));
    }
    Ok(Action::requeue(next))
}

/// The annotation on a feed's Deployment where gateways record the last call they sent it
/// (RFC 3339, written at most once a minute per gateway).
pub const LAST_CALL: &str = "sluice.dev/last-call";

/// What a scale-to-zero feed's serving Deployment should do about idleness.
#[derive(Debug, PartialEq)]
pub enum Idle {
    /// Stop its pods: no call for its idle time.
    ScaleDown,
    /// Keep them; look again after this long (`None`: nothing to watch: not scale to zero,
    /// or already at zero).
    Busy(Option<Duration>),
}

/// `spec.scaling.idleTimeout`, default 5 minutes, at least one: gateways record calls
/// every 30 s, so a shorter one could stop pods that are serving.
pub fn idle_timeout(feed: &Feed) -> Duration {
    feed.spec
        .scaling
        .idle_timeout
        .as_deref()
        .and_then(|t| {
            let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit())?);
            let n: u64 = n.parse().ok()?;
            Some(Duration::from_secs(match unit {
                "s" => n,
                "m" => n * 60,
                "h" => n * 3600,
                _ => return None,
            }))
        })
        .unwrap_or(Duration::from_secs(300))
        .max(Duration::from_secs(60))
}

/// Whether a scale-to-zero feed's Deployment `d` has been idle long enough at `now`: since
/// the last call a gateway recorded on it, or since it was created when none did.
pub fn idle(feed: &Feed, d: &DynamicObject, now: &str) -> Idle {
    let replicas = d.data["spec"]["replicas"].as_i64().unwrap_or(1);
    if !feed.spec.scaling.scale_to_zero || replicas == 0 {
        return Idle::Busy(None);
    }
    let since = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_CALL).cloned())
        .or_else(|| {
            d.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        });
    let Some(since) = since.and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok()) else {
        return Idle::Busy(None);
    };
    let deadline = (since + idle_timeout(feed)).to_rfc3339();
    match until(&deadline, now) {
        Some(left) => Idle::Busy(Some(left)),
        None => Idle::ScaleDown,
    }
}

/// How long a revision that stopped serving keeps its pods: long enough for every gateway
/// to see the switch (a watch event, usually well under a second) and for calls already
/// sent to it to finish (the agent drains for up to 25 s once it is told to stop).
pub const DRAIN: Duration = Duration::from_secs(30);

/// The Deployment (and Service) serving before this reconcile. A status from before
/// revisions had their own names served from the one named after the feed.
pub fn serving_before(feed: &Feed, old: &FeedStatus) -> Option<String> {
    old.service
        .clone()
        .or_else(|| old.revision.as_ref().map(|_| feed.name_any()))
}

/// Whether the plan's revision takes the calls now: its image exists, and nothing served
/// before, or it is what served before, or every pod of its Deployment runs it and is
/// ready (what `kubectl rollout status` waits for).
pub fn switches(plan: &FeedPlan, before: Option<&str>, fresh: Option<&DynamicObject>) -> bool {
    plan.image_ready
        && (before.is_none()
            || before == plan.serving_name.as_deref()
            || fresh.is_some_and(rolled_out))
}

/// Time left from `now` until `until` (both RFC 3339); `None` once past or unreadable.
fn until(until: &str, now: &str) -> Option<Duration> {
    let t = chrono::DateTime::parse_from_rfc3339(until).ok()?;
    let n = chrono::DateTime::parse_from_rfc3339(now).ok()?;
    (t - n).to_std().ok().filter(|d| !d.is_zero())
}

/// The status a feed gets once its plan was applied. `fresh` is the plan's Deployment as
/// applied, `previous` the one that served before when it still does. The served revision
/// changes in this one write: the gateway follows `status.service`, so calls go to the old
/// revision's pods, then the new one's, never to both behind one Service.
pub fn feed_status(
    feed: &Feed,
    inputs: &FeedInputs,
    plan: &FeedPlan,
    fresh: Option<&DynamicObject>,
    previous: Option<&DynamicObject>,
    old: &FeedStatus,
    now: &str,
) -> FeedStatus {
    let before = serving_before(feed, old);
    let switch = switches(plan, before.as_deref(), fresh);
    let serving = if switch { fresh } else { previous };
    let count = |field: &str| {
        serving
            .and_then(|d| d.data["status"][field].as_i64())
            .unwrap_or(0) as i32
    };
    let (ready_replicas, replicas) = (count("readyReplicas"), count("replicas"));
    let built = if plan.image_ready {
        condition("Built", true, "ImageReady", format!("image {}", plan.image))
    } else if inputs.build_failed {
        condition(
            "Built",
            false,
            "BuildFailed",
            "the build Job failed; see its logs",
        )
    } else {
        condition(
            "Built",
            false,
            "Building",
            format!("building {}", plan.image),
        )
    };
    let deployed = if !plan.image_ready {
        condition(
            "Deployed",
            false,
            "WaitingForBuild",
            "the image is not built yet",
        )
    } else if !switch && fresh.is_some_and(stalled) {
        condition(
            "Deployed",
            false,
            "RolloutStalled",
            format!(
                "revision {}'s pods did not become ready in time; revision {} keeps serving; `kubectl describe deployment {}` and its pods' logs say why",
                plan.revision,
                old.revision.as_deref().unwrap_or_default(),
                plan.serving_name.as_deref().unwrap_or_default()
            ),
        )
    } else if !switch {
        condition(
            "Deployed",
            false,
            "RollingOut",
            format!(
                "revision {} is rolling out; revision {} serves until its pods are ready",
                plan.revision,
                old.revision.as_deref().unwrap_or_default()
            ),
        )
    } else {
        condition(
            "Deployed",
            true,
            "Applied",
            format!("revision {}", plan.revision),
        )
    };
    let (revision, image, service) = if switch {
        (
            Some(plan.revision.clone()),
            Some(plan.image.clone()),
            plan.serving_name.clone(),
        )
    } else {
        (old.revision.clone(), old.image.clone(), before.clone())
    };
    // Ready is about the revision that serves: a feed whose next revision builds or rolls
    // out keeps answering calls, and says so.
    let ready = if ready_replicas > 0 {
        condition(
            "Ready",
            true,
            "Available",
            format!(
                "{ready_replicas} pods of revision {} ready",
                revision.as_deref().unwrap_or_default()
            ),
        )
    } else if service.is_none() {
        condition("Ready", false, "WaitingForBuild", "")
    } else if serving.is_some_and(stalled) {
        condition(
            "Ready",
            false,
            "RolloutStalled",
            format!(
                "no pod of revision {} became ready in time; `kubectl describe deployment {}` and its pods' logs say why",
                revision.as_deref().unwrap_or_default(),
                service.as_deref().unwrap_or_default()
            ),
        )
    } else if feed.spec.scaling.scale_to_zero {
        condition(
            "Ready",
            true,
            "ScaledToZero",
            "the gateway starts a pod on the next call",
        )
    } else {
        condition("Ready", false, "PodsNotReady", "no pod is ready yet")
    };
    let image_digest = image
        .as_deref()
        .and_then(|i| i.split_once('@'))
        .map(|(_, d)| d.to_string())
        .or_else(|| inputs.image_digest.clone().filter(|_| switch))
        .or_else(|| old.image_digest.clone().filter(|_| image == old.image));
    let draining = match (&before, switch) {
        (Some(b), true) if Some(b) != plan.serving_name.as_ref() => {
            let at = chrono::DateTime::parse_from_rfc3339(now)
                .map(|t| t.to_utc())
                .unwrap_or_else(|_| chrono::Utc::now());
            Some(Draining {
                revision: old.revision.clone().unwrap_or_default(),
                service: b.clone(),
                until: (at + DRAIN).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            })
        }
        _ => old
            .draining
            .clone()
            .filter(|d| until(&d.until, now).is_some()),
    };
    FeedStatus {
        observed_generation: feed.metadata.generation,
        revision,
        service,
        draining,
        image,
        image_digest,
        url: Some(plan.url.clone()),
        replicas: Some(replicas),
        ready_replicas: Some(ready_replicas),
        conditions: merge(
            &old.conditions,
            vec![built, deployed, ready],
            feed.metadata.generation,
            now,
        ),
    }
}

/// Whether the Deployment controller gave up waiting for a Deployment's pods (its
/// `progressDeadlineSeconds` passed without progress: a crash loop, an image that cannot be
/// pulled, a quota with no room).
pub fn stalled(d: &DynamicObject) -> bool {
    d.data["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == "Progressing"
                && c["status"] == "False"
                && c["reason"] == "ProgressDeadlineExceeded"
        })
    })
}

/// Whether every pod of a Deployment runs its current template and is ready (what
/// `kubectl rollout status` waits for): the controller has seen the latest spec, all the
/// wanted replicas are updated and ready, and no pod of an older template is left.
pub fn rolled_out(d: &DynamicObject) -> bool {
    let st = &d.data["status"];
    let n = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
    let updated = n(&st["updatedReplicas"]);
    let wanted = d.data["spec"]["replicas"].as_i64().unwrap_or(updated);
    n(&st["observedGeneration"]) >= d.metadata.generation.unwrap_or(0)
        && updated >= wanted
        && n(&st["replicas"]) <= updated
        && n(&st["readyReplicas"]) >= updated
}

async fn patch_feed_status(feed: &Feed, ctx: &Context, status: &FeedStatus) -> Result<(), Error> {
    let api: Api<Feed> = Api::namespaced(ctx.client.clone(), &feed.namespace().unwrap_or_default());
    let body = json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Feed",
        "metadata": {"name": feed.name_any()}, "status": status});
    api.patch_status(
        &feed.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Delete what this operator made for a feed that neither the current plan nor the status
/// still needs: the build Jobs of old revisions, a revision's Deployment, Service and
/// autoscaler once another serves and its drain is over (the status names the one serving
/// and the one draining), a removed canary, an autoscaler of a feed that became fixed-size.
async fn sweep_feed(
    feed: &Feed,
    plan: &FeedPlan,
    status: &FeedStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let ns = feed.namespace().unwrap_or_default();
    let lp = ListParams::default().labels(&feed_selector(feed));
    let wanted = |kind: &str, name: &str| {
        plan.keep_names.iter().any(|k| k == name)
            || status.service.as_deref() == Some(name)
            || status.draining.as_ref().is_some_and(|d| d.service == name)
            || plan
                .objects
                .iter()
                .any(|o| o.resource.kind == kind && o.name == name)
    };
    macro_rules! sweep {
        ($kind:ty) => {{
            let api: Api<$kind> = Api::namespaced(ctx.client.clone(), &ns);
            let kind = <$kind as Resource>::kind(&());
            for o in api.list_metadata(&lp).await? {
                let name = o.name_any();
                if !wanted(&kind, &name) && o.metadata.deletion_timestamp.is_none() {
                    tracing::info!(%kind, %ns, %name, "deleting orphan");
                    api.delete(&name, &DeleteParams::background()).await?;
                }
            }
        }};
    }
    sweep!(Deployment);
    sweep!(Service);
    sweep!(Job);
    sweep!(HorizontalPodAutoscaler);
    Ok(())
}

/// The objects this operator made for a feed.
fn feed_selector(feed: &Feed) -> String {
    format!(
        "{LABEL_FEED}={},{}={}",
        feed.name_any(),
        crate::build::MANAGED_BY.0,
        crate::build::MANAGED_BY.1
    )
}

async fn cleanup_feed(feed: &Feed, ctx: &Context) -> Result<Action, Error> {
    // Owner references would let the garbage collector do this too; deleting in the
    // foreground here means the feed is gone only once its pods stopped serving.
    let ns = feed.namespace().unwrap_or_default();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    let lp = ListParams::default().labels(&feed_selector(feed));
    // Every revision's, the canary's, and those named after the feed by earlier versions.
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    for d in deployments.list_metadata(&lp).await? {
        ignore_not_found(deployments.delete(&d.name_any(), &dp).await.map(|_| ()))?;
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    for svc in services.list_metadata(&lp).await? {
        ignore_not_found(services.delete(&svc.name_any(), &dp).await.map(|_| ()))?;
    }
    publish(
        ctx,
        feed,
        false,
        "Deleted",
        "the feed's pods and services are deleted".into(),
    )
    .await;
    Ok(Action::await_change())
}

fn ignore_not_found(r: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    }
}

/// Reconcile one Workspace (the controller's entry point).
pub async fn reconcile_workspace(ws: Arc<Workspace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.timer("workspace");
    let api: Api<Workspace> = Api::all(ctx.client.clone());
    let result = finalizer(&api, FINALIZER, ws, |event| async {
        match event {
            Finalized::Apply(ws) => apply_workspace(&ws, &ctx).await,
            Finalized::Cleanup(ws) => cleanup_workspace(&ws, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .record("workspace", result.as_ref().err().map(Error::category));
    result
}

async fn apply_workspace(ws: &Workspace, ctx: &Context) -> Result<Action, Error> {
    let name = ws.name_any();
    let client = &ctx.client;
    let mut inputs = WorkspaceInputs::default();
    for ds in Api::<DataSource>::all(client.clone())
        .list(&ListParams::default())
        .await?
    {
        if !workspace::grants(&ds, &name) {
            continue;
        }
        let r = &ds.spec.secret_ref;
        let secret = Api::<Secret>::namespaced(client.clone(), &r.namespace)
            .get_opt(&r.name)
            .await?;
        inputs.data_sources.push((ds, secret));
    }
    if let Some(s) = &ctx.settings.registry_secret {
        inputs.registry_secret = Api::<Secret>::namespaced(client.clone(), &ctx.namespace)
            .get_opt(s)
            .await?;
    }
    for obj in workspace::build(ws, &inputs, &ctx.settings) {
        apply(client, &obj).await?;
    }
    let missing: Vec<String> = inputs
        .data_sources
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(ds, _)| ds.name_any())
        .collect();
    let ready = if missing.is_empty() {
        condition(
            "Ready",
            true,
            "Applied",
            "namespace, quota, RBAC and network policies are applied",
        )
    } else {
        condition(
            "Ready",
            false,
            "SecretMissing",
            format!("the Secrets of data sources {missing:?} do not exist"),
        )
    };
    let old = ws.status.clone().unwrap_or_default();
    let status = WorkspaceStatus {
        observed_generation: ws.metadata.generation,
        namespace: Some(namespace_of(ws)),
        data_sources: inputs
            .data_sources
            .iter()
            .map(|(d, _)| d.name_any())
            .collect(),
        conditions: merge(
            &old.conditions,
            vec![ready],
            ws.metadata.generation,
            &(ctx.now)(),
        ),
    };
    let body = json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Workspace",
        "metadata": {"name": name}, "status": status});
    Api::<Workspace>::all(client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(Action::requeue(Duration::from_secs(600)))
}

async fn cleanup_workspace(ws: &Workspace, ctx: &Context) -> Result<Action, Error> {
    let ns = namespace_of(ws);
    ignore_not_found(
        Api::<Namespace>::all(ctx.client.clone())
            .delete(&ns, &DeleteParams::background())
            .await
            .map(|_| ()),
    )?;
    Ok(Action::await_change())
}

/// The DataSource types feeds can read today (natively and from Python); the CRD accepts
/// more, which the status then calls not served yet.
const SERVED_TYPES: [&str; 2] = ["postgres", "sqlite"];

/// Reconcile one DataSource: its status says whether feeds can use it: a type Sluice serves,
/// and its Secret there with a `url`.
/// (Granting is done by the workspaces it names; they watch DataSources.)
pub async fn reconcile_datasource(ds: Arc<DataSource>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.timer("datasource");
    let result = apply_datasource(&ds, &ctx).await;
    ctx.metrics
        .record("datasource", result.as_ref().err().map(Error::category));
    result
}

async fn apply_datasource(ds: &DataSource, ctx: &Context) -> Result<Action, Error> {
    let r = &ds.spec.secret_ref;
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &r.namespace)
        .get_opt(&r.name)
        .await?;
    let has_url = secret.as_ref().is_some_and(|s| {
        s.data.as_ref().is_some_and(|d| d.contains_key("url"))
            || s.string_data
                .as_ref()
                .is_some_and(|d| d.contains_key("url"))
    });
    let ready = match (&secret, has_url) {
        _ if !SERVED_TYPES.contains(&ds.spec.type_.as_str()) => condition(
            "Ready",
            false,
            "TypeNotServedYet",
            format!(
                "feeds cannot read a {} source yet (they read {}): a feed that uses it fails",
                ds.spec.type_,
                SERVED_TYPES.join(" and ")
            ),
        ),
        (None, _) => condition(
            "Ready",
            false,
            "SecretMissing",
            format!("Secret {}/{} does not exist", r.namespace, r.name),
        ),
        (Some(_), false) => condition(
            "Ready",
            false,
            "SecretHasNoUrl",
            format!("Secret {}/{} has no key `url`", r.namespace, r.name),
        ),
        (Some(_), true) => condition(
            "Ready",
            true,
            "SecretFound",
            format!("granted to {}", ds.spec.workspaces.join(", ")),
        ),
    };
    let old = ds.status.clone().unwrap_or_default();
    let status = DataSourceStatus {
        observed_generation: ds.metadata.generation,
        conditions: merge(
            &old.conditions,
            vec![ready],
            ds.metadata.generation,
            &(ctx.now)(),
        ),
    };
    let body = json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "DataSource",
        "metadata": {"name": ds.name_any()}, "status": status});
    Api::<DataSource>::all(ctx.client.clone())
        .patch_status(
            &ds.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Back off per object: 5 s, doubling to 5 min. Other objects keep their own pace.
pub fn backoff(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.min(6));
    Duration::from_secs(secs.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let s: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(s, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }
}
