//! Why a reconcile failed: its reason (condition, event, metric label) and whether to retry soon.

use mooring_crds::application::reasons;

use super::SourceError;
use crate::gitops::apply::SyncReport;

/// Why a reconcile failed (status is still written; this drives the retry).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fetch or render failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The sync as a whole failed.
    #[error(transparent)]
    Sync(#[from] crate::gitops::apply::Error),
    /// Some objects could not be applied or pruned.
    #[error("failed to sync {count} object(s): {first}")]
    Objects {
        /// How many.
        count: usize,
        /// The first failure.
        first: String,
    },
    /// The Application could not be read.
    #[error("failed to read Application {name}")]
    Read {
        /// The Application.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The resources finalizer could not be removed after the objects were deleted.
    #[error("failed to remove the resources finalizer of Application {name}")]
    Finalizer {
        /// The Application.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The status could not be written.
    #[error("failed to update the status of Application {name}")]
    Status {
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
            Error::Source(error) => error.reason,
            Error::Sync(_) => reasons::SYNC_FAILED,
            Error::Objects { .. } => reasons::SYNC_FAILED,
            Error::Status { .. } => reasons::STATUS_UPDATE_FAILED,
            Error::Finalizer { .. } => reasons::FINALIZER_UPDATE_FAILED,
            Error::Read { .. } => reasons::API_ERROR,
        }
    }

    /// Whether retrying soon may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Source(error) => error.retryable,
            _ => true,
        }
    }
}

/// "key: message" of the first object that failed to apply or prune.
pub(super) fn first_failure(report: &SyncReport) -> Option<String> {
    let (key, message) = report.failures.first()?;
    Some(format!("{key}: {message}"))
}

/// The error for a sync in which some objects failed, if any did.
pub(super) fn failed_objects(report: &SyncReport) -> Option<Error> {
    Some(Error::Objects {
        count: report.failures.len(),
        first: first_failure(report)?,
    })
}
