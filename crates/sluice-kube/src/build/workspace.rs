//! A Workspace becomes: its Namespace (Pod Security `restricted` enforced), a ResourceQuota, a
//! LimitRange, ServiceAccounts for feed pods and build Jobs, RoleBindings for its members, copies
//! of the Secrets of the data sources granted to it (and of the registry push Secret), and
//! NetworkPolicies: default deny, ingress to feed pods only from the gateway, egress only to DNS
//! and the granted data sources (build pods may also reach the registry and package index).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
    Secret, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{LABEL_ROLE, Object, Settings, base_labels, controller_ref};
use crate::crd::{CpuMemory, DataSource, Workspace};

/// Name of the Secret copy of data source `ds` in a workspace namespace.
pub fn data_source_secret_name(ds: &str) -> String {
    format!("sluice-ds-{ds}")
}

/// Name of the registry push Secret copy in a workspace namespace.
pub const REGISTRY_SECRET: &str = "sluice-registry";
/// ServiceAccount of feed pods (no API token mounted).
pub const FEED_SERVICE_ACCOUNT: &str = "sluice-feed";
/// ServiceAccount of build Jobs.
pub const BUILDER_SERVICE_ACCOUNT: &str = "sluice-builder";

/// The namespace of a workspace.
pub fn namespace_of(ws: &Workspace) -> String {
    ws.spec
        .namespace
        .clone()
        .unwrap_or_else(|| default_namespace(&ws.name_any()))
}

/// The namespace of a workspace without `spec.namespace` (or without a Workspace object).
pub fn default_namespace(ws: &str) -> String {
    format!("sluice-{ws}")
}

/// Whether `ds` grants workspace `ws`.
pub fn grants(ds: &DataSource, ws: &str) -> bool {
    ds.spec.workspaces.iter().any(|w| w == ws || w == "*")
}

/// What was read from the cluster for a workspace: the data sources granted to it with their
/// Secrets, and the registry push Secret.
#[derive(Clone, Debug, Default)]
pub struct WorkspaceInputs {
    pub data_sources: Vec<(DataSource, Option<Secret>)>,
    pub registry_secret: Option<Secret>,
}

/// Every object of a workspace, in apply order (the Namespace first).
pub fn build(ws: &Workspace, inputs: &WorkspaceInputs, settings: &Settings) -> Vec<Object> {
    let name = ws.name_any();
    let ns = namespace_of(ws);
    let owner = controller_ref(ws);
    let meta = |object_name: &str| ObjectMeta {
        name: Some(object_name.to_string()),
        namespace: Some(ns.clone()),
        labels: Some(base_labels(&name)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };
    let mut out = Vec::new();

    let mut ns_labels = base_labels(&name);
    let enforce = if settings.kaniko_image.is_some() {
        "baseline"
    } else {
        "restricted"
    };
    ns_labels.insert("pod-security.kubernetes.io/enforce".into(), enforce.into());
    ns_labels.insert(
        "pod-security.kubernetes.io/warn".into(),
        "restricted".into(),
    );
    out.push(Object::from_typed(&Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            labels: Some(ns_labels),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        ..Default::default()
    }));

    if let Some(q) = &ws.spec.quota {
        let mut hard = BTreeMap::new();
        if let Some(cpu) = &q.cpu {
            hard.insert("requests.cpu".to_string(), Quantity(cpu.clone()));
        }
        if let Some(mem) = &q.memory {
            hard.insert("requests.memory".to_string(), Quantity(mem.clone()));
        }
        if let Some(pods) = q.pods {
            hard.insert("pods".to_string(), Quantity(pods.to_string()));
        }
        out.push(Object::from_typed(&ResourceQuota {
            metadata: meta("sluice-quota"),
            spec: Some(ResourceQuotaSpec {
                hard: Some(hard),
                ..Default::default()
            }),
            ..Default::default()
        }));
    }

    let defaults = ws.spec.default_resources.clone().unwrap_or_default();
    let list = |cm: Option<CpuMemory>, cpu: &str, mem: &str| {
        let cm = cm.unwrap_or_default();
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cm.cpu.unwrap_or(cpu.into()))),
            (
                "memory".to_string(),
                Quantity(cm.memory.unwrap_or(mem.into())),
            ),
        ])
    };
    out.push(Object::from_typed(&LimitRange {
        metadata: meta("sluice-limits"),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default_request: Some(list(defaults.requests, "100m", "256Mi")),
                default: Some(list(defaults.limits, "1", "1Gi")),
                ..Default::default()
            }],
        }),
    }));

    for sa in [FEED_SERVICE_ACCOUNT, BUILDER_SERVICE_ACCOUNT] {
        out.push(Object::from_typed(&ServiceAccount {
            metadata: meta(sa),
            automount_service_account_token: Some(false),
            ..Default::default()
        }));
    }

    for role in ["editor", "viewer"] {
        let subjects: Vec<Subject> = ws
            .spec
            .members
            .iter()
            .filter(|m| m.role == role)
            .map(|m| subject(&m.kind, &m.name))
            .collect();
        out.push(Object::from_typed(&RoleBinding {
            metadata: meta(&format!("sluice-{role}s")),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: format!("sluice-{role}"),
            },
            subjects: Some(subjects),
        }));
    }

    let granted: Vec<&(DataSource, Option<Secret>)> = inputs
        .data_sources
        .iter()
        .filter(|(ds, _)| grants(ds, &name))
        .collect();
    for (ds, secret) in &granted {
        if let Some(secret) = secret {
            out.push(copy_secret(
                secret,
                meta(&data_source_secret_name(&ds.name_any())),
            ));
        }
    }
    if let Some(secret) = &inputs.registry_secret {
        out.push(copy_secret(secret, meta(REGISTRY_SECRET)));
    }

    out.extend(network_policies(ws, &granted, settings, &meta));
    out
}

fn subject(kind: &str, name: &str) -> Subject {
    if kind == "ServiceAccount" {
        let (ns, sa) = name.split_once(':').unwrap_or(("default", name));
        Subject {
            kind: kind.into(),
            name: sa.into(),
            namespace: Some(ns.into()),
            ..Default::default()
        }
    } else {
        Subject {
            kind: kind.into(),
            name: name.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }
    }
}

fn copy_secret(secret: &Secret, metadata: ObjectMeta) -> Object {
    Object::from_typed(&Secret {
        metadata,
        type_: secret.type_.clone(),
        data: secret.data.clone(),
        string_data: secret.string_data.clone(),
        ..Default::default()
    })
}

fn tcp(port: Option<i32>) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some("TCP".into()),
        port: port.map(IntOrString::Int),
        ..Default::default()
    }
}

fn namespace_selector(ns: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            ns.to_string(),
        )])),
        ..Default::default()
    }
}

fn network_policies(
    ws: &Workspace,
    granted: &[&(DataSource, Option<Secret>)],
    settings: &Settings,
    meta: &dyn Fn(&str) -> ObjectMeta,
) -> Vec<Object> {
    let _ = ws;
    let everything = LabelSelector::default();
    let feeds = LabelSelector {
        match_labels: Some(BTreeMap::from([(
            LABEL_ROLE.to_string(),
            "feed".to_string(),
        )])),
        ..Default::default()
    };
    let builders = LabelSelector {
        match_labels: Some(BTreeMap::from([(
            LABEL_ROLE.to_string(),
            "builder".to_string(),
        )])),
        ..Default::default()
    };
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(namespace_selector("kube-system")),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "k8s-app".to_string(),
                    "kube-dns".to_string(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![
            NetworkPolicyPort {
                protocol: Some("UDP".into()),
                port: Some(IntOrString::Int(53)),
                ..Default::default()
            },
            tcp(Some(53)),
        ]),
    };
    let policy = |name: &str, selector: LabelSelector, types: &[&str], ingress, egress| {
        Object::from_typed(&NetworkPolicy {
            metadata: meta(name),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(selector),
                policy_types: Some(types.iter().map(|t| t.to_string()).collect()),
                ingress,
                egress,
            }),
        })
    };

    // Prometheus may scrape the agents' metrics-only port, never reach their calls.
    let metrics = settings.metrics_namespace.as_ref().map(|ns| {
        policy(
            "sluice-metrics-ingress",
            feeds.clone(),
            &["Ingress"],
            Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(namespace_selector(ns)),
                    ..Default::default()
                }]),
                ports: Some(vec![tcp(Some(super::METRICS_PORT))]),
            }]),
            None,
        )
    });

    let mut egress = vec![dns.clone()];
    for (ds, _) in granted {
        let Some(e) = &ds.spec.egress else { continue };
        let mut to: Vec<NetworkPolicyPeer> = e
            .cidrs
            .iter()
            .map(|cidr| NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: cidr.clone(),
                    except: None,
                }),
                ..Default::default()
            })
            .collect();
        if let Some(ns) = &e.namespace {
            to.push(NetworkPolicyPeer {
                namespace_selector: Some(namespace_selector(ns)),
                pod_selector: Some(LabelSelector {
                    match_labels: (!e.pod_labels.is_empty()).then(|| e.pod_labels.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let ports = (!e.ports.is_empty()).then(|| e.ports.iter().map(|p| tcp(Some(*p))).collect());
        egress.push(NetworkPolicyEgressRule {
            to: Some(to),
            ports,
        });
    }

    [
        policy(
            "default-deny",
            everything,
            &["Ingress", "Egress"],
            None,
            None,
        ),
        policy(
            "sluice-gateway-ingress",
            feeds.clone(),
            &["Ingress"],
            Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(namespace_selector(&settings.gateway_namespace)),
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(settings.gateway_labels.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ports: Some(vec![tcp(Some(super::AGENT_PORT))]),
            }]),
            None,
        ),
        policy("sluice-feed-egress", feeds, &["Egress"], None, Some(egress)),
        // Build Jobs fetch wheels from the package index and push to the registry: DNS plus
        // HTTPS and the registry's usual ports anywhere, nothing else.
        policy(
            "sluice-builder-egress",
            builders,
            &["Egress"],
            None,
            Some(vec![
                dns,
                NetworkPolicyEgressRule {
                    to: None,
                    ports: Some(vec![tcp(Some(443)), tcp(Some(80)), tcp(Some(5000))]),
                },
            ]),
        ),
    ]
    .into_iter()
    .chain(metrics)
    .collect()
}
