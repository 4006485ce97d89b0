//! Applying the desired set step by step: CRDs and Namespaces first (and the CRDs Established
//! before anything else), then one step per sync wave. A step starts once the previous one
//! applied and, as in Argo CD, is healthy; after a failure the later steps are only compared.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::wait::{await_condition, conditions};
use mooring_crds::application::HealthState;
use serde_json::Value;

use super::failure::{ObjectFailure, Step};
use super::object::ObjectKey;
use super::prepare::Desired;
use super::sync_object::Outcome;
use super::{Engine, Mode, SyncReport, SyncRequest, health};

/// How many objects of one step are compared or applied at once.
const CONCURRENCY: usize = 16;

impl Engine {
    /// Runs `steps` in order; returns every object with its outcome. Failures and the wave the
    /// sync waits for go into `report`.
    pub(super) async fn apply_steps(
        &self,
        request: &SyncRequest,
        steps: Vec<Vec<Desired>>,
        crds_in_set: &BTreeMap<(String, String), String>,
        in_inventory: &BTreeSet<ObjectKey>,
        report: &mut SyncReport,
    ) -> Vec<(Desired, Outcome)> {
        let mut outcomes = Vec::new();
        let mut failed_step = !report.failures.is_empty();
        let last_step = steps.len().saturating_sub(1);
        for (index, step) in steps.into_iter().enumerate() {
            // After a failure or a wave that is not healthy yet, later steps are only compared:
            // they may depend on what is missing, but their status is still reported.
            let mode = if failed_step || report.waiting.is_some() {
                Mode::Compare
            } else {
                request.mode
            };
            for item in &step {
                if let Some(served) = &item.served {
                    report.remember_kind(&served.resource);
                }
            }
            // Hooks are created and awaited, not compared; after a failure or while an earlier
            // step is awaited they wait too.
            let (hooks, objects): (Vec<Desired>, Vec<Desired>) =
                step.into_iter().partition(|item| item.hook.is_some());
            let mut results = self
                .run_step(request, mode, objects, crds_in_set, in_inventory)
                .await;
            failed_step |= record_failures(&results, &mut report.failures);
            let hooks_waiting = if mode == Mode::Apply && !hooks.is_empty() {
                let waiting = self.run_hooks(request, &hooks, report).await;
                failed_step |= report.hook_failed();
                waiting
            } else {
                None
            };
            if mode == Mode::Apply && !failed_step {
                failed_step |= self.wait_for_crds(&mut results, &mut report.failures).await;
                if !failed_step {
                    let waves = (index < last_step)
                        .then(|| wave_not_ready(&results))
                        .flatten();
                    // A hook is awaited even in the last step: the operation ends with it.
                    report.waiting = match (waves, hooks_waiting) {
                        (Some(waves), Some(hooks)) => Some(format!("{waves}; {hooks}")),
                        (waves, hooks) => waves.or(hooks),
                    };
                }
            }
            outcomes.extend(results);
        }
        outcomes
    }

    /// Syncs the objects of one step, [`CONCURRENCY`] at a time, in their order.
    async fn run_step(
        &self,
        request: &SyncRequest,
        mode: Mode,
        step: Vec<Desired>,
        crds_in_set: &BTreeMap<(String, String), String>,
        in_inventory: &BTreeSet<ObjectKey>,
    ) -> Vec<(Desired, Outcome)> {
        let prefetched = self.prefetch(&step).await;
        let prefetched = &prefetched;
        futures::stream::iter(step)
            .map(|item| async move {
                let was_applied = in_inventory.contains(&item.key);
                let outcome = self
                    .sync_object(request, mode, &item, prefetched, crds_in_set, was_applied)
                    .await;
                (item, outcome)
            })
            .buffered(CONCURRENCY)
            .collect()
            .await
    }

    /// Waits for every CRD the step applied to be Established, and judges its health on the
    /// Established object rather than on the apply answer. Whether one failed.
    async fn wait_for_crds(
        &self,
        results: &mut [(Desired, Outcome)],
        failures: &mut Vec<ObjectFailure>,
    ) -> bool {
        let mut failed = false;
        for (item, outcome) in results.iter_mut() {
            if item.key.group != "apiextensions.k8s.io"
                || item.key.kind != "CustomResourceDefinition"
            {
                continue;
            }
            match self.wait_established(&item.key).await {
                Ok(established) => {
                    if let Outcome::InSync(health) | Outcome::Written { health, .. } = outcome {
                        *health = health::assess(&item.key.group, &item.key.kind, &established);
                    }
                }
                Err(failure) => {
                    failures.push(failure);
                    failed = true;
                }
            }
        }
        failed
    }

    /// Waits until the CRD `key` is Established and returns it as JSON.
    async fn wait_established(&self, key: &ObjectKey) -> Result<Value, ObjectFailure> {
        let name = &key.name;
        let api: Api<CustomResourceDefinition> = Api::all(self.agent_client.clone());
        let established = await_condition(api, name, conditions::is_crd_established());
        let message = match tokio::time::timeout(self.crd_timeout, established).await {
            Ok(Ok(crd)) => return Ok(serde_json::to_value(&crd).unwrap_or_default()),
            Ok(Err(error)) => {
                format!(
                    "failed to watch CustomResourceDefinition {name}: {}",
                    crate::errors::error_chain(&error)
                )
            }
            Err(_) => format!(
                "CustomResourceDefinition {name} was not Established within {:?}",
                self.crd_timeout
            ),
        };
        Err(ObjectFailure {
            key: key.clone(),
            step: Step::WaitEstablished,
            reason: "CrdNotEstablished",
            // The API server may only be slow to accept a new CRD.
            retryable: true,
            message,
        })
    }
}

/// Adds the failed objects of a step to `failures`; whether there was one.
fn record_failures(results: &[(Desired, Outcome)], failures: &mut Vec<ObjectFailure>) -> bool {
    let before = failures.len();
    for (_, outcome) in results {
        if let Outcome::Failed(failure) = outcome {
            failures.push(failure.clone());
        }
    }
    failures.len() > before
}

/// Whether a step's objects are healthy enough for the next wave to start; if not, the
/// sentence that says which are not.
fn wave_not_ready(results: &[(Desired, Outcome)]) -> Option<String> {
    let pending: Vec<String> = results
        .iter()
        .filter_map(|(item, outcome)| {
            let health = match outcome {
                Outcome::InSync(health) | Outcome::Written { health, .. } => health,
                // Deferred objects wait for their CRD, not for a wave.
                _ => return None,
            };
            matches!(
                health.status,
                HealthState::Progressing | HealthState::Degraded | HealthState::Missing
            )
            .then(|| {
                format!(
                    "{} (wave {}) is {:?}{}",
                    item.key,
                    item.wave,
                    health.status,
                    health
                        .message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                )
            })
        })
        .collect();
    (!pending.is_empty())
        .then(|| format!("waiting before the next sync wave: {}", pending.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(kind: &str, group: &str, name: &str, wave: i64) -> Desired {
        Desired {
            key: ObjectKey {
                group: group.into(),
                kind: kind.into(),
                namespace: Some("ns".into()),
                name: name.into(),
            },
            version: "v1".into(),
            served: None,
            manifest: String::new(),
            hash: String::new(),
            wave,
            hook: None,
        }
    }

    #[test]
    fn a_wave_waits_for_progressing_objects_but_not_for_deferred_ones() {
        let running_job = serde_json::json!({"status": {"active": 1}});
        let done_job =
            serde_json::json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        let waiting = wave_not_ready(&[
            (
                desired("Job", "batch", "migrate", -1),
                Outcome::Written {
                    health: health::assess("batch", "Job", &running_job),
                    drift: None,
                },
            ),
            (
                desired("ConfigMap", "", "settings", -1),
                Outcome::InSync(health::assess("", "ConfigMap", &serde_json::json!({}))),
            ),
            (
                desired("Widget", "example.com", "w", -1),
                Outcome::Deferred("no CRD".into()),
            ),
        ])
        .unwrap();
        assert!(
            waiting.contains("Job.batch ns/migrate (wave -1) is Progressing"),
            "{waiting}"
        );
        assert!(
            !waiting.contains("settings") && !waiting.contains("Widget"),
            "{waiting}"
        );
        assert_eq!(
            wave_not_ready(&[(
                desired("Job", "batch", "migrate", -1),
                Outcome::InSync(health::assess("batch", "Job", &done_job))
            )]),
            None
        );
    }
}
