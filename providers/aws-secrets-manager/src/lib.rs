//! AWS Secrets Manager secrets, through the AWS SDK for Rust.
//!
//! One [`AwsSecretsManagerProvider`] holds one SDK client (its connection pool and credentials
//! cache) for a store. This first version takes static credentials or the SDK's default chain;
//! web identity and assumed roles arrive with the ExternalSecrets work.

use std::collections::BTreeMap;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::Credentials;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use mooring_provider::{
    ProviderError, RemoteRef, SecretProvider, SecretValue, json_properties, select_property,
};

/// Prefix of a `version` that names a version id rather than a stage (as in ESO).
const VERSION_ID_PREFIX: &str = "uuid/";

/// Static credentials, as resolved by the agent from ESO's `auth.secretRef`.
#[derive(Clone)]
pub struct StaticCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// An optional session token.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Plain configuration for one store.
#[derive(Clone, Debug)]
pub struct AwsConfig {
    /// The region (`eu-west-1`).
    pub region: String,
    /// An endpoint override (tests, VPC endpoints); the regional endpoint when absent.
    pub endpoint_url: Option<String>,
    /// Static credentials; the SDK's default chain when absent.
    pub credentials: Option<StaticCredentials>,
}

/// An AWS Secrets Manager store.
pub struct AwsSecretsManagerProvider {
    client: Client,
}

impl AwsSecretsManagerProvider {
    /// Builds the SDK client for `config`. No request is made until the first read.
    pub async fn new(config: AwsConfig) -> Self {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(config.region));
        if let Some(endpoint) = config.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(credentials) = config.credentials {
            loader = loader.credentials_provider(Credentials::new(
                credentials.access_key_id,
                credentials.secret_access_key,
                credentials.session_token,
                None,
                "mooring-store",
            ));
        }
        AwsSecretsManagerProvider {
            client: Client::new(&loader.load().await),
        }
    }

    async fn read(&self, reference: &RemoteRef) -> Result<Vec<u8>, ProviderError> {
        let mut request = self.client.get_secret_value().secret_id(&reference.key);
        request = match reference.version.as_deref() {
            None => request,
            Some(version) => match version.strip_prefix(VERSION_ID_PREFIX) {
                Some(id) => request.version_id(id),
                None => request.version_stage(version),
            },
        };
        let output = request
            .send()
            .await
            .map_err(|error| classify(&reference.key, error))?;
        if let Some(text) = output.secret_string {
            Ok(text.into_bytes())
        } else if let Some(binary) = output.secret_binary {
            Ok(binary.into_inner())
        } else {
            Err(ProviderError::NotFound {
                key: reference.key.clone(),
                detail: "the secret version has neither SecretString nor SecretBinary".into(),
            })
        }
    }
}

/// Maps an SDK error to the provider contract's classes by its AWS error code.
fn classify<E, R>(key: &str, error: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = error.code().map(str::to_owned);
    match code.as_deref() {
        Some("ResourceNotFoundException") => ProviderError::NotFound {
            key: key.to_string(),
            detail: "ResourceNotFoundException".into(),
        },
        Some(
            code @ ("AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"),
        ) => ProviderError::PermissionDenied {
            key: key.to_string(),
            detail: code.to_string(),
        },
        Some(
            code
            @ ("InvalidParameterException" | "InvalidRequestException" | "ValidationException"),
        ) => ProviderError::InvalidConfig(format!("{key:?}: {code}")),
        _ => ProviderError::Unavailable {
            detail: format!("failed to read {key:?} from AWS Secrets Manager"),
            source: Some(Box::new(error)),
        },
    }
}

#[async_trait::async_trait]
impl SecretProvider for AwsSecretsManagerProvider {
    async fn get(&self, reference: &RemoteRef) -> Result<SecretValue, ProviderError> {
        select_property(reference, self.read(reference).await?)
    }

    async fn get_map(
        &self,
        reference: &RemoteRef,
    ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        let document = SecretValue::new(self.read(reference).await?);
        json_properties(&reference.key, document.expose())
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        self.client
            .list_secrets()
            .max_results(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|error| classify("", error))
    }
}
