//! The policy fields of a spec (`creationPolicy`, `deletionPolicy`, `refreshPolicy`,
//! `refreshInterval`), read once per sync with ESO's defaults and combination rules.

use std::time::Duration;

use super::Error;

/// ESO's default `refreshInterval`.
pub(super) const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

/// The parsed policies of a spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Policies {
    pub(super) creation: Creation,
    pub(super) deletion: Deletion,
    pub(super) refresh: Refresh,
    pub(super) interval: Duration,
}

/// `spec.target.creationPolicy`: whether mooring creates the Secret, and owns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Creation {
    Owner,
    Orphan,
    Merge,
    None,
}

/// `spec.target.deletionPolicy`: what happens to the Secret when the remote values are gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Deletion {
    Retain,
    Delete,
    Merge,
}

/// `spec.refreshPolicy`: when the provider is read again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refresh {
    Periodic,
    OnChange,
    CreatedOnce,
}

/// Reads and checks the policy fields, with ESO's defaults and its webhook's combination rules.
pub(super) fn policies(
    spec: &mooring_crds::external_secret::ExternalSecretSpec,
) -> Result<Policies, Error> {
    let target = spec.target.clone().unwrap_or_default();
    let creation = match target.creation_policy.as_deref() {
        None | Some("Owner") => Creation::Owner,
        Some("Orphan") => Creation::Orphan,
        Some("Merge") => Creation::Merge,
        Some("None") => Creation::None,
        Some(other) => {
            return Err(Error::InvalidSpec(format!(
                "spec.target.creationPolicy {other:?} is not one of Owner, Orphan, Merge, None"
            )));
        }
    };
    let deletion = match target.deletion_policy.as_deref() {
        None | Some("Retain") => Deletion::Retain,
        Some("Delete") => Deletion::Delete,
        Some("Merge") => Deletion::Merge,
        Some(other) => {
            return Err(Error::InvalidSpec(format!(
                "spec.target.deletionPolicy {other:?} is not one of Retain, Delete, Merge"
            )));
        }
    };
    if deletion == Deletion::Delete && creation != Creation::Owner {
        return Err(Error::InvalidSpec(
            "spec.target.deletionPolicy Delete requires creationPolicy Owner".into(),
        ));
    }
    if deletion == Deletion::Merge && creation == Creation::None {
        return Err(Error::InvalidSpec(
            "spec.target.deletionPolicy Merge cannot be used with creationPolicy None".into(),
        ));
    }
    let refresh = match spec.refresh_policy.as_deref() {
        None | Some("Periodic") => Refresh::Periodic,
        Some("OnChange") => Refresh::OnChange,
        Some("CreatedOnce") => Refresh::CreatedOnce,
        Some(other) => {
            return Err(Error::InvalidSpec(format!(
                "spec.refreshPolicy {other:?} is not one of Periodic, OnChange, CreatedOnce"
            )));
        }
    };
    let interval = match spec.refresh_interval.as_deref() {
        None => DEFAULT_REFRESH,
        Some(text) => parse_refresh_interval(text).ok_or_else(|| {
            Error::InvalidSpec(format!(
                "spec.refreshInterval {text:?} is not a Go duration such as 1h, 15m or 0s"
            ))
        })?,
    };
    Ok(Policies {
        creation,
        deletion,
        refresh,
        interval,
    })
}

/// A Go duration as ESO accepts it (`1h0m0s` included).
fn parse_refresh_interval(text: &str) -> Option<Duration> {
    if text == "0" || text.chars().all(|c| c == '0' || c.is_ascii_alphabetic()) {
        // "0s", "0m", "0h0m0s": all zero.
        if text.chars().any(|c| c.is_ascii_digit()) {
            return Some(Duration::ZERO);
        }
    }
    crate::duration::parse(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external_secrets::external_secret::test_support::es;

    #[test]
    fn policies_have_eso_defaults_and_combination_rules() {
        let defaults = policies(&es(serde_json::json!({})).spec).unwrap();
        assert_eq!(
            defaults,
            Policies {
                creation: Creation::Owner,
                deletion: Deletion::Retain,
                refresh: Refresh::Periodic,
                interval: DEFAULT_REFRESH,
            }
        );
        let bad = policies(
            &es(serde_json::json!({"target": {"creationPolicy": "Orphan", "deletionPolicy": "Delete"}})).spec,
        );
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("requires creationPolicy Owner")
        );
        let once = policies(&es(serde_json::json!({"refreshInterval": "0s"})).spec).unwrap();
        assert_eq!(once.interval, Duration::ZERO);
        let eso_default =
            policies(&es(serde_json::json!({"refreshInterval": "1h0m0s"})).spec).unwrap();
        assert_eq!(eso_default.interval, Duration::from_secs(3600));
        assert!(policies(&es(serde_json::json!({"refreshInterval": "soon"})).spec).is_err());
    }
}
