//! Why a sync failed, and what that means for the condition reason and the retry.

use mooring_crds::conditions::names;
use mooring_crds::external_secret::reasons;
use mooring_provider::ProviderError;

use crate::external_secrets::providers::StoreError;

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
    /// Reading a remote key from the provider failed.
    #[error("failed to read {key:?} from {store}")]
    ReadRemote {
        /// The store.
        store: String,
        /// The remote key (or the `dataFrom[].find` field).
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
    /// `spec.target.template.type` asks for a Secret type that is never made from an
    /// ExternalSecret.
    #[error(
        "spec.target.template.type {0:?} is refused: a Secret of that type makes the API server mint a token for the ServiceAccount it names; create it directly instead"
    )]
    SecretTypeForbidden(String),
    /// The Secret is controlled by another object.
    #[error("Secret {0:?} is owned by another object; refusing to take it over")]
    ForeignOwner(String),
    /// The Secret is immutable and its data differs.
    #[error("Secret {0:?} is immutable and its data differs; delete it to let mooring recreate it")]
    Immutable(String),
    /// Reading the target Secret failed.
    #[error("failed to read Secret {name:?}")]
    ReadSecret {
        /// The Secret.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Applying the target Secret failed.
    #[error("failed to apply Secret {name:?}")]
    ApplySecret {
        /// The Secret.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting the target Secret (`deletionPolicy: Delete`) failed.
    #[error("failed to delete Secret {name:?}")]
    DeleteSecret {
        /// The Secret.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading the referenced store failed.
    #[error("failed to read {store}")]
    ReadStore {
        /// The store.
        store: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading the ExternalSecret's Namespace (for a ClusterSecretStore's conditions) failed.
    #[error("failed to read Namespace {namespace}")]
    ReadNamespace {
        /// The Namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the ExternalSecret's status failed.
    #[error("failed to update the status")]
    WriteStatus(#[source] kube::Error),
}

impl Error {
    /// A CamelCase reason for events and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Unsupported(_) => names::UNSUPPORTED_FIELDS,
            Error::InvalidSpec(_) => reasons::INVALID_SPEC,
            Error::StoreNotFound(_) => reasons::STORE_NOT_FOUND,
            Error::StoreDenied { .. } => reasons::STORE_NOT_ALLOWED,
            Error::Store(StoreError::InvalidSpec { .. }) => reasons::INVALID_STORE_CONFIGURATION,
            Error::Store(StoreError::ReadCredentials { .. }) => {
                reasons::STORE_CREDENTIALS_UNAVAILABLE
            }
            Error::Store(StoreError::Login { source, .. }) | Error::ReadRemote { source, .. } => {
                source.reason()
            }
            Error::Decode { .. } => reasons::DECODE_FAILED,
            Error::Template(_) => reasons::TEMPLATE_FAILED,
            Error::SecretTypeForbidden(_) => reasons::SECRET_TYPE_FORBIDDEN,
            Error::ForeignOwner(_) => reasons::SECRET_OWNED_BY_OTHER,
            Error::Immutable(_) => reasons::SECRET_IMMUTABLE,
            Error::ReadSecret { .. }
            | Error::ApplySecret { .. }
            | Error::DeleteSecret { .. }
            | Error::ReadStore { .. }
            | Error::ReadNamespace { .. } => reasons::API_ERROR,
            Error::WriteStatus(_) => reasons::STATUS_UPDATE_FAILED,
        }
    }

    /// The provider's answer, when the failure was one.
    pub(super) fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            Error::ReadRemote { source, .. } => Some(source),
            Error::Store(error) => error.provider_error(),
            _ => None,
        }
    }

    /// Whether retrying soon may help, as opposed to bad input.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(error) => error.is_retryable(),
            Error::ReadRemote { source, .. } => source.is_retryable(),
            Error::ReadSecret { .. }
            | Error::ApplySecret { .. }
            | Error::DeleteSecret { .. }
            | Error::ReadStore { .. }
            | Error::ReadNamespace { .. }
            | Error::WriteStatus(_) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::error_chain;

    /// An API error without a cause of its own, so the chain is only ours.
    fn api_error() -> kube::Error {
        kube::Error::TlsRequired
    }

    #[test]
    fn error_chains_print_each_cause_once() {
        let api = "TLS required but no TLS stack selected";
        let cases = [
            (
                Error::ReadRemote {
                    store: "SecretStore app/vault".into(),
                    key: "db".into(),
                    source: ProviderError::NotFound {
                        key: "db".into(),
                        detail: "vault answered 404".into(),
                    },
                },
                r#"failed to read "db" from SecretStore app/vault: secret "db" not found: vault answered 404"#.to_string(),
            ),
            (
                Error::ReadRemote {
                    store: "SecretStore app/vault".into(),
                    key: "db".into(),
                    source: ProviderError::Unavailable {
                        detail: "vault is sealed".into(),
                        source: Some(Box::new(std::io::Error::other("connection reset"))),
                    },
                },
                r#"failed to read "db" from SecretStore app/vault: store unavailable: vault is sealed: connection reset"#.to_string(),
            ),
            (
                Error::ReadSecret {
                    name: "db".into(),
                    source: api_error(),
                },
                format!(r#"failed to read Secret "db": {api}"#),
            ),
            (
                Error::ApplySecret {
                    name: "db".into(),
                    source: api_error(),
                },
                format!(r#"failed to apply Secret "db": {api}"#),
            ),
            (
                Error::DeleteSecret {
                    name: "db".into(),
                    source: api_error(),
                },
                format!(r#"failed to delete Secret "db": {api}"#),
            ),
            (
                Error::ReadStore {
                    store: "ClusterSecretStore vault".into(),
                    source: api_error(),
                },
                format!("failed to read ClusterSecretStore vault: {api}"),
            ),
            (
                Error::ReadNamespace {
                    namespace: "app".into(),
                    source: api_error(),
                },
                format!("failed to read Namespace app: {api}"),
            ),
            (
                Error::WriteStatus(api_error()),
                format!("failed to update the status: {api}"),
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error_chain(&error), expected);
        }
    }

    #[test]
    fn reasons_keep_their_words() {
        let api = || Error::ReadSecret {
            name: "db".into(),
            source: api_error(),
        };
        let cases = [
            (
                Error::Unsupported(vec!["spec.x".into()]),
                "UnsupportedFields",
            ),
            (Error::InvalidSpec("x".into()), "InvalidSpec"),
            (Error::StoreNotFound("s".into()), "StoreNotFound"),
            (
                Error::StoreDenied {
                    store: "s".into(),
                    namespace: "app".into(),
                },
                "StoreNotAllowed",
            ),
            (
                Error::Decode {
                    key: "k".into(),
                    strategy: "Base64".into(),
                },
                "DecodeFailed",
            ),
            (
                Error::SecretTypeForbidden("kubernetes.io/service-account-token".into()),
                "SecretTypeForbidden",
            ),
            (Error::ForeignOwner("db".into()), "SecretOwnedByOther"),
            (Error::Immutable("db".into()), "SecretImmutable"),
            (api(), "ApiError"),
            (Error::WriteStatus(api_error()), "StatusUpdateFailed"),
        ];
        for (error, reason) in cases {
            assert_eq!(error.reason(), reason, "{error}");
        }
    }
}
