//! Why a reconcile failed: its reason (condition, event, metric label) and whether to retry soon.

use mooring_crds::application::reasons;

use super::SourceError;
use crate::gitops::apply::SyncReport;

/// Why a reconcile failed (status is still written; this drives the retry). Each variant is
/// the step that failed; a wrapped error is its `source`, printed once by
/// [`crate::errors::error_chain`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fetch or render failed.
    #[error(transparent)]
    FetchAndRender(#[from] SourceError),
    /// The sync as a whole failed.
    #[error(transparent)]
    Sync(#[from] crate::gitops::apply::Error),
    /// Some objects could not be applied, pruned or deleted.
    #[error("failed to sync {count} object(s): {first}")]
    SyncObjects {
        /// How many.
        count: usize,
        /// The first failure: the object and what went wrong.
        first: String,
    },
    /// The Application could not be read.
    #[error("failed to read Application {name}")]
    ReadApplication {
        /// The Application.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The resources finalizer could not be removed after the objects were deleted.
    #[error("failed to remove the resources finalizer of Application {name}")]
    RemoveFinalizer {
        /// The Application.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The Application's AppProject could not be read.
    #[error("failed to read AppProject {name}")]
    ReadProject {
        /// The project.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// No client impersonating the Application's ServiceAccount could be built.
    #[error("failed to build a client impersonating ServiceAccount {service_account}: {message}")]
    Impersonate {
        /// `namespace/name`.
        service_account: String,
        /// Why.
        message: String,
    },
    /// The status could not be written.
    #[error("failed to update the status of Application {name}")]
    WriteStatus {
        /// The Application.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A CamelCase reason for the condition, the event and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::FetchAndRender(error) => error.reason,
            Error::Sync(_) | Error::SyncObjects { .. } => reasons::SYNC_FAILED,
            Error::WriteStatus { .. } => reasons::STATUS_UPDATE_FAILED,
            Error::RemoveFinalizer { .. } => reasons::FINALIZER_UPDATE_FAILED,
            Error::ReadApplication { .. } | Error::ReadProject { .. } => reasons::API_ERROR,
            Error::Impersonate { .. } => reasons::INVALID_SPEC,
        }
    }

    /// Whether retrying soon may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::FetchAndRender(error) => error.retryable,
            _ => true,
        }
    }
}

/// "key: message" of the first object that failed to apply or prune.
pub(super) fn first_failure(report: &SyncReport) -> Option<String> {
    report.failures.first().map(ToString::to_string)
}

/// The error for a sync in which some objects failed, if any did.
pub(super) fn failed_objects(report: &SyncReport) -> Option<Error> {
    Some(Error::SyncObjects {
        count: report.failures.len(),
        first: first_failure(report)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::error_chain;

    #[test]
    fn the_chain_names_each_cause_once() {
        let read = Error::ReadApplication {
            name: "web".into(),
            // A kube error without a cause of its own, so the expected text is exact.
            source: kube::Error::LinesCodecMaxLineLengthExceeded,
        };
        assert_eq!(
            error_chain(&read),
            "failed to read Application web: Error finding newline character"
        );
        let source = Error::FetchAndRender(SourceError {
            reason: "FetchFailed",
            message: "failed to fetch https://git.example.test/repo.git: timed out".into(),
            retryable: true,
        });
        assert_eq!(
            error_chain(&source),
            "failed to fetch https://git.example.test/repo.git: timed out"
        );
        let objects = Error::SyncObjects {
            count: 2,
            first: "apps/v1 Deployment web/api: forbidden".into(),
        };
        assert_eq!(
            error_chain(&objects),
            "failed to sync 2 object(s): apps/v1 Deployment web/api: forbidden"
        );
    }
}
