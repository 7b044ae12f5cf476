//! The custom resources of group `sluice.dev/v1alpha1`: `Workspace`, `Feed` and `DataSource`.
//!
//! These types are the contract with GitOps users and with `sluice server` (which writes Feed
//! objects on deploy). The CRD YAML under `deploy/crds/` is generated from them by
//! [`crate::crdgen`]; a test fails when the committed YAML drifts from this file.
//!
//! Validation that the API server can do on its own lives here as CEL rules
//! (`x-kubernetes-validations`), so a bad object is refused by `kubectl apply` instead of
//! failing later in the operator. Every list and string a rule walks has a maximum size, so
//! the API server's CEL cost estimate stays within its budget (it refuses the CRD otherwise).

// Several `printcolumn(...)` share `type_ = "string"`, which clippy mistakes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A team's space. Becomes one namespace with a quota, default limits, RBAC for its members
/// and a default-deny network policy.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Workspace",
    plural = "workspaces",
    shortname = "sws",
    status = "WorkspaceStatus",
    doc = "A Sluice workspace: one namespace with its quota, limits, members and network policy.",
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 56").message("a workspace name is at most 56 characters (its namespace is sluice-<name>)"),
)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// The namespace to create; default `sluice-<workspace name>`. Cannot change later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("the namespace of a workspace cannot change"))]
    pub namespace: Option<String>,
    /// Hard limits for everything in the workspace (a ResourceQuota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<WorkspaceQuota>,
    /// Default requests and limits for containers that name none (a LimitRange).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_resources: Option<Resources>,
    /// People and groups, each bound to the `sluice-editor` or `sluice-viewer` ClusterRole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(m, m.role in ['editor', 'viewer'])").message("a member's role is editor or viewer"))]
    #[schemars(length(max = 500))]
    pub members: Vec<Member>,
}

/// Hard limits of a workspace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceQuota {
    /// Sum of CPU requests, e.g. `4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Sum of memory requests, e.g. `8Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Number of pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("pods cannot be negative"))]
    pub pods: Option<i32>,
}

/// A member of a workspace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// `User`, `Group` or `ServiceAccount` (as in a RoleBinding subject).
    #[x_kube(validation = Rule::new("self in ['User', 'Group', 'ServiceAccount']").message("kind is User, Group or ServiceAccount"))]
    #[schemars(length(max = 32))]
    pub kind: String,
    /// The user, group or `namespace:serviceaccount` name.
    pub name: String,
    /// `editor` or `viewer`.
    #[schemars(length(max = 32))]
    pub role: String,
}

/// CPU and memory requests and limits, as Kubernetes quantities.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<CpuMemory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<CpuMemory>,
}

/// A CPU and a memory quantity.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpuMemory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// What the operator reports about a workspace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Data sources granted to this workspace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_sources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A Python function published as a live data feed.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Feed",
    plural = "feeds",
    namespaced,
    status = "FeedStatus",
    doc = "A Sluice feed: a Python function served as data, one image per revision.",
    printcolumn(name = "Revision", type_ = "string", json_path = ".status.revision"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 50").message("a feed name is at most 50 characters (it names Deployments and Jobs)"),
)]
#[serde(rename_all = "camelCase")]
pub struct FeedSpec {
    /// The feed module's Python source.
    pub source: FeedSource,
    /// The function to serve; default the Feed's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The dependency lock (uv's `requirements.txt` output, pinned with hashes) of this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// The base runtime image; default the operator's (Python slim plus the sluice agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_image: Option<String>,
    /// A ready-made image for this revision: no build, the operator deploys it as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The live revision's name as the control plane numbers it (e.g. `7`); default the content hash.
    /// It labels the revision's pods, so it is a label value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$')").message("revision is 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub scaling: Scaling,
    /// How long results are cached, e.g. `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(ms|s|m|h)$')").message("cache is a duration such as 30s, 5m or 1h"))]
    #[schemars(length(max = 16))]
    pub cache: Option<String>,
    /// Names of the DataSources the feed uses; each must grant this workspace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_sources: Vec<String>,
    /// Another revision that gets a share of the calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

/// Where a feed's code is: inline, or in a ConfigMap of the feed's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.inline) != has(self.configMapRef)").message("source is either inline or configMapRef, not both and not neither"))]
pub struct FeedSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
}

/// One key of a ConfigMap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    pub name: String,
    /// Default `feed.py`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// How many pods serve a feed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxReplicas >= self.minReplicas").message("maxReplicas must be at least minReplicas"))]
#[x_kube(validation = Rule::new("!self.scaleToZero || self.minReplicas == 0").message("scaleToZero needs minReplicas 0"))]
#[x_kube(validation = Rule::new("self.scaleToZero || self.minReplicas >= 1").message("minReplicas 0 needs scaleToZero: true"))]
pub struct Scaling {
    #[serde(default = "one")]
    pub min_replicas: i32,
    #[serde(default = "one")]
    pub max_replicas: i32,
    /// Calls in flight per pod the autoscaler aims at.
    #[serde(default = "default_concurrency")]
    #[x_kube(validation = Rule::new("self >= 1").message("targetConcurrency is at least 1"))]
    pub target_concurrency: i32,
    /// Scale the feed to zero pods once no call came for `idleTimeout` (the operator does,
    /// from the last call the gateways record on its Deployment); the gateway starts a pod
    /// on the next call and holds that call until the pod is ready.
    #[serde(default)]
    pub scale_to_zero: bool,
    /// With `scaleToZero`: how long without calls before the pods stop; default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(s|m|h)$')").message("idleTimeout is a duration such as 90s, 5m or 1h"))]
    #[schemars(length(max = 16))]
    pub idle_timeout: Option<String>,
}

fn one() -> i32 {
    1
}
fn default_concurrency() -> i32 {
    8
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            min_replicas: 1,
            max_replicas: 1,
            target_concurrency: 8,
            scale_to_zero: false,
            idle_timeout: None,
        }
    }
}

/// A second revision served beside the live one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    /// The canary revision's name.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$')").message("revision is 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    pub revision: String,
    /// Its image (canaries are deployed from built images).
    pub image: String,
    /// Percent of calls the gateway sends to the canary.
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("weight is a percentage, 0 to 100"))]
    pub weight: i32,
}

/// What the operator reports about a feed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FeedStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The revision being served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The Service (and Deployment) of that revision: what the gateway calls. Each revision
    /// has its own, so calls move from one revision to the next in one status write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The revision served before the last switch, kept running until `until` so gateways
    /// that have not seen the switch yet still reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<Draining>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Where BI tools call the feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// `Built`, `Deployed` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A revision that no longer takes new calls from up-to-date gateways.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Draining {
    pub revision: String,
    pub service: String,
    /// RFC 3339; the operator deletes the revision's Deployment and Service after it.
    pub until: String,
}

/// A named connection whose credentials live in a Secret, granted to workspaces.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "DataSource",
    plural = "datasources",
    shortname = "sds",
    status = "DataSourceStatus",
    doc = "A Sluice data source: a connection whose credentials stay in a Secret, granted to workspaces.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Workspaces", type_ = "string", json_path = ".spec.workspaces"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceSpec {
    /// `postgres`, `mysql`, `sqlite`, `duckdb` or `http`.
    #[serde(rename = "type")]
    #[x_kube(validation = Rule::new("self in ['postgres', 'mysql', 'sqlite', 'duckdb', 'http']").message("type is postgres, mysql, sqlite, duckdb or http"))]
    #[schemars(length(max = 16))]
    pub type_: String,
    /// The Secret with the connection (key `url`, plus whatever the type needs).
    pub secret_ref: SecretRef,
    /// Workspaces that may use this source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<String>,
    /// Where the source is on the network; feed pods may reach exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Egress>,
}

/// A Secret in a given namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub name: String,
    pub namespace: String,
}

/// Network destinations of a data source, for the workspace's NetworkPolicy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.cidrs) > 0 || has(self.namespace)").message("egress names cidrs or an in-cluster namespace"))]
pub struct Egress {
    /// IP blocks, e.g. `10.0.12.0/24`.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub cidrs: Vec<String>,
    /// An in-cluster source: its namespace ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// ... and the labels of its pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    /// TCP ports; none means any.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self.all(p, p >= 1 && p <= 65535)").message("ports are 1 to 65535"))]
    #[schemars(length(max = 32))]
    pub ports: Vec<i32>,
}

/// What the operator reports about a data source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A status condition, shaped like `metav1.Condition`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339 time of the last change of `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    pub reason: String,
    #[serde(default)]
    pub message: String,
}
