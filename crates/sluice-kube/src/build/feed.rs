//! A Feed becomes: a ConfigMap with its source and lock (the build input), a build Job for its
//! revision (unless `spec.image` names a ready image), and once the image exists that
//! revision's own Deployment running `sluice agent`, its Service and autoscaler (see
//! [`serving_object_name`]), and the same for a canary.
//!
//! The revision is a content hash of what goes into the image, so the same source, lock and
//! base always give the same image tag and a rebuild is never needed for an unchanged feed.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, HTTPGetAction, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::workspace::{
    BUILDER_SERVICE_ACCOUNT, FEED_SERVICE_ACCOUNT, REGISTRY_SECRET, data_source_secret_name, grants,
};
use super::{
    AGENT_PORT, LABEL_FEED, LABEL_REVISION, LABEL_ROLE, LABEL_TRACK, METRICS_PORT, Object,
    Settings, base_labels, controller_ref, restricted_container, restricted_pod,
};
use crate::crd::{CpuMemory, DataSource, Feed};

/// What was read from the cluster for a feed.
#[derive(Clone, Debug, Default)]
pub struct FeedInputs {
    /// The workspace the feed's namespace belongs to.
    pub workspace: String,
    /// The module source (inline, or read from the ConfigMap).
    pub source: String,
    /// The DataSources the feed names that exist.
    pub data_sources: Vec<DataSource>,
    /// Set once this revision's build Job has succeeded.
    pub build_succeeded: bool,
    /// The build Job failed for good (its backoff limit is spent).
    pub build_failed: bool,
    /// The digest the build Job pushed (from its termination message), `sha256:...`.
    pub image_digest: Option<String>,
}

/// Why a feed cannot be deployed as written. Shown in its `Deployed` condition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    #[error("data source {0:?} does not exist")]
    MissingDataSource(String),
    #[error("data source {0:?} is not granted to workspace {1:?}")]
    NotGranted(String, String),
}

impl Invalid {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::MissingDataSource(_) => "DataSourceMissing",
            Invalid::NotGranted(..) => "DataSourceNotGranted",
        }
    }
}

/// What to apply for a feed, and what the status will say about it.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedPlan {
    pub revision: String,
    pub image: String,
    /// The image exists (given in the spec, or built).
    pub image_ready: bool,
    pub url: String,
    pub objects: Vec<Object>,
    /// The Deployment and Service of this revision, once its image exists.
    pub serving_name: Option<String>,
    /// Existing objects the orphan sweep must leave alone besides the plan's (a canary kept
    /// while the next live revision builds). Which earlier revision keeps serving is the
    /// reconcile's call: it depends on the new revision's pods.
    pub keep_names: Vec<String>,
}

/// The function a feed serves.
pub fn function_of(feed: &Feed) -> String {
    feed.spec
        .function
        .clone()
        .unwrap_or_else(|| feed.name_any())
}

/// The content hash of a revision: source, lock, base image and function, and the
/// ready-made image when the spec names one (so a new image is a new revision even with the
/// same code; without one the hash is what it always was).
pub fn content_hash(feed: &Feed, source: &str, settings: &Settings) -> String {
    let mut h = Sha256::new();
    if let Some(image) = &feed.spec.image {
        h.update(b"image\0");
        h.update((image.len() as u64).to_be_bytes());
        h.update(image.as_bytes());
    }
    for part in [
        source,
        feed.spec.lock.as_deref().unwrap_or(""),
        feed.spec
            .runtime_image
            .as_deref()
            .unwrap_or(&settings.runtime_image),
        &function_of(feed),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())[..12].to_string()
}

/// Name of the build Job of a revision.
pub fn build_job_name(feed: &str, hash: &str) -> String {
    format!("{feed}-build-{}", &hash[..8])
}

/// Plan a feed: validate its references, then build every object.
pub fn build(feed: &Feed, inputs: &FeedInputs, settings: &Settings) -> Result<FeedPlan, Invalid> {
    for ds in &feed.spec.data_sources {
        match inputs.data_sources.iter().find(|d| &d.name_any() == ds) {
            None => return Err(Invalid::MissingDataSource(ds.clone())),
            Some(d) if !grants(d, &inputs.workspace) => {
                return Err(Invalid::NotGranted(ds.clone(), inputs.workspace.clone()));
            }
            Some(_) => {}
        }
    }
    let name = feed.name_any();
    let ns = feed.namespace().unwrap_or_default();
    let hash = content_hash(feed, &inputs.source, settings);
    let revision = feed.spec.revision.clone().unwrap_or_else(|| hash.clone());
    let owner = controller_ref(feed);
    let mut labels = base_labels(&inputs.workspace);
    labels.insert(LABEL_FEED.into(), name.clone());
    let meta = |object_name: String, labels: BTreeMap<String, String>| ObjectMeta {
        name: Some(object_name),
        namespace: Some(ns.clone()),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };

    let mut objects = Vec::new();
    let mut data = BTreeMap::from([("feed.py".to_string(), inputs.source.clone())]);
    if let Some(lock) = &feed.spec.lock {
        data.insert("requirements.lock".into(), lock.clone());
    }
    if settings.kaniko_image.is_some() {
        data.insert("Dockerfile".into(), dockerfile(feed, settings));
    }
    let source_cm = format!("{name}-source");
    objects.push(Object::from_typed(&ConfigMap {
        metadata: meta(source_cm.clone(), labels.clone()),
        data: Some(data),
        ..Default::default()
    }));

    let (image, image_ready) = match &feed.spec.image {
        Some(image) => (image.clone(), true),
        None => {
            let image = format!("{}/{}/{}:{}", settings.registry, ns, name, hash);
            objects.push(build_job(
                feed, &hash, &image, &source_cm, settings, &meta, &labels,
            ));
            (image, inputs.build_succeeded)
        }
    };
    let url = format!(
        "{}/feeds/{}/{}",
        settings.gateway_url.trim_end_matches('/'),
        inputs.workspace,
        name
    );
    let mut keep_names = Vec::new();
    let mut serving_name = None;
    if image_ready {
        // Pin the pods to the digest the build pushed, when the build told us.
        let pinned = match &inputs.image_digest {
            Some(d) if feed.spec.image.is_none() => format!("{image}@{d}"),
            _ => image.clone(),
        };
        let live = Track {
            name: serving_object_name(&name, &revision),
            track: "live",
            revision: &revision,
            image: &pinned,
        };
        serving_name = Some(live.name.clone());
        objects.extend(serving(feed, inputs, &live, &meta, &labels));
    }
    if let Some(c) = &feed.spec.canary {
        if image_ready {
            let canary = Track {
                name: format!("{name}-canary"),
                track: "canary",
                revision: &c.revision,
                image: &c.image,
            };
            let mut objs = serving(feed, inputs, &canary, &meta, &labels);
            // The gateway reads the split from the canary Service.
            if let Some(svc) = objs.iter_mut().find(|o| o.resource.kind == "Service") {
                svc.body["metadata"]["annotations"] =
                    serde_json::json!({ "sluice.dev/weight": c.weight.to_string() });
            }
            objects.extend(objs);
        } else {
            // A canary the spec still has keeps serving while the next live revision builds.
            keep_names.push(format!("{name}-canary"));
        }
    }
    Ok(FeedPlan {
        revision,
        image,
        image_ready,
        url,
        objects,
        serving_name,
        keep_names,
    })
}

/// The name of a live revision's Deployment, Service and autoscaler. Each revision has its
/// own, so the gateway moves calls from one to the next at once (a rolling update of one
/// Deployment behind one Service would mix both revisions' pods for its duration), and a
/// revision is told apart from its feed's other objects (`-build-…`, `-canary`,
/// `-source`) by the `r`/`h` that starts its suffix. A short lowercase alphanumeric
/// revision (a store number, a content hash) is written out: `sales-r7`; any other is
/// hashed: `sales-h1a2b3c4d`. Feed names are at most 50 characters, so this fits the 63 a
/// Service name may have.
pub fn serving_object_name(feed: &str, revision: &str) -> String {
    let plain = revision
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if plain && !revision.is_empty() && feed.len() + 2 + revision.len() <= 63 {
        format!("{feed}-r{revision}")
    } else {
        let h = hex::encode(Sha256::digest(revision.as_bytes()));
        format!("{feed}-h{}", &h[..8])
    }
}

struct Track<'a> {
    name: String,
    track: &'a str,
    revision: &'a str,
    image: &'a str,
}

fn quantities(cm: &Option<CpuMemory>) -> Option<BTreeMap<String, Quantity>> {
    let cm = cm.as_ref()?;
    let mut out = BTreeMap::new();
    if let Some(cpu) = &cm.cpu {
        out.insert("cpu".to_string(), Quantity(cpu.clone()));
    }
    if let Some(mem) = &cm.memory {
        out.insert("memory".to_string(), Quantity(mem.clone()));
    }
    Some(out)
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(path != "/tmp" && path != "/work"),
        ..Default::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn serving(
    feed: &Feed,
    inputs: &FeedInputs,
    t: &Track,
    meta: &dyn Fn(String, BTreeMap<String, String>) -> ObjectMeta,
    labels: &BTreeMap<String, String>,
) -> Vec<Object> {
    let name = t.name.clone();
    let mut selector = BTreeMap::from([
        (LABEL_FEED.to_string(), feed.name_any()),
        (LABEL_TRACK.to_string(), t.track.to_string()),
    ]);
    if t.track == "live" {
        // Each live revision's Deployment and Service select only its own pods.
        selector.insert(LABEL_REVISION.to_string(), t.revision.to_string());
    }
    let mut pod_labels = labels.clone();
    pod_labels.extend(selector.clone());
    pod_labels.insert(LABEL_ROLE.into(), "feed".into());
    pod_labels.insert(LABEL_REVISION.into(), t.revision.to_string());

    let mut volumes = vec![empty_dir("tmp")];
    let mut mounts = vec![mount("tmp", "/tmp")];
    for ds in &feed.spec.data_sources {
        volumes.push(Volume {
            name: format!("ds-{ds}"),
            secret: Some(SecretVolumeSource {
                secret_name: Some(data_source_secret_name(ds)),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount(
            &format!("ds-{ds}"),
            &format!("/var/run/sluice/sources/{ds}"),
        ));
    }
    let mut envs = vec![
        env("SLUICE_FEED", &function_of(feed)),
        env("SLUICE_WORKSPACE", &inputs.workspace),
        env("SLUICE_REVISION", t.revision),
        env("SLUICE_SOURCES_DIR", "/var/run/sluice/sources"),
    ];
    if let Some(cache) = &feed.spec.cache {
        envs.push(env("SLUICE_CACHE", cache));
    }
    let probe = |path: &str, period| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        ..Default::default()
    };
    let resources = feed.spec.resources.clone().unwrap_or_default();
    let container = Container {
        name: "agent".into(),
        image: Some(t.image.to_string()),
        // Named in full, not left to the image: a feed image's entrypoint is already
        // `sluice agent` (so `agent` as an argument would be refused), an image given in
        // `spec.image` may have another.
        command: Some(vec!["sluice".into(), "agent".into()]),
        args: Some(vec![
            "--listen".into(),
            format!("0.0.0.0:{AGENT_PORT}"),
            "--metrics-listen".into(),
            format!("0.0.0.0:{METRICS_PORT}"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: AGENT_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                ..Default::default()
            },
        ]),
        env: Some(envs),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: Some(ResourceRequirements {
            requests: quantities(&resources.requests),
            limits: quantities(&resources.limits),
            ..Default::default()
        }),
        security_context: Some(restricted_container()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let scaling = &feed.spec.scaling;
    // Scale to zero starts from one pod (minReplicas 0 is the operator's idle stop).
    let autoscaled = t.track == "live" && scaling.max_replicas > scaling.min_replicas.max(1);
    // An autoscaler (or, with scale to zero, the gateway) owns `replicas`; the operator sets
    // it only when the count is fixed, so server-side apply never fights over it.
    let replicas = if t.track == "canary" {
        Some(1)
    } else if autoscaled || scaling.scale_to_zero {
        None
    } else {
        Some(scaling.min_replicas)
    };
    let deployment = Deployment {
        metadata: meta(name.clone(), pod_labels.clone()),
        spec: Some(DeploymentSpec {
            replicas,
            // A revision whose pods cannot become ready is reported (`RolloutStalled`) after
            // this long, while the previous revision keeps serving.
            progress_deadline_seconds: Some(300),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    service_account_name: Some(FEED_SERVICE_ACCOUNT.into()),
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod()),
                    // The agent drains calls in flight on SIGTERM.
                    termination_grace_period_seconds: Some(30),
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = Service {
        metadata: meta(name.clone(), labels_with(labels, &selector)),
        spec: Some(ServiceSpec {
            selector: Some(std::mem::take(&mut selector)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut out = vec![
        Object::from_typed(&deployment),
        Object::from_typed(&service),
    ];
    // With scale to zero the autoscaler works between 1 and max: at 0 replicas (the
    // operator's doing when idle) Kubernetes suspends it, and the gateway's wake-up to 1
    // hands the feed back to it.
    if autoscaled {
        out.push(Object::from_typed(&HorizontalPodAutoscaler {
            metadata: meta(name.clone(), labels.clone()),
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: name.clone(),
                },
                min_replicas: Some(scaling.min_replicas.max(1)),
                max_replicas: scaling.max_replicas,
                // Calls in flight per pod, exported by the agent and served to the HPA by a
                // metrics adapter (prometheus-adapter) as a pods metric.
                metrics: Some(vec![MetricSpec {
                    type_: "Pods".into(),
                    pods: Some(PodsMetricSource {
                        metric: MetricIdentifier {
                            name: "sluice_agent_calls_in_flight".into(),
                            selector: None,
                        },
                        target: MetricTarget {
                            type_: "AverageValue".into(),
                            average_value: Some(Quantity(scaling.target_concurrency.to_string())),
                            ..Default::default()
                        },
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }));
    }
    out
}

fn labels_with(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = a.clone();
    out.extend(b.clone());
    out
}

/// The Dockerfile of a Kaniko build: the same image `sluice build` makes. The lock is copied
/// and installed before the code, so Kaniko's layer cache reuses the dependency layer across
/// code-only revisions. The base runtime image carries uv.
pub fn dockerfile(feed: &Feed, settings: &Settings) -> String {
    let base = feed
        .spec
        .runtime_image
        .as_deref()
        .unwrap_or(&settings.runtime_image);
    // Exec-form RUNs need no shell in the base image.
    let run = |argv: &[&str]| format!("RUN {}\n", serde_json::Value::from(argv.to_vec()));
    // The base runs as 65532; installing into the image needs root until the last USER.
    let mut d = format!("FROM {base}\nUSER root\n");
    if feed.spec.lock.is_some() {
        // Build arguments are the RUNs' environment, not the image's: uv trusts the image's
        // certificate store (as `sluice build` has it do).
        // One per line: not every builder takes several names in one ARG.
        d.push_str("ARG UV_SYSTEM_CERTS=true\nARG UV_NATIVE_TLS=true\n");
        d.push_str("COPY requirements.lock /tmp/requirements.lock\n");
        d.push_str(&run(&[
            "uv",
            "pip",
            "install",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--no-compile",
            "--target",
            "/opt/sluice/deps",
            "-r",
            "/tmp/requirements.lock",
        ]));
    }
    // The agent's workers run with a cleared environment: a .pth puts the deps on their path.
    d.push_str(&run(&[
        "python3",
        "-c",
        "import site; open(site.getsitepackages()[0] + '/sluice-deps.pth', 'w').write('/opt/sluice/deps\\n')",
    ]));
    d.push_str("COPY feed.py /opt/sluice/feed/feed.py\n");
    d.push_str(&format!(
        "ENV PYTHONPATH=/opt/sluice/deps SLUICE_FEED_MODULE=/opt/sluice/feed/feed.py SLUICE_FEED={}\n",
        function_of(feed)
    ));
    d.push_str("USER 65532:65532\nWORKDIR /opt/sluice/feed\nEXPOSE 8080\nENTRYPOINT [\"sluice\", \"agent\"]\n");
    d
}

/// The Kaniko executor's container: root (Kaniko unpacks the base image onto its own root
/// filesystem), no privilege escalation, only the capabilities unpacking needs.
fn kaniko_container(kaniko: &str, image: &str, settings: &Settings) -> (Container, Vec<Volume>) {
    let cache = format!("{}/cache", settings.registry);
    let mut volumes = vec![];
    let mut mounts = vec![VolumeMount {
        name: "src".into(),
        mount_path: "/workspace".into(),
        read_only: Some(true),
        ..Default::default()
    }];
    if settings.registry_secret.is_some() {
        volumes.push(registry_volume());
        mounts.push(mount("registry", "/kaniko/.docker"));
    }
    let container = Container {
        name: "build".into(),
        image: Some(kaniko.into()),
        args: Some(vec![
            "--context=dir:///workspace".into(),
            "--dockerfile=/workspace/Dockerfile".into(),
            format!("--destination={image}"),
            "--digest-file=/dev/termination-log".into(),
            "--reproducible".into(),
            "--cache=true".into(),
            format!("--cache-repo={cache}"),
        ]),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(
                    ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"]
                        .map(String::from)
                        .to_vec(),
                ),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    (container, volumes)
}

fn registry_volume() -> Volume {
    Volume {
        name: "registry".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(REGISTRY_SECRET.into()),
            items: Some(vec![KeyToPath {
                key: ".dockerconfigjson".into(),
                path: "config.json".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn build_job(
    feed: &Feed,
    hash: &str,
    image: &str,
    source_cm: &str,
    settings: &Settings,
    meta: &dyn Fn(String, BTreeMap<String, String>) -> ObjectMeta,
    labels: &BTreeMap<String, String>,
) -> Object {
    let mut pod_labels = labels.clone();
    pod_labels.insert(LABEL_ROLE.into(), "builder".into());
    pod_labels.insert(LABEL_REVISION.into(), hash.into());
    let base = feed
        .spec
        .runtime_image
        .clone()
        .unwrap_or_else(|| settings.runtime_image.clone());
    let mut args = vec![
        "build".to_string(),
        "--source".into(),
        "/src/feed.py".into(),
        "--base".into(),
        base,
        "--image".into(),
        image.into(),
        "--feed".into(),
        function_of(feed),
        "--work-dir".into(),
        "/work".into(),
        // The operator reads the pushed digest back from the pod's termination message.
        "--digest-file".into(),
        "/dev/termination-log".into(),
    ];
    if feed.spec.lock.is_some() {
        args.extend(["--lock".into(), "/src/requirements.lock".into()]);
    }
    let mut volumes = vec![
        Volume {
            name: "src".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: source_cm.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        empty_dir("work"),
        empty_dir("tmp"),
    ];
    let mut mounts = vec![
        mount("src", "/src"),
        mount("work", "/work"),
        mount("tmp", "/tmp"),
    ];
    let mut envs = vec![env("HOME", "/tmp")];
    if settings.registry_secret.is_some() {
        volumes.push(registry_volume());
        mounts.push(mount("registry", "/var/run/sluice/registry"));
        envs.push(env("DOCKER_CONFIG", "/var/run/sluice/registry"));
    }
    let mut container = Container {
        name: "build".into(),
        image: Some(settings.builder_image.clone()),
        args: Some(args),
        env: Some(envs),
        security_context: Some(restricted_container()),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let mut pod_security = restricted_pod();
    if let Some(kaniko) = &settings.kaniko_image {
        let (c, extra) = kaniko_container(kaniko, image, settings);
        container = c;
        volumes.truncate(1);
        volumes.extend(extra);
        pod_security = PodSecurityContext {
            seccomp_profile: pod_security.seccomp_profile,
            ..Default::default()
        };
    }
    Object::from_typed(&Job {
        metadata: meta(build_job_name(&feed.name_any(), hash), pod_labels.clone()),
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            active_deadline_seconds: Some(1800),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(BUILDER_SERVICE_ACCOUNT.into()),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}
