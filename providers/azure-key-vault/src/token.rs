//! Entra ID and managed-identity tokens for one store's principal: requested here, over the
//! store's own HTTP client, cached and renewed before they expire.
//!
//! azure_identity's credentials are not used: they keep the client secret and every token in
//! `azure_core::credentials::Secret`, a `Cow<str>` that is not zeroized, and its managed
//! identity credential hard-codes `169.254.169.254` (tests may only reach loopback). This
//! module keeps secrets, assertions and tokens in [`Zeroizing`] strings and hands the SDK's
//! bearer policy a token through [`TokenCredential`].

use std::time::{Duration, Instant};

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use mooring_provider::ProviderError;
use zeroize::Zeroizing;

/// Renew this long before a token expires (the SDK's own margin), or at half its lifetime for
/// short tokens.
const RENEW_MARGIN: Duration = Duration::from_secs(300);
/// The most bytes of a token answer read (a token is a few KiB).
const MAX_ANSWER: usize = 64 * 1024;
/// The IMDS api-version (MSAL's).
const IMDS_API_VERSION: &str = "2018-02-01";

/// Supplies a client assertion (a ServiceAccount token for workload identity), asked each time a
/// new Entra ID token is needed.
#[async_trait::async_trait]
pub trait AssertionSource: Send + Sync {
    /// A fresh assertion.
    async fn assertion(&self) -> Result<Zeroizing<String>, ProviderError>;
}

/// How the principal proves itself.
pub(crate) enum Grant {
    /// `client_credentials` with a client secret.
    ClientSecret(Zeroizing<String>),
    /// `client_credentials` with a client assertion (workload identity).
    Assertion(std::sync::Arc<dyn AssertionSource>),
    /// `client_credentials` with an assertion signed by a client certificate.
    Certificate(crate::certificate::ClientCertificate),
    /// A managed identity: IMDS at `endpoint`, optionally a user-assigned identity.
    ManagedIdentity {
        /// `http://169.254.169.254` by default.
        endpoint: String,
        /// A client id, or an Azure resource id (starting with `/`).
        identity_id: Option<String>,
    },
}

/// One cached token.
struct Cached {
    token: Zeroizing<String>,
    expires_on: time::OffsetDateTime,
    renew_at: Instant,
}

/// The tokens of one (store, principal).
pub(crate) struct TokenSource {
    http: reqwest::Client,
    /// `{authority}/{tenant}/oauth2/v2.0/token` (unused for managed identity).
    token_url: String,
    tenant: String,
    client_id: String,
    /// The Key Vault resource, `https://vault.azure.net`: the token is always for it, whatever a
    /// challenge names, so a vault URL cannot obtain a token for another resource.
    resource: String,
    grant: Grant,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Entra ID's error answer (and IMDS's, which has the same two fields).
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct EntraError {
    error: String,
    error_description: String,
    error_codes: Vec<i64>,
}

/// A token answer: Entra gives `expires_in` as a number, IMDS as a string.
#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: serde_json::Value,
}

impl Drop for TokenAnswer {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.access_token);
    }
}

impl TokenSource {
    pub(crate) fn new(
        http: reqwest::Client,
        authority: &str,
        tenant: String,
        client_id: String,
        resource: String,
        grant: Grant,
    ) -> TokenSource {
        TokenSource {
            http,
            token_url: format!(
                "{}/{tenant}/oauth2/v2.0/token",
                authority.trim_end_matches('/')
            ),
            tenant,
            client_id,
            resource,
            grant,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// Who this is, for messages: tenant and client, never a secret.
    pub(crate) fn principal(&self) -> String {
        match &self.grant {
            Grant::ManagedIdentity { identity_id, .. } => match identity_id {
                Some(id) => format!("managed identity {id}"),
                None => "the system-assigned managed identity".into(),
            },
            _ => format!("client {} of tenant {}", self.client_id, self.tenant),
        }
    }

    /// The current token, requested when there is none or it is near its end.
    pub(crate) async fn current(&self) -> Result<AccessToken, ProviderError> {
        self.with_current(access_token).await
    }

    /// The current token's text, for requests made without the SDK.
    pub(crate) async fn bearer(&self) -> Result<Zeroizing<String>, ProviderError> {
        self.with_current(|cached| cached.token.clone()).await
    }

    async fn with_current<T>(&self, take: impl FnOnce(&Cached) -> T) -> Result<T, ProviderError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.renew_at
        {
            return Ok(take(token));
        }
        let fresh = self.request().await?;
        let token = take(&fresh);
        *cached = Some(fresh);
        Ok(token)
    }

    /// Drops the cached token (the vault refused it).
    pub(crate) async fn forget(&self) {
        *self.cached.lock().await = None;
    }

    async fn request(&self) -> Result<Cached, ProviderError> {
        let request = match &self.grant {
            Grant::ClientSecret(secret) => {
                let form = Zeroizing::new(form(&[
                    ("client_id", &self.client_id),
                    ("client_secret", secret),
                    ("grant_type", "client_credentials"),
                    ("scope", &format!("{}/.default", self.resource)),
                ]));
                self.post_form(form)
            }
            Grant::Assertion(_) | Grant::Certificate(_) => {
                let assertion = match &self.grant {
                    Grant::Certificate(certificate) => {
                        certificate.assertion(&self.client_id, &self.token_url)?
                    }
                    Grant::Assertion(source) => source.assertion().await?,
                    _ => return Err(ProviderError::InvalidConfig("unreachable grant".into())),
                };
                let form = Zeroizing::new(form(&[
                    ("client_id", &self.client_id),
                    ("client_assertion", &assertion),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("grant_type", "client_credentials"),
                    ("scope", &format!("{}/.default", self.resource)),
                ]));
                self.post_form(form)
            }
            Grant::ManagedIdentity {
                endpoint,
                identity_id,
            } => {
                let mut query = vec![
                    ("api-version", IMDS_API_VERSION),
                    ("resource", self.resource.as_str()),
                ];
                match identity_id.as_deref() {
                    Some(id) if id.starts_with('/') => query.push(("msi_res_id", id)),
                    Some(id) => query.push(("client_id", id)),
                    None => {}
                }
                self.http
                    .get(format!(
                        "{}/metadata/identity/oauth2/token?{}",
                        endpoint.trim_end_matches('/'),
                        form(&query)
                    ))
                    .header("Metadata", "true")
            }
        };
        let started = Instant::now();
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let body = read_bounded(response)
            .await
            .map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(self.refused(status, &body));
        }
        let mut answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|_| ProviderError::Unavailable {
                detail: format!("the token answer for {} is not JSON", self.principal()),
                source: None,
            })?;
        let lifetime = match &answer.expires_in {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| ProviderError::Unavailable {
            detail: format!(
                "the token answer for {} has no expires_in",
                self.principal()
            ),
            source: None,
        })?;
        let lifetime = Duration::from_secs(lifetime);
        let margin = RENEW_MARGIN.min(lifetime / 2);
        Ok(Cached {
            token: Zeroizing::new(std::mem::take(&mut answer.access_token)),
            expires_on: time::OffsetDateTime::now_utc() + lifetime,
            renew_at: started + lifetime.saturating_sub(margin),
        })
    }

    fn post_form(&self, form: Zeroizing<String>) -> reqwest::RequestBuilder {
        self.http
            .post(&self.token_url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form.as_bytes().to_vec())
    }

    fn unreachable(&self, error: &reqwest::Error) -> ProviderError {
        ProviderError::Unavailable {
            detail: format!(
                "failed to get a token for {}: {}",
                self.principal(),
                crate::error_chain(error)
            ),
            source: None,
        }
    }

    /// Entra's (or IMDS's) refusal: 5xx and 429 are worth retrying; a refused secret, an unknown
    /// client or tenant, a federated credential that does not match is the store's
    /// configuration.
    fn refused(&self, status: reqwest::StatusCode, body: &[u8]) -> ProviderError {
        let error: EntraError = serde_json::from_slice(body).unwrap_or_default();
        let mut description: String = error
            .error_description
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        if let Grant::ClientSecret(secret) = &self.grant
            && !secret.is_empty()
            && description.contains(secret.as_str())
        {
            description = "(description withheld: it quotes the client secret)".into();
        }
        let codes = error
            .error_codes
            .iter()
            .map(|c| format!("AADSTS{c}"))
            .collect::<Vec<_>>()
            .join(",");
        let detail = format!(
            "Entra ID refused a token for {} ({status}{}{}){}",
            self.principal(),
            if error.error.is_empty() { "" } else { ", " },
            error.error,
            if description.is_empty() {
                String::new()
            } else if codes.is_empty() || description.starts_with("AADSTS") {
                format!(": {description}")
            } else {
                format!(": {codes}: {description}")
            },
        );
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            ProviderError::Unavailable {
                detail,
                source: None,
            }
        } else {
            ProviderError::PermissionDenied {
                key: String::new(),
                detail,
            }
        }
    }
}

fn access_token(cached: &Cached) -> AccessToken {
    AccessToken::new(cached.token.as_str().to_string(), cached.expires_on)
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// The body, at most [`MAX_ANSWER`] bytes (more is refused as a broken answer).
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
) -> Result<Zeroizing<Vec<u8>>, reqwest::Error> {
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The SDK's view: the token of this source, whatever scopes the challenge named.
#[async_trait::async_trait]
impl TokenCredential for TokenSource {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.current().await.map_err(|error| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                error.to_string(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_percent_encoded() {
        assert_eq!(
            form(&[("a", "x y"), ("scope", "https://vault.azure.net/.default")]),
            "a=x+y&scope=https%3A%2F%2Fvault.azure.net%2F.default"
        );
    }

    #[test]
    fn refusals_name_the_principal_and_never_the_secret() {
        let source = TokenSource::new(
            reqwest::Client::new(),
            "https://login.example",
            "tenant-1".into(),
            "client-1".into(),
            "https://vault.azure.net".into(),
            Grant::ClientSecret(Zeroizing::new("hunter2-secret".into())),
        );
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret hunter2-secret provided.","error_codes":[7000215]}"#;
        let error = source.refused(reqwest::StatusCode::UNAUTHORIZED, body);
        let text = error.to_string();
        assert_eq!(error.reason(), "Forbidden");
        assert!(
            text.contains("client client-1 of tenant tenant-1"),
            "{text}"
        );
        assert!(text.contains("invalid_client"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let busy = source.refused(reqwest::StatusCode::SERVICE_UNAVAILABLE, b"");
        assert!(busy.is_retryable());
    }
}
