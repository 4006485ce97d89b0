//! What a sync reports: metrics, events, the conditions (a pure function of the result) and the
//! status, written only when it changed.

use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use mooring_crds::conditions::{Condition, ConditionStatus, names, stamp};
use mooring_crds::external_secret::{Binding, ExternalSecret, ExternalSecretStatus, reasons};

use super::schedule::synced_resource_version;
use super::target::target_name;
use super::{Context, Error, Outcome, SyncResult};
use crate::controllers::{lock, merge_status};
use crate::metrics::{OutcomeLabels, ReasonLabels};

/// The object with the status this agent wrote last when the watch cache has not caught up
/// yet (a reconcile woken by our own Secret write), so a sync just done is not repeated.
pub(super) fn with_latest_status(es: &ExternalSecret, ctx: &Context) -> ExternalSecret {
    let uid = es.uid().unwrap_or_default();
    let written = lock(&ctx.statuses).get(&uid).cloned();
    let time = |status: Option<&ExternalSecretStatus>| {
        status
            .and_then(|s| s.refresh_time.as_deref())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    let cached = time(es.status.as_ref());
    match written {
        Some(written) if time(Some(&written)) > cached => {
            let mut newer = es.clone();
            newer.status = Some(written);
            newer
        }
        _ => es.clone(),
    }
}

/// Metrics and events for one reconcile; events only when something changed.
pub(super) async fn record(es: &ExternalSecret, ctx: &Context, result: &SyncResult) {
    let previous = es
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == reasons::READY));
    let event = match result {
        Ok(outcome) => {
            ctx.metrics
                .syncs
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.label().into(),
                })
                .inc();
            let (reason, note) = match outcome {
                Outcome::Created => (reasons::CREATED, "secret created"),
                Outcome::Updated => (reasons::UPDATED, "secret updated"),
                Outcome::Repaired => (
                    reasons::UPDATED,
                    "secret restored from the last values read",
                ),
                Outcome::Deleted => (
                    reasons::DELETED,
                    "secret deleted: every remote value is gone (deletionPolicy Delete)",
                ),
                Outcome::Refreshed
                | Outcome::Unchanged
                | Outcome::Missing
                | Outcome::OtherController => {
                    if previous.is_some_and(|c| c.status == ConditionStatus::True)
                        || previous.is_none()
                    {
                        return;
                    }
                    (reasons::SYNCED, "secret in sync again")
                }
            };
            Event {
                type_: EventType::Normal,
                reason: reason.into(),
                note: Some(note.into()),
                action: "Sync".into(),
                secondary: None,
            }
        }
        Err(error) => {
            ctx.metrics
                .errors
                .get_or_create(&ReasonLabels {
                    reason: error.reason().into(),
                })
                .inc();
            let message = crate::errors::error_chain(error);
            if previous.is_some_and(|c| c.status == ConditionStatus::False && c.message == message)
            {
                return;
            }
            tracing::warn!(
                externalsecret = %format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any()),
                reason = error.reason(),
                error = %message,
                "failed to sync ExternalSecret"
            );
            Event {
                type_: EventType::Warning,
                reason: reasons::UPDATE_FAILED.into(),
                note: Some(message),
                action: "Sync".into(),
                secondary: None,
            }
        }
    };
    ctx.events.publish(&es.object_ref(&()), event).await;
}

/// The conditions for a result (pure), stamped with `generation` and, for those whose status
/// changed, `now`; `previous` keeps `Fetched` when nothing was read.
fn conditions(
    result: &SyncResult,
    previous: &[Condition],
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    let ready = match result {
        Ok(Outcome::Missing) => Condition::new(
            reasons::READY,
            ConditionStatus::True,
            reasons::SECRET_MISSING,
            "the target Secret does not exist (creationPolicy Merge never creates it)",
        ),
        Ok(Outcome::Deleted) => Condition::new(
            reasons::READY,
            ConditionStatus::False,
            reasons::SECRET_DELETED,
            "the Secret was deleted: every remote value is gone (deletionPolicy Delete)",
        ),
        Ok(_) => Condition::new(
            reasons::READY,
            ConditionStatus::True,
            reasons::SECRET_SYNCED,
            "secret synced",
        ),
        Err(error) => Condition::new(
            reasons::READY,
            ConditionStatus::False,
            reasons::SECRET_SYNCED_ERROR,
            crate::errors::error_chain(error),
        ),
    };
    let fetched = match result {
        Ok(outcome) if outcome.fetched() => Some(Condition::new(
            reasons::FETCHED,
            ConditionStatus::True,
            reasons::FETCHED,
            "values read from the store",
        )),
        Err(error) => error.provider_error().map(|provider| {
            Condition::new(
                reasons::FETCHED,
                ConditionStatus::False,
                provider.reason(),
                crate::errors::error_chain(error),
            )
        }),
        Ok(_) => None,
    }
    .or_else(|| {
        previous
            .iter()
            .find(|c| c.type_ == reasons::FETCHED)
            .cloned()
    });
    let mut all = vec![ready];
    all.extend(fetched);
    if let Err(Error::Unsupported(fields)) = result {
        all.push(Condition::new(
            names::UNSUPPORTED_FIELDS,
            ConditionStatus::True,
            names::UNSUPPORTED_FIELDS,
            format!("mooring does not implement: {}", fields.join(", ")),
        ));
    }
    stamp(&mut all, previous, generation, now);
    all
}

/// Writes the status only when it changed (conditions, refresh time, synced version).
pub(super) async fn write_status(
    es: &ExternalSecret,
    ctx: &Context,
    result: &SyncResult,
) -> Result<(), Error> {
    let current = es.status.clone().unwrap_or_default();
    let mut new = current.clone();
    let now = jiff::Timestamp::now().to_string();
    new.conditions = conditions(result, &current.conditions, es.metadata.generation, &now);
    if let Ok(outcome) = result {
        if outcome.fetched() {
            new.refresh_time = Some(now.clone());
        }
        if outcome.fetched() || new.synced_resource_version.is_none() {
            new.synced_resource_version = Some(synced_resource_version(es));
        }
        new.binding = Some(Binding {
            name: target_name(es),
        });
    }
    let uid = es.uid().unwrap_or_default();
    let same = |a: &ExternalSecretStatus, b: &ExternalSecretStatus| {
        let strip = |s: &ExternalSecretStatus| {
            let mut s = s.clone();
            for c in &mut s.conditions {
                c.last_transition_time = None;
            }
            s
        };
        strip(a) == strip(b)
    };
    let written_last = lock(&ctx.statuses).get(&uid).is_some_and(|w| same(w, &new));
    if same(&current, &new) || (written_last && !result.as_ref().is_ok_and(|o| o.fetched())) {
        return Ok(());
    }
    let api: Api<ExternalSecret> =
        Api::namespaced(ctx.client.clone(), &es.namespace().unwrap_or_default());
    merge_status(&api, &es.name_any(), &new)
        .await
        .map_err(Error::WriteStatus)?;
    lock(&ctx.statuses).insert(uid, new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mooring_provider::ProviderError;

    const BEFORE: &str = "2026-01-01T00:00:00Z";
    const NOW: &str = "2026-01-02T00:00:00Z";

    #[test]
    fn conditions_keep_eso_reasons_and_tell_provider_errors_apart() {
        let not_found: SyncResult = Err(Error::ReadRemote {
            store: "SecretStore app/vault".into(),
            key: "db".into(),
            source: ProviderError::NotFound {
                key: "db".into(),
                detail: "vault answered 404".into(),
            },
        });
        let all = conditions(&not_found, &[], Some(1), BEFORE);
        assert_eq!(
            (all[0].type_.as_str(), all[0].reason.as_str()),
            ("Ready", "SecretSyncedError")
        );
        assert_eq!(
            (all[1].type_.as_str(), all[1].reason.as_str()),
            ("Fetched", "NotFound")
        );
        let denied: SyncResult = Err(Error::ReadRemote {
            store: "s".into(),
            key: "db".into(),
            source: ProviderError::PermissionDenied {
                key: "db".into(),
                detail: "403".into(),
            },
        });
        assert_eq!(conditions(&denied, &[], None, NOW)[1].reason, "Forbidden");
        let ok = conditions(&Ok(Outcome::Unchanged), &all, Some(2), NOW);
        assert_eq!(ok[0].reason, "SecretSynced");
        assert_eq!(
            ok[1].reason, "NotFound",
            "Fetched kept when nothing was read"
        );
        assert_eq!(
            (
                ok[0].last_transition_time.as_deref(),
                ok[0].observed_generation
            ),
            (Some(NOW), Some(2)),
            "Ready went from False to True"
        );
        assert_eq!(
            (
                ok[1].last_transition_time.as_deref(),
                ok[1].observed_generation
            ),
            (Some(BEFORE), Some(2)),
            "a kept Fetched keeps its transition time"
        );
        let unsupported = conditions(
            &Err(Error::Unsupported(vec!["spec.dataFrom[0].find".into()])),
            &[],
            None,
            NOW,
        );
        assert_eq!(unsupported[1].type_, "UnsupportedFields");
        assert!(unsupported[1].message.contains("spec.dataFrom[0].find"));
    }
}
