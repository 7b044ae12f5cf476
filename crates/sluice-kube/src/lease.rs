//! Leader election through a `coordination.k8s.io/v1` Lease, so that several operator replicas
//! can run and exactly one reconciles. The decision is a pure function of the Lease as read
//! ([`decide`]); the write uses the Lease's resourceVersion, so two candidates racing for an
//! expired Lease cannot both win (the loser gets 409 Conflict and waits).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};

/// What a candidate does with the Lease it read.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// No Lease yet: create it.
    Create,
    /// Ours: renew it.
    Renew,
    /// Someone else's and expired: take it over.
    Take,
    /// Someone else's and alive.
    Wait { holder: String },
}

pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
    let alive = match &spec.renew_time {
        Some(MicroTime(t)) => *t + duration > now,
        None => false,
    };
    if alive && !holder.is_empty() {
        Decision::Wait { holder }
    } else {
        Decision::Take
    }
}

/// One candidate for one Lease.
pub struct LeaseLock {
    pub api: Api<Lease>,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl LeaseLock {
    /// Try to hold the Lease for another `duration`. `Ok(true)` when we hold it now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let old = current
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default();
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            renew_time: Some(MicroTime(now)),
            acquire_time: match decision {
                Decision::Renew => old.acquire_time.clone(),
                _ => Some(MicroTime(now)),
            },
            lease_transitions: Some(
                old.lease_transitions.unwrap_or(0) + i32::from(decision == Decision::Take),
            ),
            ..Default::default()
        };
        let result = match (&decision, current) {
            (Decision::Wait { .. }, _) => return Ok(false),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (_, Some(mut lease)) => {
                lease.spec = Some(spec);
                // resourceVersion stays set: the write fails if anyone wrote in between.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (_, None) => unreachable!("Renew and Take are decided on an existing Lease"),
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_secs_ago: i64) -> LeaseSpec {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(decide(Some(&spec("a", 100)), "a", now), Decision::Renew);
        assert_eq!(
            decide(Some(&spec("b", 5)), "a", now),
            Decision::Wait { holder: "b".into() }
        );
        assert_eq!(decide(Some(&spec("b", 16)), "a", now), Decision::Take);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", now),
            Decision::Take
        );
    }
}
