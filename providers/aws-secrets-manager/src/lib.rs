//! AWS Secrets Manager secrets, through the AWS SDK for Rust.
//!
//! One [`AwsSecretsManagerProvider`] holds one SDK client (its connection pool) and one
//! credential chain for a store: static keys or a web identity (ESO's `auth.jwt`), optionally
//! an assumed role (`role`, `externalID`). Temporary credentials are reused until two thirds of
//! their lifetime, so STS sees one call per lifetime, not one per read. `find` lists with
//! server-side filters, filters exactly on the client, and reads the values with
//! `BatchGetSecretValue`, 20 secrets per call.

mod credentials;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::Credentials;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
pub use credentials::{AssumeRole, WebIdentity, WebIdentityTokenSource};
use credentials::{Base, ChainProvider, CredentialChain};
use mooring_provider::{
    FindQuery, ProviderError, RemoteRef, SecretProvider, SecretValue, json_properties,
    select_property,
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
#[derive(Clone, Debug, Default)]
pub struct AwsConfig {
    /// The region (`eu-west-1`).
    pub region: String,
    /// An endpoint override (tests, VPC endpoints) for Secrets Manager and STS; the regional
    /// endpoints when absent.
    pub endpoint_url: Option<String>,
    /// Static credentials. With neither these nor `web_identity`, the SDK's default chain.
    pub credentials: Option<StaticCredentials>,
    /// Web identity credentials (ESO's `auth.jwt`); takes precedence over `credentials`, as in
    /// ESO.
    pub web_identity: Option<WebIdentity>,
    /// A role assumed with the base credentials (ESO's `role`).
    pub assume_role: Option<AssumeRole>,
}

/// The most secrets one `find` may return: a find that selects more is refused rather than
/// reading (and paying for) an unbounded part of the account.
pub const MAX_FIND_RESULTS: usize = 500;

/// The most secrets one `find` may list before filtering on the client (100 pages).
const MAX_FIND_LISTED: usize = 10_000;

/// `BatchGetSecretValue` takes at most 20 secret ids per call.
const BATCH_SIZE: usize = 20;

/// An AWS Secrets Manager store.
pub struct AwsSecretsManagerProvider {
    client: Client,
    chain: Arc<CredentialChain>,
    max_find_results: usize,
}

impl AwsSecretsManagerProvider {
    /// Builds the SDK client for `config`. No request is made until the first read.
    pub async fn new(config: AwsConfig) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()));
        if let Some(endpoint) = &config.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let base = match (config.web_identity, config.credentials) {
            (Some(identity), _) => Base::WebIdentity(identity),
            (None, Some(keys)) => Base::Static(Credentials::new(
                keys.access_key_id,
                keys.secret_access_key,
                keys.session_token,
                None,
                "mooring-store",
            )),
            (None, None) => {
                let sdk = aws_config::defaults(BehaviorVersion::latest())
                    .region(Region::new(config.region.clone()))
                    .load()
                    .await;
                Base::DefaultChain(sdk.credentials_provider())
            }
        };
        let chain = Arc::new(
            CredentialChain::new(
                base,
                config.assume_role,
                &config.region,
                config.endpoint_url.as_deref(),
            )
            .await,
        );
        // The chain keeps (and refreshes) the credentials; an SDK cache on top would only hide
        // when they change.
        loader = loader
            .credentials_provider(ChainProvider(Arc::clone(&chain)))
            .identity_cache(aws_config::identity::IdentityCache::no_cache());
        AwsSecretsManagerProvider {
            client: Client::new(&loader.load().await),
            chain,
            max_find_results: MAX_FIND_RESULTS,
        }
    }

    /// Gets the store's credentials now (static keys at once; STS for web identity or a role),
    /// so a refused exchange is reported when connecting, as a failed login, rather than by
    /// the first read.
    pub async fn authenticate(&self) -> Result<(), ProviderError> {
        self.chain.current().await.map(|_| ())
    }

    /// The same provider with another bound on `find` results (tests; a smaller bound for a
    /// store whose finds should stay small).
    pub fn with_max_find_results(mut self, max: usize) -> Self {
        self.max_find_results = max;
        self
    }

    async fn read(&self, reference: &RemoteRef) -> Result<Vec<u8>, ProviderError> {
        self.chain.current().await?;
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

impl AwsSecretsManagerProvider {
    /// The names of the secrets `query` selects: `ListSecrets` narrowed on the server (name
    /// prefix from `path`, tag keys and values), then filtered exactly here, because AWS matches
    /// filter values as prefixes and ORs the values of one key, so it cannot pair a tag's key
    /// with its value.
    async fn list_matching(&self, query: &FindQuery) -> Result<Vec<String>, ProviderError> {
        let mut filters = Vec::new();
        if let Some(path) = query.path.as_deref().filter(|p| !p.is_empty()) {
            filters.push(filter(FilterNameStringType::Name, [path.to_string()]));
        }
        if !query.tags.is_empty() {
            filters.push(filter(
                FilterNameStringType::TagKey,
                query.tags.keys().cloned(),
            ));
            filters.push(filter(
                FilterNameStringType::TagValue,
                query.tags.values().cloned(),
            ));
        }
        let mut names = Vec::new();
        let mut listed = 0usize;
        let mut next: Option<String> = None;
        loop {
            let page = self
                .client
                .list_secrets()
                .set_filters(Some(filters.clone()))
                .max_results(100)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|error| classify(query.path.as_deref().unwrap_or_default(), error))?;
            for entry in page.secret_list.unwrap_or_default() {
                listed += 1;
                let Some(name) = entry.name else { continue };
                if let Some(path) = &query.path
                    && !name.starts_with(path.as_str())
                {
                    continue;
                }
                if !query.matches_name(&name) {
                    continue;
                }
                let tags: BTreeMap<String, String> = entry
                    .tags
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|t| Some((t.key?, t.value.unwrap_or_default())))
                    .collect();
                if !query.matches_tags(&tags) {
                    continue;
                }
                names.push(name);
                if names.len() > self.max_find_results {
                    return Err(ProviderError::InvalidConfig(format!(
                        "find selects more than {} secrets; narrow find.path, find.name.regexp or find.tags",
                        self.max_find_results
                    )));
                }
            }
            next = page.next_token.filter(|t| !t.is_empty());
            if next.is_none() {
                break;
            }
            if listed >= MAX_FIND_LISTED {
                return Err(ProviderError::InvalidConfig(format!(
                    "find had to list more than {MAX_FIND_LISTED} secrets; set find.path (a name prefix) or find.tags so AWS can narrow the listing"
                )));
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The current values of `names`, 20 per `BatchGetSecretValue` call. A secret deleted since
    /// it was listed is left out; any other per-secret error fails the whole find, naming it.
    async fn batch_read(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        let mut values = BTreeMap::new();
        for chunk in names.chunks(BATCH_SIZE) {
            let mut next: Option<String> = None;
            // At most a few pages for 20 ids; bounded so a misbehaving server cannot loop us.
            for _ in 0..BATCH_SIZE {
                let output = self
                    .client
                    .batch_get_secret_value()
                    .set_secret_id_list(Some(chunk.to_vec()))
                    .set_next_token(next.take())
                    .send()
                    .await
                    .map_err(|error| classify(&chunk[0], error))?;
                for error in output.errors.unwrap_or_default() {
                    let id = error.secret_id.unwrap_or_default();
                    let code = error.error_code.unwrap_or_default();
                    match code.as_str() {
                        "ResourceNotFoundException" => continue,
                        "AccessDeniedException" | "DecryptionFailure" => {
                            return Err(ProviderError::PermissionDenied {
                                key: id,
                                detail: code,
                            });
                        }
                        _ => {
                            return Err(ProviderError::Unavailable {
                                detail: format!(
                                    "failed to read {id:?} from AWS Secrets Manager ({code})"
                                ),
                                source: None,
                            });
                        }
                    }
                }
                for entry in output.secret_values.unwrap_or_default() {
                    let Some(name) = entry.name else { continue };
                    let bytes = if let Some(text) = entry.secret_string {
                        text.into_bytes()
                    } else if let Some(binary) = entry.secret_binary {
                        binary.into_inner()
                    } else {
                        continue;
                    };
                    values.insert(name, SecretValue::new(bytes));
                }
                next = output.next_token.filter(|t| !t.is_empty());
                if next.is_none() {
                    break;
                }
            }
        }
        Ok(values)
    }
}

/// One `ListSecrets` filter.
fn filter(key: FilterNameStringType, values: impl IntoIterator<Item = String>) -> Filter {
    Filter::builder()
        .key(key)
        .set_values(Some(values.into_iter().collect()))
        .build()
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

    async fn find(
        &self,
        query: &FindQuery,
    ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        self.chain.current().await?;
        let names = self.list_matching(query).await?;
        self.batch_read(&names).await
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        self.chain.current().await?;
        self.client
            .list_secrets()
            .max_results(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|error| classify("", error))
    }
}
