//! Health per kind, as Argo CD assesses it (its built-in checks for workloads, Job, Pod, PVC and
//! Service, and its resource customisations for SealedSecret, ExternalSecret and Application).
//! Pure functions of the live object's JSON, so every rule is unit-tested.

use mooring_crds::application::{HealthState, HealthStatus};
use serde_json::Value;

/// The health of a live object of `group`/`kind`. Kinds without a rule are Healthy once they
/// exist.
pub fn assess(group: &str, kind: &str, live: &Value) -> HealthStatus {
    match (group, kind) {
        ("apps", "Deployment") => deployment(live),
        ("apps", "StatefulSet") => stateful_set(live),
        ("apps", "DaemonSet") => daemon_set(live),
        ("batch", "Job") => job(live),
        ("", "Pod") => pod(live),
        ("", "PersistentVolumeClaim") => persistent_volume_claim(live),
        ("", "Service") => service(live),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => custom_resource_definition(live),
        ("bitnami.com", "SealedSecret") => condition_based(live, "Synced"),
        ("external-secrets.io", "ExternalSecret" | "ClusterExternalSecret" | "PushSecret") => {
            condition_based(live, "Ready")
        }
        ("mooring.dev" | "argoproj.io", "Application") => application(live),
        _ => healthy(),
    }
}

/// The health of an object that should exist and does not.
pub fn missing() -> HealthStatus {
    status(HealthState::Missing, "the object does not exist")
}

/// Argo CD's aggregation: the worst state wins, in the order Healthy < Suspended < Progressing <
/// Missing < Degraded < Unknown. An empty set is Healthy.
pub fn roll_up<'a>(states: impl IntoIterator<Item = &'a HealthState>) -> HealthState {
    states
        .into_iter()
        .copied()
        .max_by_key(|state| severity(*state))
        .unwrap_or(HealthState::Healthy)
}

fn severity(state: HealthState) -> u8 {
    match state {
        HealthState::Healthy => 0,
        HealthState::Suspended => 1,
        HealthState::Progressing => 2,
        HealthState::Missing => 3,
        HealthState::Degraded => 4,
        HealthState::Unknown => 5,
    }
}

fn status(state: HealthState, message: impl Into<String>) -> HealthStatus {
    let message: String = message.into();
    HealthStatus {
        status: state,
        message: (!message.is_empty()).then_some(message),
    }
}

fn healthy() -> HealthStatus {
    status(HealthState::Healthy, "")
}

fn int(value: &Value, pointer: &str) -> Option<i64> {
    value.pointer(pointer).and_then(Value::as_i64)
}

/// The spec has not been seen by the workload's controller yet.
fn generation_pending(live: &Value) -> bool {
    match (
        int(live, "/metadata/generation"),
        int(live, "/status/observedGeneration"),
    ) {
        (Some(generation), Some(observed)) => observed < generation,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The condition `type` of the object's `status.conditions`, as (status, reason, message).
fn condition<'a>(live: &'a Value, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    live.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        .map(|c| {
            let field = |name| c.get(name).and_then(Value::as_str).unwrap_or_default();
            (field("status"), field("reason"), field("message"))
        })
}

fn deployment(live: &Value) -> HealthStatus {
    if live.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        return status(HealthState::Suspended, "the Deployment is paused");
    }
    if generation_pending(live) {
        return status(
            HealthState::Progressing,
            "waiting for the rollout to be observed",
        );
    }
    if let Some((_, "ProgressDeadlineExceeded", _)) = condition(live, "Progressing") {
        return status(
            HealthState::Degraded,
            "the rollout exceeded its progress deadline",
        );
    }
    let wanted = int(live, "/spec/replicas").unwrap_or(1);
    let updated = int(live, "/status/updatedReplicas").unwrap_or(0);
    let replicas = int(live, "/status/replicas").unwrap_or(0);
    let available = int(live, "/status/availableReplicas").unwrap_or(0);
    if updated < wanted {
        return status(
            HealthState::Progressing,
            format!("{updated} of {wanted} replicas updated"),
        );
    }
    if replicas > updated {
        return status(
            HealthState::Progressing,
            format!("{} old replicas pending termination", replicas - updated),
        );
    }
    if available < updated {
        return status(
            HealthState::Progressing,
            format!("{available} of {updated} updated replicas available"),
        );
    }
    healthy()
}

fn stateful_set(live: &Value) -> HealthStatus {
    if generation_pending(live) {
        return status(
            HealthState::Progressing,
            "waiting for the rollout to be observed",
        );
    }
    let wanted = int(live, "/spec/replicas").unwrap_or(1);
    let ready = int(live, "/status/readyReplicas").unwrap_or(0);
    if ready < wanted {
        return status(
            HealthState::Progressing,
            format!("{ready} of {wanted} replicas ready"),
        );
    }
    // OnDelete updates happen only when pods are deleted by hand: nothing to wait for.
    if live
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete")
    {
        return healthy();
    }
    let current = live
        .pointer("/status/currentRevision")
        .and_then(Value::as_str);
    let update = live
        .pointer("/status/updateRevision")
        .and_then(Value::as_str);
    if update.is_some() && current != update {
        return status(
            HealthState::Progressing,
            "the rolling update is not finished",
        );
    }
    healthy()
}

fn daemon_set(live: &Value) -> HealthStatus {
    if generation_pending(live) {
        return status(
            HealthState::Progressing,
            "waiting for the rollout to be observed",
        );
    }
    if live
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete")
    {
        return healthy();
    }
    let wanted = int(live, "/status/desiredNumberScheduled").unwrap_or(0);
    let updated = int(live, "/status/updatedNumberScheduled").unwrap_or(0);
    let available = int(live, "/status/numberAvailable").unwrap_or(0);
    if updated < wanted {
        return status(
            HealthState::Progressing,
            format!("{updated} of {wanted} pods updated"),
        );
    }
    if available < wanted {
        return status(
            HealthState::Progressing,
            format!("{available} of {wanted} pods available"),
        );
    }
    healthy()
}

fn job(live: &Value) -> HealthStatus {
    if let Some(("True", _, message)) = condition(live, "Failed") {
        return status(HealthState::Degraded, message);
    }
    if let Some(("True", _, _)) = condition(live, "Complete") {
        return healthy();
    }
    if live.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        return status(HealthState::Suspended, "the Job is suspended");
    }
    status(HealthState::Progressing, "the Job is running")
}

/// Argo CD's annotation for a Pod with restartPolicy OnFailure or Never that should be assessed
/// like a long-running one (Healthy once Ready) rather than as a finite hook (Progressing while
/// it runs).
const IGNORE_RESTART_POLICY_ANNOTATION: &str = "argocd.argoproj.io/ignore-restart-policy";

/// A Pod managed directly (not one a workload owns: those count through their owner).
fn pod(live: &Value) -> HealthStatus {
    let restart_policy = live
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    let message = live
        .pointer("/status/message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let containers = |pointer: &str| {
        live.pointer(pointer)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .to_vec()
    };
    let statuses = containers("/status/containerStatuses");
    // A container that keeps failing to start (CrashLoopBackOff, ImagePullBackOff, ErrImagePull,
    // CreateContainerConfigError …) degrades a long-running pod; a hook pod (OnFailure, Never)
    // is left to its phase, so a transient pull error does not fail a sync hook early.
    if restart_policy == "Always" {
        let failing: Vec<&str> = statuses
            .iter()
            .filter_map(|c| {
                let waiting = c.pointer("/state/waiting")?;
                let reason = waiting.get("reason").and_then(Value::as_str)?;
                let broken = reason.starts_with("Err")
                    || reason.ends_with("Error")
                    || reason.ends_with("BackOff");
                broken.then(|| {
                    waiting
                        .get("message")
                        .and_then(Value::as_str)
                        .filter(|m| !m.is_empty())
                        .unwrap_or(reason)
                })
            })
            .collect();
        if !failing.is_empty() {
            return status(HealthState::Degraded, failing.join(", "));
        }
    }
    match live.pointer("/status/phase").and_then(Value::as_str) {
        Some("Pending") => status(HealthState::Progressing, message),
        Some("Succeeded") => status(HealthState::Healthy, message),
        Some("Failed") => {
            if !message.is_empty() {
                return status(HealthState::Degraded, message);
            }
            let mut all = containers("/status/initContainerStatuses");
            all.extend(statuses);
            let why = all.iter().find_map(container_failure).unwrap_or_default();
            status(HealthState::Degraded, why)
        }
        Some("Running") => {
            let long_running = restart_policy == "Always"
                || live
                    .pointer("/metadata/annotations")
                    .and_then(Value::as_object)
                    .is_some_and(|a| a.contains_key(IGNORE_RESTART_POLICY_ANNOTATION));
            if !long_running {
                // A pod with a finite life (usually a hook) is progressing until it ends.
                return status(HealthState::Progressing, message);
            }
            if let Some(("True", _, _)) = condition(live, "Ready") {
                return status(HealthState::Healthy, message);
            }
            let restarted = statuses
                .iter()
                .any(|c| c.pointer("/lastState/terminated").is_some());
            if restarted {
                status(HealthState::Degraded, message)
            } else {
                status(HealthState::Progressing, message)
            }
        }
        _ => status(HealthState::Unknown, message),
    }
}

/// Why a terminated container failed: its message, OOMKilled, or a non-zero exit code.
fn container_failure(container: &Value) -> Option<String> {
    let terminated = container.pointer("/state/terminated")?;
    let text = |name| {
        terminated
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    if !text("message").is_empty() {
        return Some(text("message").to_owned());
    }
    if text("reason") == "OOMKilled" {
        return Some("OOMKilled".to_owned());
    }
    let exit_code = terminated.get("exitCode").and_then(Value::as_i64)?;
    let name = container
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    (exit_code != 0).then(|| format!("container {name:?} failed with exit code {exit_code}"))
}

fn persistent_volume_claim(live: &Value) -> HealthStatus {
    match live.pointer("/status/phase").and_then(Value::as_str) {
        Some("Bound") => healthy(),
        Some("Lost") => status(HealthState::Degraded, "the claim lost its volume"),
        _ => status(HealthState::Progressing, "the claim is not bound yet"),
    }
}

fn service(live: &Value) -> HealthStatus {
    if live.pointer("/spec/type").and_then(Value::as_str) != Some("LoadBalancer") {
        return healthy();
    }
    let has_ingress = live
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .is_some_and(|ingress| !ingress.is_empty());
    if has_ingress {
        healthy()
    } else {
        status(
            HealthState::Progressing,
            "waiting for the load balancer to get an address",
        )
    }
}

fn custom_resource_definition(live: &Value) -> HealthStatus {
    if let Some(("False", reason, message)) = condition(live, "NamesAccepted") {
        return status(HealthState::Degraded, format!("{reason}: {message}"));
    }
    match condition(live, "Established") {
        Some(("True", _, _)) => healthy(),
        _ => status(HealthState::Progressing, "waiting to be Established"),
    }
}

/// SealedSecret (`Synced`) and ExternalSecret (`Ready`), as Argo CD's Lua checks for them.
fn condition_based(live: &Value, type_: &str) -> HealthStatus {
    match condition(live, type_) {
        Some(("True", _, _)) => healthy(),
        Some(("False", reason, message)) => {
            status(HealthState::Degraded, format!("{reason}: {message}"))
        }
        _ => status(
            HealthState::Progressing,
            format!("waiting for the {type_} condition"),
        ),
    }
}

/// A child Application (app-of-apps): its own rolled-up health.
fn application(live: &Value) -> HealthStatus {
    let state = live
        .pointer("/status/health/status")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_value::<HealthState>(Value::String(s.into())).ok());
    let message = live
        .pointer("/status/health/message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match state {
        // Not assessed yet: the child has not synced, which is progress, not failure.
        None | Some(HealthState::Unknown) => status(
            HealthState::Progressing,
            "the Application has not been assessed yet",
        ),
        Some(state) => status(state, message),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state(group: &str, kind: &str, live: Value) -> HealthState {
        assess(group, kind, &live).status
    }

    #[test]
    fn deployment_rollout() {
        let rolled_out = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}});
        assert_eq!(
            state("apps", "Deployment", rolled_out),
            HealthState::Healthy
        );
        let scaled_to_zero = json!({"metadata": {"generation": 1}, "spec": {"replicas": 0},
            "status": {"observedGeneration": 1}});
        assert_eq!(
            state("apps", "Deployment", scaled_to_zero),
            HealthState::Healthy
        );
        let not_observed = json!({"metadata": {"generation": 3}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}});
        assert_eq!(
            state("apps", "Deployment", not_observed),
            HealthState::Progressing
        );
        let old_pods = json!({"metadata": {"generation": 1}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1}});
        assert_eq!(
            state("apps", "Deployment", old_pods),
            HealthState::Progressing
        );
        let unavailable = json!({"metadata": {"generation": 1}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}});
        assert_eq!(
            state("apps", "Deployment", unavailable),
            HealthState::Progressing
        );
        let deadline = json!({"metadata": {"generation": 1}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}});
        assert_eq!(state("apps", "Deployment", deadline), HealthState::Degraded);
        let paused = json!({"spec": {"paused": true}});
        assert_eq!(state("apps", "Deployment", paused), HealthState::Suspended);
        // A Deployment-named kind of another group has no rollout rule.
        assert_eq!(
            state("example.com", "Deployment", json!({})),
            HealthState::Healthy
        );
    }

    #[test]
    fn stateful_set_and_daemon_set_rollout() {
        let ready = json!({"metadata": {"generation": 1}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "readyReplicas": 2, "currentRevision": "a", "updateRevision": "a"}});
        assert_eq!(state("apps", "StatefulSet", ready), HealthState::Healthy);
        let updating = json!({"metadata": {"generation": 1}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "readyReplicas": 2, "currentRevision": "a", "updateRevision": "b"}});
        assert_eq!(
            state("apps", "StatefulSet", updating),
            HealthState::Progressing
        );
        let on_delete = json!({"metadata": {"generation": 1}, "spec": {"replicas": 1, "updateStrategy": {"type": "OnDelete"}},
            "status": {"observedGeneration": 1, "readyReplicas": 1, "currentRevision": "a", "updateRevision": "b"}});
        assert_eq!(
            state("apps", "StatefulSet", on_delete),
            HealthState::Healthy
        );
        let not_ready = json!({"metadata": {"generation": 1}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 1, "readyReplicas": 1}});
        assert_eq!(
            state("apps", "StatefulSet", not_ready),
            HealthState::Progressing
        );

        let daemons = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1,
            "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}});
        assert_eq!(state("apps", "DaemonSet", daemons), HealthState::Healthy);
        let rolling = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1,
            "desiredNumberScheduled": 3, "updatedNumberScheduled": 2, "numberAvailable": 3}});
        assert_eq!(
            state("apps", "DaemonSet", rolling),
            HealthState::Progressing
        );
    }

    #[test]
    fn job_pvc_and_service() {
        let done = json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(state("batch", "Job", done), HealthState::Healthy);
        let failed = json!({"status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}});
        let health = assess("batch", "Job", &failed);
        assert_eq!(health.status, HealthState::Degraded);
        assert_eq!(health.message.as_deref(), Some("BackoffLimitExceeded"));
        assert_eq!(
            state("batch", "Job", json!({"status": {}})),
            HealthState::Progressing
        );
        assert_eq!(
            state("batch", "Job", json!({"spec": {"suspend": true}})),
            HealthState::Suspended
        );

        assert_eq!(
            state(
                "",
                "PersistentVolumeClaim",
                json!({"status": {"phase": "Bound"}})
            ),
            HealthState::Healthy
        );
        assert_eq!(
            state(
                "",
                "PersistentVolumeClaim",
                json!({"status": {"phase": "Pending"}})
            ),
            HealthState::Progressing
        );
        assert_eq!(
            state(
                "",
                "PersistentVolumeClaim",
                json!({"status": {"phase": "Lost"}})
            ),
            HealthState::Degraded
        );

        assert_eq!(
            state("", "Service", json!({"spec": {"type": "ClusterIP"}})),
            HealthState::Healthy
        );
        let pending_lb = json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}});
        assert_eq!(state("", "Service", pending_lb), HealthState::Progressing);
        let lb = json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
        assert_eq!(state("", "Service", lb), HealthState::Healthy);
    }

    #[test]
    fn pod_as_argo_cd_assesses_it() {
        let pod = |restart_policy: &str, status: Value| json!({"spec": {"restartPolicy": restart_policy}, "status": status});
        let ready =
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        let starting = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "main", "state": {"running": {}}}]});
        let crash_loop = json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "main", "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting"}},
                "lastState": {"terminated": {"exitCode": 1}}}]});
        let pull_error = json!({"phase": "Pending", "containerStatuses": [{"name": "main",
            "state": {"waiting": {"reason": "ErrImagePull"}}}]});
        let exited = json!({"phase": "Failed", "containerStatuses": [{"name": "main",
            "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]});

        assert_eq!(
            state("", "Pod", pod("Always", ready.clone())),
            HealthState::Healthy
        );
        assert_eq!(
            state("", "Pod", pod("Always", starting)),
            HealthState::Progressing
        );
        assert_eq!(
            state("", "Pod", pod("Always", json!({"phase": "Pending"}))),
            HealthState::Progressing
        );
        let health = assess("", "Pod", &pod("Always", crash_loop));
        assert_eq!(health.status, HealthState::Degraded);
        assert_eq!(health.message.as_deref(), Some("back-off 10s restarting"));
        let health = assess("", "Pod", &pod("Always", pull_error.clone()));
        assert_eq!(health.status, HealthState::Degraded);
        assert_eq!(health.message.as_deref(), Some("ErrImagePull"));
        // A pod restarted once and not ready again (no waiting reason yet) is Degraded too.
        let restarted = json!({"phase": "Running", "containerStatuses": [{"name": "main",
            "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1}}}]});
        assert_eq!(
            state("", "Pod", pod("Always", restarted)),
            HealthState::Degraded
        );

        // Finite pods (hooks): Progressing while they run, even when not starting cleanly.
        assert_eq!(
            state("", "Pod", pod("Never", ready.clone())),
            HealthState::Progressing
        );
        assert_eq!(
            state("", "Pod", pod("OnFailure", pull_error)),
            HealthState::Progressing
        );
        let mut ignore = pod("Never", ready);
        ignore["metadata"] = json!({"annotations": {IGNORE_RESTART_POLICY_ANNOTATION: "true"}});
        assert_eq!(state("", "Pod", ignore), HealthState::Healthy);
        assert_eq!(
            state("", "Pod", pod("Never", json!({"phase": "Succeeded"}))),
            HealthState::Healthy
        );
        let health = assess("", "Pod", &pod("Never", exited));
        assert_eq!(health.status, HealthState::Degraded);
        assert_eq!(
            health.message.as_deref(),
            Some("container \"main\" failed with exit code 1")
        );
        let evicted =
            json!({"phase": "Failed", "message": "The node was low on resource: memory."});
        let health = assess("", "Pod", &pod("Always", evicted));
        assert_eq!(health.status, HealthState::Degraded);
        assert_eq!(
            health.message.as_deref(),
            Some("The node was low on resource: memory.")
        );
        let oom = json!({"phase": "Failed", "containerStatuses": [{"name": "main",
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]});
        assert_eq!(
            assess("", "Pod", &pod("Never", oom)).message.as_deref(),
            Some("OOMKilled")
        );
        assert_eq!(
            state("", "Pod", pod("Always", json!({"phase": "Unknown"}))),
            HealthState::Unknown
        );
        // Pods without a status yet (just created) are not Healthy.
        assert_eq!(
            state("", "Pod", pod("Always", json!({}))),
            HealthState::Unknown
        );
    }

    #[test]
    fn crd_sealed_secret_external_secret_and_application() {
        let crd = "apiextensions.k8s.io";
        let established =
            json!({"status": {"conditions": [{"type": "Established", "status": "True"}]}});
        assert_eq!(
            state(crd, "CustomResourceDefinition", established),
            HealthState::Healthy
        );
        assert_eq!(
            state(crd, "CustomResourceDefinition", json!({})),
            HealthState::Progressing
        );
        let conflict = json!({"status": {"conditions": [{"type": "NamesAccepted", "status": "False", "reason": "ListKindConflict"}]}});
        assert_eq!(
            state(crd, "CustomResourceDefinition", conflict),
            HealthState::Degraded
        );

        let synced = json!({"status": {"conditions": [{"type": "Synced", "status": "True"}]}});
        assert_eq!(
            state("bitnami.com", "SealedSecret", synced),
            HealthState::Healthy
        );
        let broken = json!({"status": {"conditions": [{"type": "Synced", "status": "False", "reason": "DecryptFailed"}]}});
        assert_eq!(
            state("bitnami.com", "SealedSecret", broken),
            HealthState::Degraded
        );
        assert_eq!(
            state("bitnami.com", "SealedSecret", json!({})),
            HealthState::Progressing
        );

        let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(
            state("external-secrets.io", "ExternalSecret", ready),
            HealthState::Healthy
        );
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "SecretSyncedError"}]}});
        assert_eq!(
            state("external-secrets.io", "ExternalSecret", not_ready),
            HealthState::Degraded
        );

        let child = json!({"status": {"health": {"status": "Degraded", "message": "Job failed"}}});
        let health = assess("mooring.dev", "Application", &child);
        assert_eq!(health.status, HealthState::Degraded);
        assert_eq!(health.message.as_deref(), Some("Job failed"));
        assert_eq!(
            state("mooring.dev", "Application", json!({})),
            HealthState::Progressing
        );
    }

    #[test]
    fn roll_up_takes_the_worst() {
        use HealthState::*;
        assert_eq!(roll_up(&[Healthy, Progressing, Suspended]), Progressing);
        assert_eq!(roll_up(&[Healthy, Missing, Progressing]), Missing);
        assert_eq!(roll_up(&[Degraded, Missing]), Degraded);
        assert_eq!(roll_up(&[Healthy, Suspended]), Suspended);
        assert_eq!(roll_up(&[]), Healthy);
    }
}
