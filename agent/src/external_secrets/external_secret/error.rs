//! Why a sync failed, and what that means for the condition reason and the retry.

use mooring_crds::conditions::names;
use mooring_provider::ProviderError;

use crate::external_secrets::providers::{StoreError, fetched_reason};

/// Why an ExternalSecret could not be synced. Messages name objects, fields and keys, never
/// values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fields mooring does not implement are set.
    #[error("unsupported fields are set: {}", .0.join(", "))]
    Unsupported(Vec<String>),
    /// The spec cannot be used as written.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The referenced store does not exist.
    #[error("{0} does not exist")]
    StoreNotFound(String),
    /// A ClusterSecretStore's conditions do not allow this namespace.
    #[error("using {store} is not allowed from namespace {namespace}: denied by spec.conditions")]
    StoreDenied {
        /// The store.
        store: String,
        /// The ExternalSecret's namespace.
        namespace: String,
    },
    /// The store could not be used (configuration, credentials, login).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A read failed.
    #[error("failed to read {key:?} from {store}: {source}")]
    Provider {
        /// The store.
        store: String,
        /// The remote key.
        key: String,
        /// The provider's error.
        #[source]
        source: ProviderError,
    },
    /// A value could not be decoded as `decodingStrategy` says.
    #[error("failed to decode the value of {key:?} with decodingStrategy {strategy}")]
    Decode {
        /// The Secret key.
        key: String,
        /// The strategy.
        strategy: String,
    },
    /// A template could not be rendered.
    #[error(transparent)]
    Template(#[from] mooring_template::TemplateError),
    /// The Secret is controlled by another object.
    #[error("Secret {0:?} is owned by another object; refusing to take it over")]
    ForeignOwner(String),
    /// The Secret is immutable and its data differs.
    #[error("Secret {0:?} is immutable and its data differs; delete it to let mooring recreate it")]
    Immutable(String),
    /// An API call failed.
    #[error("failed to {action} Secret {name:?}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The Secret.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Another read of the API failed (store, namespace).
    #[error("failed to read {what}")]
    Read {
        /// What.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The status could not be written.
    #[error("failed to update the status")]
    Status(#[source] kube::Error),
}

impl Error {
    /// A CamelCase reason for events and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Unsupported(_) => names::UNSUPPORTED_FIELDS,
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::StoreNotFound(_) => "StoreNotFound",
            Error::StoreDenied { .. } => "StoreNotAllowed",
            Error::Store(StoreError::InvalidSpec { .. }) => "InvalidStoreConfiguration",
            Error::Store(StoreError::Credentials { .. }) => "StoreCredentialsUnavailable",
            Error::Store(StoreError::Provider { source, .. }) | Error::Provider { source, .. } => {
                fetched_reason(source)
            }
            Error::Decode { .. } => "DecodeFailed",
            Error::Template(_) => "TemplateFailed",
            Error::ForeignOwner(_) => "SecretOwnedByOther",
            Error::Immutable(_) => "SecretImmutable",
            Error::Api { .. } | Error::Read { .. } => "ApiError",
            Error::Status(_) => "StatusUpdateFailed",
        }
    }

    /// The provider's answer, when the failure was one.
    pub(super) fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            Error::Provider { source, .. } => Some(source),
            Error::Store(error) => error.provider_error(),
            _ => None,
        }
    }

    /// Whether retrying soon may help, as opposed to bad input.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(error) => error.is_retryable(),
            Error::Provider { source, .. } => source.is_retryable(),
            Error::Api { .. } | Error::Read { .. } | Error::Status(_) => true,
            _ => false,
        }
    }
}
