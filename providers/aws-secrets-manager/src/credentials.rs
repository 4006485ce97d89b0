//! The credentials one store signs with: static keys or a web identity, optionally an assumed
//! role on top; temporary credentials are kept until two thirds of their lifetime and then
//! fetched again, so STS is called once per credential lifetime and never per read (ESO's #1194).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use mooring_provider::ProviderError;
use zeroize::Zeroizing;

/// A source of ServiceAccount tokens for web identity; the agent implements it with TokenRequest,
/// so the provider stays free of Kubernetes.
#[async_trait::async_trait]
pub trait WebIdentityTokenSource: Send + Sync {
    /// A fresh token. Errors name the ServiceAccount and the store field, never the token.
    async fn token(&self) -> Result<Zeroizing<String>, ProviderError>;
}

/// Web identity (ESO's `auth.jwt`): a ServiceAccount token exchanged for temporary credentials
/// with STS `AssumeRoleWithWebIdentity`.
#[derive(Clone)]
pub struct WebIdentity {
    /// The role the token is exchanged for (the ServiceAccount's `eks.amazonaws.com/role-arn`).
    pub role_arn: String,
    /// The STS session name.
    pub session_name: String,
    /// The STS `DurationSeconds`; STS's default (one hour) when absent.
    pub session_duration: Option<Duration>,
    /// Where tokens come from.
    pub tokens: Arc<dyn WebIdentityTokenSource>,
}

impl std::fmt::Debug for WebIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebIdentity")
            .field("role_arn", &self.role_arn)
            .field("session_name", &self.session_name)
            .finish_non_exhaustive()
    }
}

/// A role assumed (STS `AssumeRole`) with the base credentials (ESO's `role`, `externalID`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumeRole {
    /// The role ARN.
    pub role_arn: String,
    /// The STS `ExternalId`, when the role's trust policy asks for one.
    pub external_id: Option<String>,
    /// The STS session name.
    pub session_name: String,
    /// The STS `DurationSeconds`; STS's default (one hour) when absent.
    pub session_duration: Option<Duration>,
}

/// How the base credentials are obtained.
pub(crate) enum Base {
    /// Keys that never expire (or expire on the owner's schedule).
    Static(Credentials),
    /// Exchanged from a ServiceAccount token.
    WebIdentity(WebIdentity),
    /// The SDK's default chain (environment, profile, instance role), if it found a source.
    DefaultChain(Option<aws_credential_types::provider::SharedCredentialsProvider>),
}

/// Credentials currently in use and when to fetch new ones.
#[derive(Clone)]
struct Held {
    credentials: Credentials,
    refresh_at: Option<SystemTime>,
}

/// The credentials of one store, shared by its SDK client (as its credentials provider) and the
/// provider's own calls (which check them first so failures read as configuration errors).
pub(crate) struct CredentialChain {
    base: Base,
    role: Option<AssumeRole>,
    /// The configuration STS clients are built from (region, endpoint, HTTP client).
    sts_config: SdkConfig,
    held: tokio::sync::Mutex<Option<Held>>,
}

/// How long old (still valid) credentials are used after a failed refresh before trying again.
const RETRY_AFTER_FAILED_REFRESH: Duration = Duration::from_secs(15);

/// When to fetch again: after two thirds of the lifetime, so a slow STS never leaves a read with
/// expired credentials. Credentials without expiry are kept until the store changes.
pub(crate) fn refresh_at(fetched: SystemTime, expiry: Option<SystemTime>) -> Option<SystemTime> {
    let expiry = expiry?;
    let lifetime = expiry.duration_since(fetched).unwrap_or(Duration::ZERO);
    Some(fetched + lifetime.mul_f64(2.0 / 3.0))
}

impl CredentialChain {
    /// A chain for `base` and `role`; STS is reached at `endpoint_url` when given.
    pub(crate) async fn new(
        base: Base,
        role: Option<AssumeRole>,
        region: &str,
        endpoint_url: Option<&str>,
    ) -> CredentialChain {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .no_credentials();
        if let Some(endpoint) = endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        CredentialChain {
            base,
            role,
            sts_config: loader.load().await,
            held: tokio::sync::Mutex::new(None),
        }
    }

    /// The credentials to sign with now: the held ones while fresh, else new ones from STS.
    /// Concurrent callers wait for one fetch.
    pub(crate) async fn current(&self) -> Result<Credentials, ProviderError> {
        let mut held = self.held.lock().await;
        let now = SystemTime::now();
        if let Some(h) = held.as_ref()
            && h.refresh_at.is_none_or(|at| now < at)
        {
            return Ok(h.credentials.clone());
        }
        match self.fetch().await {
            Ok(credentials) => {
                let refresh_at = refresh_at(SystemTime::now(), credentials.expiry());
                *held = Some(Held {
                    credentials: credentials.clone(),
                    refresh_at,
                });
                Ok(credentials)
            }
            // STS failed while the old credentials still work: keep using them, and try again
            // in a while rather than on every read (each attempt holds readers up).
            Err(error) => match held.as_mut() {
                Some(h) if h.credentials.expiry().is_some_and(|e| now < e) => {
                    let retry = now + RETRY_AFTER_FAILED_REFRESH;
                    h.refresh_at = h.credentials.expiry().map(|e| e.min(retry));
                    Ok(h.credentials.clone())
                }
                _ => Err(error),
            },
        }
    }

    async fn fetch(&self) -> Result<Credentials, ProviderError> {
        let base = match &self.base {
            Base::Static(credentials) => credentials.clone(),
            Base::DefaultChain(None) => {
                return Err(ProviderError::InvalidConfig(
                    "no AWS credentials: set spec.provider.aws.auth".into(),
                ));
            }
            Base::DefaultChain(Some(chain)) => {
                chain
                    .provide_credentials()
                    .await
                    .map_err(|error| ProviderError::Unavailable {
                        detail: "the AWS SDK default credentials chain gave no credentials".into(),
                        source: Some(Box::new(error)),
                    })?
            }
            Base::WebIdentity(identity) => self.web_identity(identity).await?,
        };
        match &self.role {
            None => Ok(base),
            Some(role) => self.assume_role(role, base).await,
        }
    }

    async fn web_identity(&self, identity: &WebIdentity) -> Result<Credentials, ProviderError> {
        let token = identity.tokens.token().await?;
        let sts = aws_sdk_sts::Client::new(&self.sts_config);
        let output = sts
            .assume_role_with_web_identity()
            .role_arn(&identity.role_arn)
            .role_session_name(&identity.session_name)
            .web_identity_token(token.as_str())
            .set_duration_seconds(duration_seconds(identity.session_duration))
            .send()
            .await
            .map_err(|error| {
                sts_error(
                    "spec.provider.aws.auth.jwt",
                    "AssumeRoleWithWebIdentity",
                    &identity.role_arn,
                    error,
                )
            })?;
        temporary(output.credentials, "AssumeRoleWithWebIdentity")
    }

    async fn assume_role(
        &self,
        role: &AssumeRole,
        base: Credentials,
    ) -> Result<Credentials, ProviderError> {
        // A client for this one call, signing with the base credentials; no identity cache, so
        // nothing outlives the call.
        let config = aws_sdk_sts::config::Builder::from(&self.sts_config)
            .credentials_provider(base)
            .identity_cache(aws_sdk_sts::config::IdentityCache::no_cache())
            .build();
        let mut request = aws_sdk_sts::Client::from_conf(config)
            .assume_role()
            .role_arn(&role.role_arn)
            .role_session_name(&role.session_name)
            .set_duration_seconds(duration_seconds(role.session_duration));
        if let Some(id) = &role.external_id {
            request = request.external_id(id);
        }
        let output = request.send().await.map_err(|error| {
            sts_error(
                "spec.provider.aws.role",
                "AssumeRole",
                &role.role_arn,
                error,
            )
        })?;
        temporary(output.credentials, "AssumeRole")
    }
}

/// A session duration as STS's `DurationSeconds`.
fn duration_seconds(duration: Option<Duration>) -> Option<i32> {
    duration.map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
}

/// STS's temporary credentials as SDK credentials.
fn temporary(
    credentials: Option<aws_sdk_sts::types::Credentials>,
    operation: &str,
) -> Result<Credentials, ProviderError> {
    let c = credentials.ok_or_else(|| ProviderError::Unavailable {
        detail: format!("STS {operation} answered without credentials"),
        source: None,
    })?;
    let expiry = SystemTime::try_from(c.expiration).ok();
    Ok(Credentials::new(
        c.access_key_id,
        c.secret_access_key,
        Some(c.session_token),
        expiry,
        "mooring-sts",
    ))
}

/// An STS failure, naming the store field and the role (never the token or keys).
fn sts_error<E, R>(field: &str, operation: &str, role: &str, error: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = error.code().map(str::to_owned);
    match code.as_deref() {
        Some(
            code @ ("AccessDenied"
            | "AccessDeniedException"
            | "InvalidIdentityToken"
            | "ExpiredTokenException"
            | "ExpiredToken"
            | "IDPRejectedClaim"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"),
        ) => ProviderError::PermissionDenied {
            key: field.to_string(),
            detail: format!("STS {operation} for role {role} was refused ({code})"),
        },
        Some(
            code @ ("MalformedPolicyDocument" | "ValidationError" | "RegionDisabledException"),
        ) => ProviderError::InvalidConfig(format!(
            "{field}: STS {operation} for role {role} was rejected ({code})"
        )),
        _ => ProviderError::Unavailable {
            detail: format!("{field}: STS {operation} for role {role} failed"),
            source: Some(Box::new(error)),
        },
    }
}

/// The chain as the SDK client's credentials provider.
#[derive(Clone)]
pub(crate) struct ChainProvider(pub(crate) Arc<CredentialChain>);

impl std::fmt::Debug for ChainProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainProvider")
    }
}

impl ProvideCredentials for ChainProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.0
                .current()
                .await
                .map_err(CredentialsError::provider_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_credentials_are_refreshed_after_two_thirds_of_their_life() {
        let fetched = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let expiry = fetched + Duration::from_secs(3_600);
        assert_eq!(
            refresh_at(fetched, Some(expiry)),
            Some(fetched + Duration::from_secs(2_400))
        );
        assert_eq!(refresh_at(fetched, None), None);
        // Already expired when fetched (clock skew): fetch again at once.
        assert_eq!(
            refresh_at(fetched, Some(fetched - Duration::from_secs(5))),
            Some(fetched)
        );
    }
}
