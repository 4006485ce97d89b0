//! The condition type shared by every mooring resource, kstatus-compatible.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One observation of an aspect of a resource's state, as in `metav1.Condition`.
///
/// Tools such as kstatus, `kubectl wait --for=condition=…` and Argo CD's health checks read the
/// `Ready` (or `Synced`) condition, its `status` and `observedGeneration`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The aspect this condition describes, in CamelCase (for example `Synced`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase word a program can match on (for example `RenderFailed`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// A sentence for people; never contains secret values.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When `status` last changed, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition with no transition time or generation yet (see [`stamp`]).
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) -> Condition {
        Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: None,
            observed_generation: None,
        }
    }
}

impl ConditionStatus {
    /// `True`, `False` or `Unknown`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// Stamps freshly computed `conditions` before they are written: each records `generation`, and
/// keeps the transition time of the condition of its type in `previous` when the status is the
/// same (a condition that did not change did not transition), else takes `now` (RFC 3339).
pub fn stamp(
    conditions: &mut [Condition],
    previous: &[Condition],
    generation: Option<i64>,
    now: &str,
) {
    for condition in conditions {
        condition.observed_generation = generation;
        condition.last_transition_time = previous
            .iter()
            .find(|p| p.type_ == condition.type_ && p.status == condition.status)
            .and_then(|p| p.last_transition_time.clone())
            .or_else(|| Some(now.to_string()));
    }
}

/// The three states of a condition.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    #[default]
    Unknown,
}

/// Condition types and reasons used across resources, so producers and tests share one spelling.
pub mod names {
    /// An Application's desired state was applied at its current revision.
    pub const SYNCED: &str = "Synced";
    /// The object is ready for use (kstatus).
    pub const READY: &str = "Ready";
    /// Fields mooring does not implement were set; the message names them.
    pub const UNSUPPORTED_FIELDS: &str = "UnsupportedFields";
    /// An Application's destination is not this cluster; nothing is applied.
    pub const INVALID_DESTINATION: &str = "InvalidDestination";
    /// Some objects of an Application were not applied because their kind is not served yet
    /// (a CRD neither in the cluster nor in the set); the message names them.
    pub const RESOURCES_DEFERRED: &str = "ResourcesDeferred";
    /// Objects that left Git were not pruned (a guard refused, or pruning is off); the message
    /// says why.
    pub const PRUNE_PENDING: &str = "PrunePending";
    /// A manual change of a managed object was seen; the message names the field manager.
    pub const DRIFT_DETECTED: &str = "DriftDetected";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_keeps_the_transition_time_only_while_the_status_is_the_same() {
        let mut before = vec![
            Condition::new("Ready", ConditionStatus::True, "Synced", "ok"),
            Condition::new("Fetched", ConditionStatus::True, "Fetched", "ok"),
        ];
        stamp(&mut before, &[], Some(1), "2026-01-01T00:00:00Z");
        assert!(before.iter().all(|c| c.last_transition_time.as_deref()
            == Some("2026-01-01T00:00:00Z")
            && c.observed_generation == Some(1)));

        let mut after = vec![
            Condition::new("Ready", ConditionStatus::True, "Synced", "still ok"),
            Condition::new("Fetched", ConditionStatus::False, "NotFound", "gone"),
            Condition::new("New", ConditionStatus::True, "New", "new"),
        ];
        stamp(&mut after, &before, Some(2), "2026-01-02T00:00:00Z");
        let times: Vec<_> = after
            .iter()
            .map(|c| c.last_transition_time.as_deref().unwrap_or_default())
            .collect();
        assert_eq!(
            times,
            [
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z",
                "2026-01-02T00:00:00Z"
            ]
        );
        assert!(after.iter().all(|c| c.observed_generation == Some(2)));
    }
}
