//! Pure build steps: from a custom resource (plus what was read for it) to the Kubernetes
//! objects the operator applies. Nothing here does IO; every function is tested from YAML
//! fixtures in `tests/build.rs`.
//!
//! Objects are built with k8s-openapi's typed structs, then erased into [`Object`] (API
//! resource + name + JSON body) so the apply step can server-side-apply any kind the same way.

pub mod feed;
pub mod workspace;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::core::ApiResource;
use serde::Serialize;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "sluice-operator";
/// Label on everything the operator creates; the orphan sweep selects on it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "sluice-operator");
pub const LABEL_WORKSPACE: &str = "sluice.dev/workspace";
pub const LABEL_FEED: &str = "sluice.dev/feed";
pub const LABEL_REVISION: &str = "sluice.dev/revision";
pub const LABEL_TRACK: &str = "sluice.dev/track";
pub const LABEL_ROLE: &str = "sluice.dev/role";
/// The port the in-pod agent listens on.
pub const AGENT_PORT: i32 = 8080;
/// The agent's metrics-only port (`sluice agent --metrics-listen`).
pub const METRICS_PORT: i32 = 9464;
/// The non-root user of every Sluice container (distroless' `nonroot`).
pub const RUN_AS_USER: i64 = 65532;

/// The operator's settings that shape what it builds (parsed once from flags in `main`).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Namespace of the Sluice server (the gateway); the only source of ingress to feed pods.
    pub gateway_namespace: String,
    /// Pod labels of the gateway.
    pub gateway_labels: BTreeMap<String, String>,
    /// Public base URL of the gateway; a feed's URL is `<base>/feeds/<workspace>/<feed>`.
    pub gateway_url: String,
    /// Registry repository prefix that feed images are pushed under, e.g. `registry.example.com/sluice`.
    pub registry: String,
    /// A `kubernetes.io/dockerconfigjson` Secret (in the operator's namespace) with push credentials.
    pub registry_secret: Option<String>,
    /// The default base runtime image.
    pub runtime_image: String,
    /// The image that runs `sluice build` in build Jobs (the sluice image itself).
    pub builder_image: String,
    /// Build with this Kaniko executor image and a generated Dockerfile instead of the
    /// daemonless `sluice build`, for clusters that mandate Kaniko. Kaniko runs as root, so
    /// workspace namespaces then enforce Pod Security `baseline` (and warn on `restricted`);
    /// feed pods themselves stay restricted.
    pub kaniko_image: Option<String>,
    /// Namespace of the Prometheus that scrapes feed pods' metrics port ([`METRICS_PORT`]):
    /// the calls-in-flight metric their autoscalers read comes from there. `None`: no
    /// namespace may reach it.
    pub metrics_namespace: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            gateway_namespace: "sluice-system".into(),
            gateway_labels: BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "sluice-server".to_string(),
            )]),
            gateway_url: "http://sluice.sluice-system.svc".into(),
            registry: "registry.sluice-system.svc:5000/sluice".into(),
            registry_secret: None,
            runtime_image: "ghcr.io/sluice-dev/runtime:py3.12".into(),
            builder_image: "ghcr.io/sluice-dev/sluice:latest".into(),
            kaniko_image: None,
            metrics_namespace: None,
        }
    }
}

/// One object to apply: which API it lives in, where, and its full desired body.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Object {
    #[serde(skip)]
    pub resource: ApiResource,
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub namespace: Option<String>,
    #[serde(flatten)]
    pub body: serde_json::Value,
}

impl Object {
    /// Erase a typed object (apiVersion and kind are filled in from its type).
    pub fn from_typed<K>(k: &K) -> Object
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let resource = ApiResource::erase::<K>(&());
        let mut body = serde_json::to_value(k).expect("a Kubernetes object serializes");
        body["apiVersion"] = resource.api_version.clone().into();
        body["kind"] = resource.kind.clone().into();
        let meta = k.meta();
        Object {
            resource,
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone(),
            body,
        }
    }

    /// `Kind/namespace/name`, for logs, tests and the orphan sweep.
    pub fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{}/{}", self.resource.kind, ns, self.name),
            None => format!("{}/{}", self.resource.kind, self.name),
        }
    }
}

/// The owner reference that makes `owner` the controller of what it creates.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    owner
        .controller_owner_ref(&())
        .expect("an object read from the API server has a name and uid")
}

/// The labels every object of a workspace carries.
pub fn base_labels(workspace: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (
            "app.kubernetes.io/part-of".to_string(),
            "sluice".to_string(),
        ),
        (LABEL_WORKSPACE.to_string(), workspace.to_string()),
    ])
}

/// Pod-level settings of the `restricted` Pod Security Standard.
pub fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        fs_group: Some(RUN_AS_USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Container-level settings of the `restricted` Pod Security Standard, with a read-only root.
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
