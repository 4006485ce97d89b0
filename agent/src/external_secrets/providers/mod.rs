//! Secret-store providers: the only place that names provider crates.
//!
//! A store spec becomes a [`Connection`] (plain configuration with its credentials read from
//! Secrets) by [`resolve`], and a connection becomes an authenticated [`SecretProvider`] when the
//! [`ProviderCache`] connects it. The cache keeps one connected provider per store (and per
//! consuming namespace for referent ClusterSecretStores) and reuses it until the store, its
//! credentials, or the token's lease change: no login per reconcile (ESO leaked a Vault token
//! per reconcile, <https://github.com/external-secrets/external-secrets/issues/376>, and opened
//! an AWS session per request, <https://github.com/external-secrets/external-secrets/issues/1194>).
//!
//! Each provider has its module (`vault`, `aws`, `azure`), behind its Cargo feature, and is named
//! once in the agent: the `match` over [`mooring_crds::secret_store::ProviderSpec`] in
//! `stores.rs`, which fails to compile until a provider added to the CRD is handled.

#[cfg(feature = "aws")]
mod aws;
mod azure;
mod cache;
mod credentials;
pub mod shared_reads;
mod stores;
#[cfg(feature = "vault")]
mod vault;

use std::sync::Arc;
use std::time::Instant;

use mooring_provider::{ProviderError, SecretProvider};
use zeroize::Zeroizing;

pub use cache::{Handle, ProviderCache};
pub use stores::{
    StoreId, StoreKind, count_provider_call, is_handled_here, is_referent, namespace_is_allowed,
    resolve, store_refresh_interval,
};

use credentials::CredentialReader;

/// Settings of the agent that apply to every store.
#[derive(Clone, Debug, Default)]
pub struct ProviderSettings {
    /// An AWS endpoint override (tests, VPC endpoints).
    pub aws_endpoint_url: Option<String>,
    /// The CA certificates (PEM) every Azure store trusts instead of the system's roots
    /// (`--azure-ca-file`), or why the file could not be read.
    pub azure_ca_bundle: Option<Result<Vec<u8>, String>>,
    /// The IMDS endpoint of Azure managed identities; `http://169.254.169.254` when absent.
    pub azure_imds_endpoint: Option<String>,
}

/// Why a store could not be used. Messages name the store and the field, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The spec is unusable as written.
    #[error("{store}: {message}")]
    InvalidSpec {
        /// The store.
        store: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A credential (a key of a Secret or ConfigMap, a ServiceAccount or its token) could not
    /// be read.
    #[error("{store}: failed to read {object}")]
    ReadCredentials {
        /// The store.
        store: String,
        /// Which object, and the field that references it.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The provider refused the login, or could not be reached.
    #[error("failed to log in to {store}")]
    Login {
        /// The store.
        store: String,
        /// The provider's error.
        #[source]
        source: ProviderError,
    },
}

impl StoreError {
    /// An unusable spec of `store`; `message` names the field.
    fn invalid_spec(store: &StoreId, message: impl Into<String>) -> StoreError {
        StoreError::InvalidSpec {
            store: store.to_string(),
            message: message.into(),
        }
    }

    /// The provider error, if the provider answered.
    pub fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            StoreError::Login { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether retrying may help without a spec change.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::InvalidSpec { .. } => false,
            StoreError::ReadCredentials { .. } => true,
            StoreError::Login { source, .. } => source.is_retryable(),
        }
    }
}

/// One provider's part of a store spec, as the agent reads it.
#[async_trait::async_trait]
trait ProviderConfig: Sync {
    /// The `namespace` of every credential reference, `None` where a reference has none (so a
    /// ClusterSecretStore resolves it in each consuming namespace).
    fn credential_namespaces(&self) -> Vec<Option<&str>>;

    /// Reads the credentials the spec references and turns it into a [`Connection`].
    async fn connection(
        &self,
        reader: &CredentialReader<'_>,
        settings: &ProviderSettings,
    ) -> Result<Connection, StoreError>;
}

/// One provider's resolved configuration: what it depends on, and how it logs in.
#[async_trait::async_trait]
trait Connect: Send + Sync {
    /// Everything the connection depends on, credentials included; only ever hashed.
    fn fingerprint_parts(&self) -> Vec<Zeroizing<String>>;

    /// Logs in: the only call that costs a provider login.
    async fn connect(
        &self,
        client: &kube::Client,
        store: &StoreId,
    ) -> Result<Connected, StoreError>;
}

/// A store's provider configuration with credentials resolved; ready to connect.
pub struct Connection(Box<dyn Connect>);

impl Connection {
    #[cfg_attr(
        not(any(feature = "vault", feature = "aws")),
        allow(dead_code, reason = "no provider that connects is built in")
    )]
    fn new(connection: impl Connect + 'static) -> Connection {
        Connection(Box::new(connection))
    }

    /// A digest of everything the connection depends on (credentials included), so a cached
    /// provider is replaced when a credential Secret changes. Never printed.
    fn fingerprint(&self) -> [u8; 32] {
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in self.0.fingerprint_parts() {
            context.update(part.as_bytes());
            context.update(&[0]);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.finish().as_ref());
        out
    }

    /// Logs in.
    async fn connect(
        &self,
        client: &kube::Client,
        store: &StoreId,
    ) -> Result<Connected, StoreError> {
        self.0.connect(client, store).await
    }
}

/// A connected provider and how long it may be used.
struct Connected {
    provider: Arc<dyn SecretProvider>,
    /// After this, log in again (a lease that would otherwise expire).
    renew_at: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether each error of the chain leaves its cause to the chain, so `error_chain` prints
    /// every cause once.
    fn prints_each_cause_once(error: &dyn std::error::Error) -> bool {
        let mut current = error;
        while let Some(cause) = current.source() {
            if current.to_string().contains(&cause.to_string()) {
                return false;
            }
            current = cause;
        }
        true
    }

    #[test]
    fn store_errors_print_each_cause_once() {
        let refused = std::io::Error::other("connection refused");
        let login = StoreError::Login {
            store: "SecretStore app/vault".into(),
            source: ProviderError::Unavailable {
                detail: "vault answered 503".into(),
                source: Some(Box::new(refused)),
            },
        };
        assert!(prints_each_cause_once(&login));
        assert_eq!(
            crate::errors::error_chain(&login),
            "failed to log in to SecretStore app/vault: store unavailable: vault answered 503: connection refused"
        );
        let read = StoreError::ReadCredentials {
            store: "SecretStore app/vault".into(),
            object: "Secret app/token (spec.provider.vault.auth.tokenSecretRef)".into(),
            source: kube::Error::Api(
                kube::core::Status::failure("secrets \"token\" is forbidden", "Forbidden").boxed(),
            ),
        };
        // The API server's answer once, as kubectl prints it (not kube's debug-printed Status).
        assert_eq!(
            crate::errors::error_chain(&read),
            "SecretStore app/vault: failed to read Secret app/token (spec.provider.vault.auth.tokenSecretRef): secrets \"token\" is forbidden"
        );
        assert!(!read.to_string().contains("forbidden"), "{read}");
    }
}
