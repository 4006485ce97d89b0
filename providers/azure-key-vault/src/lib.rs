//! Azure Key Vault secrets, through Microsoft's Rust SDK (`azure_security_keyvault_secrets`).
//!
//! One [`AzureKeyVaultProvider`] holds one SDK `SecretClient` (with the challenge flow of the
//! SDK's Key Vault bearer policy) over a reqwest client built here with exactly the trusted
//! roots the store names, and one token source (module `token`) for its principal: a service
//! principal (client secret), a workload identity (a ServiceAccount token as client assertion)
//! or a managed identity (IMDS at a configurable endpoint). The token is cached and renewed
//! five minutes before it expires, so Entra ID sees one request per token lifetime.
//!
//! Keys follow ESO: `secret/<name>` (or a bare name), `cert/<name>` (the certificate's DER) and
//! `key/<name>` (the public JWK as JSON); `property` is a JSON path into the value. `find` lists
//! every page, skips disabled secrets, and matches name and tags on the client.

mod certificate;
mod token;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::TryStreamExt;
use mooring_provider::{
    FindQuery, ProviderError, RemoteRef, SecretProvider, SecretValue, json_properties,
    select_property,
};
pub use token::AssertionSource;
use token::{Grant, TokenSource};
use zeroize::Zeroizing;

/// The IMDS endpoint of Azure VMs and AKS nodes.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// The Key Vault REST api-version of the raw `cert/` and `key/` reads.
const API_VERSION: &str = "7.5";
/// How long to wait for a TCP and TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most secrets one `find` returns.
pub const MAX_FIND_RESULTS: usize = 500;
/// The most secrets one `find` lists (400 pages of 25).
const MAX_FIND_LISTED: usize = 10_000;

/// Which Azure cloud (ESO's `environmentType`, or `customCloudConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cloud {
    /// `PublicCloud` (the default).
    #[default]
    Public,
    /// `USGovernmentCloud`.
    UsGovernment,
    /// `ChinaCloud`.
    China,
    /// `customCloudConfig`: an authority host, and optionally the Key Vault resource.
    Custom {
        /// `activeDirectoryEndpoint`, `https://login.example`.
        authority_host: String,
        /// `keyVaultEndpoint` (the token's resource); the public cloud's when absent.
        resource: Option<String>,
    },
}

impl Cloud {
    /// ESO's `environmentType` word.
    pub fn from_environment_type(word: &str) -> Result<Cloud, ProviderError> {
        match word {
            "" | "PublicCloud" => Ok(Cloud::Public),
            "USGovernmentCloud" => Ok(Cloud::UsGovernment),
            "ChinaCloud" => Ok(Cloud::China),
            other => Err(ProviderError::InvalidConfig(format!(
                "environmentType {other:?} is not PublicCloud, USGovernmentCloud or ChinaCloud (GermanCloud is discontinued; other clouds take customCloudConfig)"
            ))),
        }
    }

    /// Entra ID's host for this cloud.
    pub fn authority_host(&self) -> &str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com",
            Cloud::UsGovernment => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
            Cloud::Custom { authority_host, .. } => authority_host,
        }
    }

    /// The Key Vault resource tokens are requested for.
    pub fn resource(&self) -> &str {
        match self {
            Cloud::Public => "https://vault.azure.net",
            Cloud::UsGovernment => "https://vault.usgovcloudapi.net",
            Cloud::China => "https://vault.azure.cn",
            Cloud::Custom { resource, .. } => resource
                .as_deref()
                .map(|r| r.trim_end_matches('/'))
                .unwrap_or("https://vault.azure.net"),
        }
    }
}

/// How the agent authenticates to Azure, as ESO's `authType`.
#[derive(Clone)]
pub enum AuthType {
    /// A service principal with a client secret.
    ServicePrincipal {
        /// The application (client) id.
        client_id: String,
        /// The client secret.
        client_secret: Zeroizing<String>,
    },
    /// A service principal with a client certificate: a PEM bundle of the certificate and its
    /// RSA private key.
    ServicePrincipalCertificate {
        /// The application (client) id.
        client_id: String,
        /// The PEM bundle.
        certificate: Zeroizing<Vec<u8>>,
    },
    /// A managed identity over IMDS.
    ManagedIdentity {
        /// A user-assigned identity's client id or resource id; system-assigned when absent.
        identity_id: Option<String>,
        /// The IMDS endpoint, [`DEFAULT_IMDS_ENDPOINT`] unless the agent says otherwise.
        endpoint: String,
    },
    /// Workload identity: a federated ServiceAccount token exchanged as a client assertion.
    WorkloadIdentity {
        /// The application (client) id.
        client_id: String,
        /// The ServiceAccount tokens.
        assertions: Arc<dyn AssertionSource>,
    },
}

impl std::fmt::Debug for AuthType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthType::ServicePrincipal { client_id, .. } => f
                .debug_struct("ServicePrincipal")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            AuthType::ServicePrincipalCertificate { client_id, .. } => f
                .debug_struct("ServicePrincipalCertificate")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            AuthType::ManagedIdentity {
                identity_id,
                endpoint,
            } => f
                .debug_struct("ManagedIdentity")
                .field("identity_id", identity_id)
                .field("endpoint", endpoint)
                .finish(),
            AuthType::WorkloadIdentity { client_id, .. } => f
                .debug_struct("WorkloadIdentity")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
        }
    }
}

/// Plain configuration for one store.
#[derive(Clone, Debug)]
pub struct AzureConfig {
    /// `https://<name>.vault.azure.net`.
    pub vault_url: String,
    /// The Entra ID tenant; required for service principals and workload identity.
    pub tenant_id: Option<String>,
    /// How to authenticate.
    pub auth: AuthType,
    /// Which cloud: the authority and the token's resource.
    pub cloud: Cloud,
    /// Trust exactly these PEM CA certificates (for the vault, Entra ID and an https IMDS);
    /// the system's roots when absent.
    pub trusted_roots: Option<Vec<u8>>,
}

impl AzureConfig {
    /// Checks what can be checked without a network call.
    pub fn validate(&self) -> Result<(), ProviderError> {
        if !self.vault_url.starts_with("https://") {
            return Err(ProviderError::InvalidConfig(format!(
                "vaultUrl {:?} must be an https:// URL (Key Vault clients refuse plain HTTP)",
                self.vault_url
            )));
        }
        let needs_tenant = !matches!(self.auth, AuthType::ManagedIdentity { .. });
        if needs_tenant && self.tenant_id.as_deref().is_none_or(str::is_empty) {
            return Err(ProviderError::InvalidConfig(
                "tenantId is required for ServicePrincipal and WorkloadIdentity auth".into(),
            ));
        }
        if !self.cloud.authority_host().starts_with("https://") {
            return Err(ProviderError::InvalidConfig(format!(
                "customCloudConfig.activeDirectoryEndpoint {:?} must be an https:// URL",
                self.cloud.authority_host()
            )));
        }
        match &self.auth {
            AuthType::ServicePrincipal {
                client_id,
                client_secret,
            } if client_id.is_empty() || client_secret.is_empty() => {
                Err(ProviderError::InvalidConfig(
                    "ServicePrincipal needs a clientId and a clientSecret".into(),
                ))
            }
            AuthType::ServicePrincipalCertificate { client_id, .. } if client_id.is_empty() => Err(
                ProviderError::InvalidConfig("ServicePrincipal needs a clientId".into()),
            ),
            AuthType::WorkloadIdentity { client_id, .. } if client_id.is_empty() => Err(
                ProviderError::InvalidConfig("WorkloadIdentity needs a client id".into()),
            ),
            _ => Ok(()),
        }
    }
}

/// The object a `remoteRef.key` names (ESO's prefixes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ObjectKind {
    Secret,
    Certificate,
    Key,
}

/// Splits `secret/<name>`, `cert/<name>`, `key/<name>` or a bare name.
fn object_of(key: &str) -> Result<(ObjectKind, &str), ProviderError> {
    let (kind, name) = match key.split_once('/') {
        None => (ObjectKind::Secret, key),
        Some(("secret", name)) => (ObjectKind::Secret, name),
        Some(("cert", name)) => (ObjectKind::Certificate, name),
        Some(("key", name)) => (ObjectKind::Key, name),
        Some((other, _)) => {
            return Err(ProviderError::InvalidConfig(format!(
                "key {key:?}: the object type {other:?} is not secret, cert or key"
            )));
        }
    };
    let valid = !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return Err(ProviderError::InvalidConfig(format!(
            "key {key:?}: a Key Vault object name is 1-127 letters, digits and dashes"
        )));
    }
    Ok((kind, name))
}

/// An Azure Key Vault store.
pub struct AzureKeyVaultProvider {
    vault_url: String,
    http: reqwest::Client,
    client: SecretClient,
    tokens: Arc<TokenSource>,
    max_find_results: usize,
}

impl std::fmt::Debug for AzureKeyVaultProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureKeyVaultProvider")
            .field("vault_url", &self.vault_url)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// The most bytes of one Key Vault answer the SDK may read (a secret is at most 25 KiB, a page
/// of 25 items a few KiB).
const MAX_ANSWER: usize = 1 << 20;

/// The SDK's transport: the store's reqwest client, with every answer bounded.
#[derive(Debug)]
struct BoundedClient(reqwest::Client);

#[async_trait::async_trait]
impl azure_core::http::HttpClient for BoundedClient {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
        use futures::StreamExt as _;
        let response = self.0.execute_request(request).await?;
        let (status, headers, body) = response.deconstruct();
        let mut seen = 0usize;
        let bounded = body.map(move |chunk| {
            let chunk = chunk?;
            seen += chunk.len();
            if seen > MAX_ANSWER {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Io,
                    format!("Key Vault's answer is larger than {MAX_ANSWER} bytes"),
                ));
            }
            Ok(chunk)
        });
        Ok(azure_core::http::AsyncRawResponse::new(
            status,
            headers,
            Box::pin(bounded),
        ))
    }
}

/// The HTTP client of a store: rustls with the given roots (or the system's), no proxy from the
/// environment, bounded timeouts.
fn http_client(trusted_roots: Option<&[u8]>) -> Result<reqwest::Client, ProviderError> {
    let invalid = |e: reqwest::Error| {
        ProviderError::InvalidConfig(format!(
            "failed to build the Azure HTTP client: {}",
            error_chain(&e)
        ))
    };
    let builder = reqwest::Client::builder()
        .tls_backend_rustls()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    let builder = match trusted_roots {
        None => builder,
        Some(pem) => {
            let roots = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ProviderError::InvalidConfig(format!(
                    "the Azure CA bundle is not PEM: {}",
                    error_chain(&e)
                ))
            })?;
            if roots.is_empty() {
                return Err(ProviderError::InvalidConfig(
                    "the Azure CA bundle holds no certificate".into(),
                ));
            }
            builder.tls_certs_only(roots)
        }
    };
    builder.build().map_err(invalid)
}

impl AzureKeyVaultProvider {
    /// Builds the clients for `config`. No request is made until the first read.
    pub fn new(config: AzureConfig) -> Result<Self, ProviderError> {
        config.validate()?;
        let http = http_client(config.trusted_roots.as_deref())?;
        let tenant = config.tenant_id.clone().unwrap_or_default();
        let (client_id, grant) = match config.auth {
            AuthType::ServicePrincipal {
                client_id,
                client_secret,
            } => (client_id, Grant::ClientSecret(client_secret)),
            AuthType::ServicePrincipalCertificate {
                client_id,
                certificate,
            } => (
                client_id,
                Grant::Certificate(certificate::ClientCertificate::from_pem(&certificate)?),
            ),
            AuthType::WorkloadIdentity {
                client_id,
                assertions,
            } => (client_id, Grant::Assertion(assertions)),
            AuthType::ManagedIdentity {
                identity_id,
                endpoint,
            } => (
                identity_id.clone().unwrap_or_default(),
                Grant::ManagedIdentity {
                    endpoint,
                    identity_id,
                },
            ),
        };
        let tokens = Arc::new(TokenSource::new(
            http.clone(),
            config.cloud.authority_host(),
            tenant,
            client_id,
            config.cloud.resource().to_string(),
            grant,
        ));
        let options = SecretClientOptions {
            client_options: ClientOptions {
                transport: Some(Transport::new(Arc::new(BoundedClient(http.clone())))),
                // The agent retries with its own backoff; the SDK's default spends a minute.
                retry: RetryOptions::none(),
                ..Default::default()
            },
            // The token is always for the cloud's Key Vault resource (the TokenSource ignores
            // the challenge's scope), so the check that the challenge names a vault domain is
            // not needed, and a vault on another host (tests, private endpoints) works.
            verify_challenge_resource: Some(false),
            ..Default::default()
        };
        let credential: Arc<dyn azure_core::credentials::TokenCredential> = tokens.clone();
        let client = SecretClient::new(&config.vault_url, credential, Some(options))
            .map_err(|e| ProviderError::InvalidConfig(format!("vaultUrl: {e}")))?;
        Ok(AzureKeyVaultProvider {
            vault_url: config.vault_url.trim_end_matches('/').to_string(),
            http,
            client,
            tokens,
            max_find_results: MAX_FIND_RESULTS,
        })
    }

    /// Gets the store's token now, so a refused login is reported when connecting.
    pub async fn authenticate(&self) -> Result<(), ProviderError> {
        self.token_for(&self.vault_url).await
    }

    /// A current token, or the refusal naming what was being read (`key`, or the vault).
    async fn token_for(&self, key: &str) -> Result<(), ProviderError> {
        match self.tokens.current().await {
            Ok(_) => Ok(()),
            Err(ProviderError::PermissionDenied { detail, .. }) => {
                Err(ProviderError::PermissionDenied {
                    key: key.to_string(),
                    detail,
                })
            }
            Err(other) => Err(other),
        }
    }

    /// The same provider with another bound on `find` results.
    pub fn with_max_find_results(mut self, max: usize) -> Self {
        self.max_find_results = max;
        self
    }

    /// The whole value `reference` names.
    async fn read(&self, reference: &RemoteRef) -> Result<Vec<u8>, ProviderError> {
        let (kind, name) = object_of(&reference.key)?;
        self.token_for(&reference.key).await?;
        match kind {
            ObjectKind::Secret => self.read_secret(&reference.key, name, reference).await,
            ObjectKind::Certificate => {
                let bundle = self
                    .raw_get(&reference.key, "certificates", name, reference)
                    .await?;
                let cer = bundle
                    .get("cer")
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| ProviderError::NotFound {
                        key: reference.key.clone(),
                        detail: "the certificate has no cer".into(),
                    })?;
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(cer)
                    .map_err(|_| ProviderError::Unavailable {
                        detail: format!("the cer of {:?} is not base64", reference.key),
                        source: None,
                    })
            }
            ObjectKind::Key => {
                let bundle = self
                    .raw_get(&reference.key, "keys", name, reference)
                    .await?;
                let key = bundle.get("key").ok_or_else(|| ProviderError::NotFound {
                    key: reference.key.clone(),
                    detail: "the key bundle has no key".into(),
                })?;
                Ok(key.to_string().into_bytes())
            }
        }
    }

    /// The tags of the object `reference` names, as a JSON object.
    async fn read_tags(&self, reference: &RemoteRef) -> Result<Vec<u8>, ProviderError> {
        let (kind, name) = object_of(&reference.key)?;
        self.token_for(&reference.key).await?;
        let tags: BTreeMap<String, String> = match kind {
            ObjectKind::Secret => {
                let options = SecretClientGetSecretOptions {
                    secret_version: reference.version.clone().filter(|v| !v.is_empty()),
                    ..Default::default()
                };
                let response = match self.client.get_secret(name, Some(options)).await {
                    Ok(response) => response,
                    Err(error) => return Err(self.classify(&reference.key, &error).await),
                };
                let mut secret = response
                    .into_model()
                    .map_err(|_| ProviderError::Unavailable {
                        detail: format!(
                            "Key Vault's answer for {:?} is not a secret bundle",
                            reference.key
                        ),
                        source: None,
                    })?;
                if let Some(value) = secret.value.as_mut() {
                    zeroize::Zeroize::zeroize(value);
                }
                secret.tags.unwrap_or_default().into_iter().collect()
            }
            ObjectKind::Certificate | ObjectKind::Key => {
                let collection = if kind == ObjectKind::Key {
                    "keys"
                } else {
                    "certificates"
                };
                let bundle = self
                    .raw_get(&reference.key, collection, name, reference)
                    .await?;
                bundle
                    .get("tags")
                    .and_then(serde_json::Value::as_object)
                    .map(|tags| {
                        tags.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default()
            }
        };
        serde_json::to_vec(&tags).map_err(|_| ProviderError::Unavailable {
            detail: format!("failed to encode the tags of {:?}", reference.key),
            source: None,
        })
    }

    async fn read_secret(
        &self,
        key: &str,
        name: &str,
        reference: &RemoteRef,
    ) -> Result<Vec<u8>, ProviderError> {
        let options = SecretClientGetSecretOptions {
            secret_version: reference.version.clone().filter(|v| !v.is_empty()),
            ..Default::default()
        };
        let response = self.client.get_secret(name, Some(options)).await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return Err(self.classify(key, &error).await),
        };
        let secret = response
            .into_model()
            .map_err(|_| ProviderError::Unavailable {
                detail: format!("Key Vault's answer for {key:?} is not a secret bundle"),
                source: None,
            })?;
        secret
            .value
            .map(String::into_bytes)
            .ok_or_else(|| ProviderError::NotFound {
                key: key.to_string(),
                detail: "the secret has no value".into(),
            })
    }

    /// `GET {vault}/{collection}/{name}/{version}` with the store's token (certificates and
    /// keys: ESO's `cert/` and `key/`, which the secrets SDK does not serve).
    async fn raw_get(
        &self,
        key: &str,
        collection: &str,
        name: &str,
        reference: &RemoteRef,
    ) -> Result<serde_json::Value, ProviderError> {
        let token = self.tokens.bearer().await?;
        let version = reference.version.as_deref().unwrap_or_default();
        if !version.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ProviderError::InvalidConfig(format!(
                "key {key:?}: version {version:?} is not a Key Vault version"
            )));
        }
        let url = format!(
            "{}/{collection}/{name}/{version}?api-version={API_VERSION}",
            self.vault_url
        );
        let response = self
            .http
            .get(url)
            .bearer_auth(token.as_str())
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| unreachable(key, &e))?;
        let status = response.status();
        let body = token::read_bounded(response)
            .await
            .map_err(|e| unreachable(key, &e))?;
        if !status.is_success() {
            let (code, inner, message) = error_body(&body);
            if status == reqwest::StatusCode::UNAUTHORIZED {
                self.tokens.forget().await;
            }
            return Err(classify_status(
                key,
                status.as_u16(),
                code.as_deref(),
                inner.as_deref(),
                message.as_deref(),
            ));
        }
        serde_json::from_slice(&body).map_err(|_| ProviderError::Unavailable {
            detail: format!("Key Vault's answer for {key:?} is not JSON"),
            source: None,
        })
    }

    /// Maps an SDK error to the contract's classes, from its status and Key Vault error code;
    /// never its body beyond the error's code and message.
    async fn classify(&self, key: &str, error: &azure_core::Error) -> ProviderError {
        use azure_core::error::ErrorKind;
        match error.kind() {
            ErrorKind::HttpResponse {
                status,
                error_code,
                raw_response,
            } => {
                let (code, inner, message) = raw_response
                    .as_ref()
                    .map(|r| error_body(r.body().as_ref()))
                    .unwrap_or_default();
                let status = u16::from(*status);
                if status == 401 {
                    self.tokens.forget().await;
                }
                classify_status(
                    key,
                    status,
                    code.as_deref().or(error_code.as_deref()),
                    inner.as_deref(),
                    message.as_deref(),
                )
            }
            ErrorKind::Credential => ProviderError::PermissionDenied {
                key: key.to_string(),
                detail: error.to_string(),
            },
            // A decoding error may quote what it could not decode: never printed.
            ErrorKind::DataConversion => ProviderError::Unavailable {
                detail: format!(
                    "Key Vault {}'s answer for {key:?} could not be decoded",
                    self.vault_url
                ),
                source: None,
            },
            ErrorKind::Connection | ErrorKind::Io => ProviderError::Unavailable {
                detail: format!(
                    "failed to reach Key Vault {} for {key:?}: {}",
                    self.vault_url,
                    error_chain(error)
                ),
                source: None,
            },
            _ => ProviderError::Unavailable {
                detail: format!(
                    "failed to read {key:?} from Key Vault {}: {}",
                    self.vault_url,
                    error_chain(error)
                ),
                source: None,
            },
        }
    }

    /// The names (and tags) of the enabled secrets `query` selects, over every page.
    async fn list_matching(&self, query: &FindQuery) -> Result<Vec<String>, ProviderError> {
        self.token_for(&self.vault_url).await?;
        let pager = self
            .client
            .list_secret_properties(None)
            .map_err(|e| ProviderError::InvalidConfig(format!("failed to list secrets: {e}")))?;
        let mut pager = std::pin::pin!(pager);
        let mut names = Vec::new();
        let mut listed = 0usize;
        loop {
            let item = match pager.try_next().await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(error) => return Err(self.classify("", &error).await),
            };
            listed += 1;
            if listed > MAX_FIND_LISTED {
                return Err(ProviderError::InvalidConfig(format!(
                    "find had to list more than {MAX_FIND_LISTED} secrets"
                )));
            }
            let Some(name) = item
                .id
                .as_deref()
                .and_then(|id| id.rsplit_once("/secrets/"))
                .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_string())
            else {
                continue;
            };
            if item
                .attributes
                .as_ref()
                .and_then(|a| a.enabled)
                .is_some_and(|enabled| !enabled)
            {
                continue;
            }
            // Key Vault has no folders: `find.path`, when set, is a name prefix.
            if let Some(path) = query.path.as_deref()
                && !name.starts_with(path)
            {
                continue;
            }
            if !query.matches_name(&name) {
                continue;
            }
            let tags: BTreeMap<String, String> =
                item.tags.unwrap_or_else(HashMap::new).into_iter().collect();
            if !query.matches_tags(&tags) {
                continue;
            }
            names.push(name);
            let bound = self.max_find_results.min(query.limits.results);
            if names.len() > bound {
                return Err(ProviderError::InvalidConfig(format!(
                    "find selects more than {bound} secrets; narrow find.name.regexp or find.tags"
                )));
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}

/// The class of a Key Vault (or Entra) answer by its status and codes.
fn classify_status(
    key: &str,
    status: u16,
    code: Option<&str>,
    inner: Option<&str>,
    message: Option<&str>,
) -> ProviderError {
    let mut detail = format!("Key Vault answered {status}");
    for part in [code, inner].into_iter().flatten() {
        detail.push(' ');
        detail.push_str(part);
    }
    if let Some(message) = message {
        let message: String = message.chars().take(300).collect();
        detail.push_str(": ");
        detail.push_str(&message);
    }
    match status {
        404 => ProviderError::NotFound {
            key: key.to_string(),
            detail,
        },
        401 | 403 => ProviderError::PermissionDenied {
            key: key.to_string(),
            detail,
        },
        400 => ProviderError::InvalidConfig(format!("{key:?}: {detail}")),
        _ => ProviderError::Unavailable {
            detail: format!("failed to read {key:?}: {detail}"),
            source: None,
        },
    }
}

/// `{"error":{"code","message","innererror":{"code"}}}`: the code, inner code and message.
fn error_body(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None, None);
    };
    let error = &parsed["error"];
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    (
        text(&error["code"]),
        text(&error["innererror"]["code"]),
        text(&error["message"]),
    )
}

fn unreachable(key: &str, error: &reqwest::Error) -> ProviderError {
    ProviderError::Unavailable {
        detail: format!(
            "failed to reach Key Vault for {key:?}: {}",
            error_chain(error)
        ),
        source: None,
    }
}

/// An error and its causes on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[async_trait::async_trait]
impl SecretProvider for AzureKeyVaultProvider {
    async fn get(&self, reference: &RemoteRef) -> Result<SecretValue, ProviderError> {
        select_property(reference, self.read(reference).await?)
    }

    async fn get_map(
        &self,
        reference: &RemoteRef,
    ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        let (kind, _) = object_of(&reference.key)?;
        if kind != ObjectKind::Secret {
            return Err(ProviderError::InvalidConfig(format!(
                "dataFrom.extract of {:?}: only secrets can be extracted (as ESO)",
                reference.key
            )));
        }
        let document = SecretValue::new(self.read(reference).await?);
        json_properties(&reference.key, document.expose())
    }

    async fn find(
        &self,
        query: &FindQuery,
    ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        let names = self.list_matching(query).await?;
        let mut values = BTreeMap::new();
        for name in names {
            match self.read_secret(&name, &name, &RemoteRef::key(&name)).await {
                Ok(bytes) => {
                    values.insert(name, SecretValue::new(bytes));
                }
                // Deleted or disabled since it was listed.
                Err(ProviderError::NotFound { .. }) => {}
                Err(ProviderError::PermissionDenied { detail, .. })
                    if detail.contains("SecretDisabled") => {}
                Err(other) => return Err(other),
            }
        }
        Ok(values)
    }

    async fn get_metadata(&self, reference: &RemoteRef) -> Result<SecretValue, ProviderError> {
        Ok(SecretValue::new(self.read_tags(reference).await?))
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        self.token_for(&self.vault_url).await?;
        // A read of a name that cannot exist proves the vault answers and takes the token:
        // 404 is success, 403 (no access to that name) still proves the login.
        match self
            .read_secret(
                "mooring-validate-probe",
                "mooring-validate-probe",
                &RemoteRef::default(),
            )
            .await
        {
            Ok(_) | Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(ProviderError::PermissionDenied { detail, .. })
                if detail.starts_with("Key Vault answered 403") =>
            {
                Ok(())
            }
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, tenant: Option<&str>, auth: AuthType) -> AzureConfig {
        AzureConfig {
            vault_url: url.into(),
            tenant_id: tenant.map(str::to_string),
            auth,
            cloud: Cloud::Public,
            trusted_roots: None,
        }
    }

    fn sp() -> AuthType {
        AuthType::ServicePrincipal {
            client_id: "app".into(),
            client_secret: Zeroizing::new("s".into()),
        }
    }

    #[test]
    fn https_url_and_tenant_are_required() {
        assert!(
            config("https://kv.vault.azure.net", Some("t"), sp())
                .validate()
                .is_ok()
        );
        let http = config("http://kv.vault.azure.net", Some("t"), sp()).validate();
        assert!(http.unwrap_err().to_string().contains("https://"));
        let no_tenant = config("https://kv.vault.azure.net", None, sp()).validate();
        assert!(no_tenant.unwrap_err().to_string().contains("tenantId"));
        let mi = config(
            "https://kv.vault.azure.net",
            None,
            AuthType::ManagedIdentity {
                identity_id: None,
                endpoint: DEFAULT_IMDS_ENDPOINT.into(),
            },
        );
        assert!(mi.validate().is_ok());
    }

    #[test]
    fn keys_select_the_object_as_eso() {
        assert_eq!(object_of("db").unwrap(), (ObjectKind::Secret, "db"));
        assert_eq!(object_of("secret/db").unwrap(), (ObjectKind::Secret, "db"));
        assert_eq!(
            object_of("cert/tls").unwrap(),
            (ObjectKind::Certificate, "tls")
        );
        assert_eq!(object_of("key/sign").unwrap(), (ObjectKind::Key, "sign"));
        assert_eq!(object_of("blob/x").unwrap_err().reason(), "InvalidConfig");
        assert_eq!(object_of("a/b/c").unwrap_err().reason(), "InvalidConfig");
        assert_eq!(object_of("secret/").unwrap_err().reason(), "InvalidConfig");
    }

    #[test]
    fn clouds_have_their_authority_and_resource() {
        let gov = Cloud::from_environment_type("USGovernmentCloud").unwrap();
        assert_eq!(gov.authority_host(), "https://login.microsoftonline.us");
        assert_eq!(gov.resource(), "https://vault.usgovcloudapi.net");
        let china = Cloud::from_environment_type("ChinaCloud").unwrap();
        assert_eq!(china.resource(), "https://vault.azure.cn");
        assert!(Cloud::from_environment_type("GermanCloud").is_err());
        let custom = Cloud::Custom {
            authority_host: "https://login.example".into(),
            resource: None,
        };
        assert_eq!(custom.resource(), "https://vault.azure.net");
    }

    #[test]
    fn answers_are_classified_by_status() {
        let not_found = classify_status("k", 404, Some("SecretNotFound"), None, Some("gone"));
        assert_eq!(not_found.reason(), "NotFound");
        let rbac = classify_status("k", 403, Some("Forbidden"), Some("ForbiddenByRbac"), None);
        assert_eq!(rbac.reason(), "Forbidden");
        assert!(rbac.to_string().contains("ForbiddenByRbac"));
        assert_eq!(
            classify_status("k", 400, None, None, None).reason(),
            "InvalidConfig"
        );
        assert!(classify_status("k", 503, None, None, None).is_retryable());
    }
}
