//! What went wrong with one object of a sync: the step that failed, a CamelCase reason for
//! conditions, events and metric labels, whether retrying soon may help, and the sentence users
//! read. The rest of the set still syncs; the Application reports the failures.

use std::fmt;

use super::discovery::DiscoveryError;
use super::object::ObjectKey;

/// The step of a sync in which one object failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Keying the rendered object and building the manifest mooring applies.
    Validate,
    /// Looking up the resource that serves the object's kind.
    Discover,
    /// Reading the live object.
    Read,
    /// Checking that no other Application manages the object.
    CheckOwner,
    /// The server-side dry-run that tells whether the live object differs from Git.
    DryRun,
    /// The server-side apply.
    Apply,
    /// Waiting for a CustomResourceDefinition to be Established.
    WaitEstablished,
    /// Deleting an object that left Git, or looking it up before deleting it.
    Prune,
    /// Running a resource hook: creating it, reading its result, or the result itself.
    Hook,
}

/// One object that could not be applied or pruned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectFailure {
    /// The object.
    pub key: ObjectKey,
    /// The step that failed.
    pub step: Step,
    /// A CamelCase word for conditions, events and metric labels (`Invalid`, `Forbidden`,
    /// `DuplicateObject`): Kubernetes' own status reasons for API errors.
    pub reason: &'static str,
    /// Whether retrying soon may help (an API outage), as opposed to a change in Git or in the
    /// cluster's RBAC being needed (a rejected manifest, a forbidden write).
    pub retryable: bool,
    /// What users read, in the Synced condition and the event.
    pub message: String,
}

impl ObjectFailure {
    /// A rendered object that cannot be applied as it is: only a change in Git fixes it.
    pub fn invalid(key: ObjectKey, message: impl Into<String>) -> ObjectFailure {
        ObjectFailure {
            key,
            step: Step::Validate,
            reason: "InvalidObject",
            retryable: false,
            message: message.into(),
        }
    }

    /// An API call in `step` failed with `error`; `call` says which call ("failed to apply
    /// X"), and the message is the call and the API server's answer (its message only, as
    /// `kubectl` prints it).
    pub fn api(key: ObjectKey, step: Step, error: &kube::Error, call: &str) -> ObjectFailure {
        let (reason, retryable) = api_reason(error);
        ObjectFailure {
            key,
            step,
            reason,
            retryable,
            message: format!("{call}: {}", crate::errors::error_chain(error)),
        }
    }

    /// The kind of the object could not be looked up.
    pub fn discovery(key: ObjectKey, step: Step, error: &DiscoveryError) -> ObjectFailure {
        ObjectFailure {
            key,
            step,
            reason: "DiscoveryFailed",
            retryable: true,
            message: crate::errors::error_chain(error),
        }
    }
}

/// "key: message", as the Synced condition and the reconcile error name the first failure.
impl fmt::Display for ObjectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Kubernetes' status reason for an API error, and whether retrying soon may help. The
/// vocabulary is that of `metav1.StatusReason`, so a condition reads as `kubectl` would say it.
fn api_reason(error: &kube::Error) -> (&'static str, bool) {
    let kube::Error::Api(status) = error else {
        // No answer from the API server (connection, TLS, timeout): it may be back soon.
        return ("ApiError", true);
    };
    match status.code {
        400 => ("BadRequest", false),
        401 => ("Unauthorized", true),
        403 => ("Forbidden", false),
        // A namespace or a CRD another Application creates may arrive any moment.
        404 => ("NotFound", true),
        409 => ("Conflict", true),
        422 => ("Invalid", false),
        429 => ("TooManyRequests", true),
        _ => ("ApiError", true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ObjectKey {
        ObjectKey {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("ns".into()),
            name: "web".into(),
        }
    }

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure(message, "Invalid").with_code(code),
        ))
    }

    #[test]
    fn api_failures_carry_the_status_reason_and_whether_to_retry() {
        let rejected = ObjectFailure::api(
            key(),
            Step::Apply,
            &api_error(422, "spec.replicas: Invalid value"),
            "failed to apply",
        );
        assert_eq!(
            (rejected.step, rejected.reason, rejected.retryable),
            (Step::Apply, "Invalid", false)
        );
        let busy = ObjectFailure::api(key(), Step::Read, &api_error(503, "busy"), "x");
        assert_eq!((busy.reason, busy.retryable), ("ApiError", true));
        let forbidden = ObjectFailure::api(key(), Step::Prune, &api_error(403, "no"), "x");
        assert_eq!(
            (forbidden.reason, forbidden.retryable),
            ("Forbidden", false)
        );
        let gone = ObjectFailure::api(key(), Step::DryRun, &api_error(404, "no"), "x");
        assert_eq!((gone.reason, gone.retryable), ("NotFound", true));
    }

    #[test]
    fn a_failure_reads_as_the_object_then_the_message() {
        let failure = ObjectFailure::invalid(key(), "the object appears twice in the render");
        assert_eq!(
            failure.to_string(),
            "Deployment.apps ns/web: the object appears twice in the render"
        );
        assert_eq!(
            (failure.reason, failure.retryable),
            ("InvalidObject", false)
        );
    }

    #[test]
    fn a_discovery_failure_names_each_cause_once() {
        let error = DiscoveryError {
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            source: api_error(503, "the server is currently unable to handle the request"),
        };
        let failure = ObjectFailure::discovery(key(), Step::Discover, &error);
        // kube prints the API status in its own message (twice: text and debug) and returns it
        // as the source too: the chain shows the API server's message once.
        assert_eq!(
            failure.message,
            "failed to discover the resource for example.com/v1 Widget: the server is currently unable to handle the request"
        );
        assert_eq!(
            (failure.reason, failure.retryable),
            ("DiscoveryFailed", true)
        );
    }
}
