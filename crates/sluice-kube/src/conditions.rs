//! Status conditions: setting one keeps its `lastTransitionTime` unless its status changed,
//! so a steady object's status patch is the same on every reconcile.

use crate::crd::Condition;

/// A condition to set, before times are filled in.
pub fn condition(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        observed_generation: None,
        last_transition_time: None,
        reason: reason.into(),
        message: message.into(),
    }
}

/// Merge `new` conditions into `old` ones: `observedGeneration` set on all, the transition
/// time kept from `old` when the status did not change, else `now`.
pub fn merge(
    old: &[Condition],
    new: Vec<Condition>,
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            c.observed_generation = generation;
            c.last_transition_time = match old.iter().find(|o| o.type_ == c.type_) {
                Some(o) if o.status == c.status => o.last_transition_time.clone(),
                _ => Some(now.to_string()),
            };
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = merge(
            &[],
            vec![condition("Ready", false, "Starting", "")],
            Some(1),
            "t1",
        );
        assert_eq!(first[0].last_transition_time.as_deref(), Some("t1"));
        let same = merge(
            &first,
            vec![condition("Ready", false, "Starting", "x")],
            Some(2),
            "t2",
        );
        assert_eq!(same[0].last_transition_time.as_deref(), Some("t1"));
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(
            &same,
            vec![condition("Ready", true, "Available", "")],
            Some(2),
            "t3",
        );
        assert_eq!(flipped[0].last_transition_time.as_deref(), Some("t3"));
    }
}
