//! Vault and OpenBao KV secrets (v1 and v2), through vaultrs.
//!
//! One [`VaultProvider`] holds one authenticated client for a store and reuses it for every read:
//! it logs in once (token, AppRole or Kubernetes auth) and the agent keeps it until shortly
//! before the token's lease ends, so there is no login per reconcile (ESO's #376).
//!
//! The HTTP client is built here, not from vaultrs's settings: those fall back to `VAULT_CACERT`,
//! `VAULT_CAPATH`, `VAULT_SKIP_VERIFY` and `VAULT_CLIENT_CERT` of the agent's environment, which
//! would apply one operator setting to every tenant's store. A store trusts the system roots, or
//! with a `caBundle`/`caProvider` exactly the CAs it names ([`ServerTrust`]).

use std::collections::BTreeMap;
use std::time::Duration;

use mooring_provider::{
    FindQuery, ProviderError, RemoteRef, SecretProvider, SecretValue, json_properties,
    select_property,
};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

/// The KV engine version of the mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvVersion {
    /// KV v1: unversioned.
    V1,
    /// KV v2: versioned (the default, as in ESO).
    #[default]
    V2,
}

/// Plain configuration, resolved by the agent from a SecretStore and its credential Secrets.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// The server URL (`https://vault.example:8200`).
    pub server: String,
    /// The KV mount (ESO's `path`, for example `secret`); empty: the first segment of each key.
    pub mount: String,
    /// The KV engine version.
    pub version: KvVersion,
    /// The Vault Enterprise / OpenBao namespace, if any.
    pub namespace: Option<String>,
}

/// Why `server` must not carry credentials, if it must not: it is `https://`, or `http://` to
/// a loopback host (a dev server, a local proxy or agent); anything else is refused. Every
/// request carries the token (and a login the AppRole secret id or the ServiceAccount JWT),
/// which over plain http to another host would cross the network in clear; git credentials
/// follow the same rule.
pub fn insecure_server(server: &str) -> Option<String> {
    let Ok(url) = reqwest::Url::parse(server) else {
        return Some("is not a URL (use https://host:port)".into());
    };
    match url.scheme() {
        "https" => None,
        "http" if url.host_str().is_some_and(is_loopback) => None,
        "http" => Some(
            "plain http is allowed only to a loopback host (the token would cross the network in clear); use https"
                .into(),
        ),
        other => Some(format!("scheme {other:?} is not https")),
    }
}

/// `localhost`, `127.0.0.0/8` or `[::1]` (a URL's host, IPv6 in brackets).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Which certificate authorities the client accepts for an `https` server.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum ServerTrust {
    /// The system's roots (no `caBundle` or `caProvider` in the store).
    #[default]
    SystemRoots,
    /// Only the CA certificates of this PEM bundle, none of the system's.
    Only(Vec<u8>),
}

impl ServerTrust {
    /// Trust exactly the certificates of a PEM bundle; `field` names where it came from in errors.
    pub fn from_pem(pem: &[u8], field: &str) -> Result<ServerTrust, ProviderError> {
        let certificates = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
            ProviderError::InvalidConfig(format!("{field} is not a PEM certificate bundle: {e}"))
        })?;
        if certificates.is_empty() {
            return Err(ProviderError::InvalidConfig(format!(
                "{field} holds no PEM certificate"
            )));
        }
        Ok(ServerTrust::Only(pem.to_vec()))
    }
}

impl std::fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerTrust::SystemRoots => f.write_str("SystemRoots"),
            ServerTrust::Only(pem) => write!(f, "Only(<PEM bundle, {} bytes>)", pem.len()),
        }
    }
}

/// How long to wait for a TCP and TLS connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client for `server`: rustls with the roots `trust` names, no client certificate,
/// nothing taken from the environment.
fn http_client(server: &str, trust: &ServerTrust) -> Result<reqwest::Client, ProviderError> {
    let invalid =
        |e: reqwest::Error| ProviderError::InvalidConfig(format!("vault server {server:?}: {e}"));
    // Bounded: a server that accepts and never answers must not hold a reconcile (and its
    // store's refresh turn) forever; vaultrs sets no timeout.
    // No proxy from the environment (HTTPS_PROXY would see every token), and no redirects: the
    // token header is not one reqwest strips across origins, so a redirect to another host (or
    // to plain http) would hand it over. Vault answers API calls directly; a 3xx is an error.
    let builder = reqwest::Client::builder()
        .tls_backend_rustls()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    let builder = match trust {
        // Plain http needs no roots; the platform verifier is not even set up (as vaultrs does,
        // reqwest#2988).
        _ if server.starts_with("http://") => builder.tls_certs_only(Vec::new()),
        ServerTrust::SystemRoots => builder,
        ServerTrust::Only(pem) => {
            builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(pem).map_err(invalid)?)
        }
    };
    builder.build().map_err(invalid)
}

/// Whether a request failed because the server's certificate was refused (unknown CA, wrong
/// name, expired): rustls says "invalid peer certificate" somewhere in the chain.
fn is_untrusted_certificate(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.to_string().contains("invalid peer certificate") {
            return true;
        }
        current = e.source();
    }
    false
}

/// An unreachable server, saying so plainly when its certificate was not trusted.
fn unavailable(server: &str, what: String, error: ClientError) -> ProviderError {
    let detail = if is_untrusted_certificate(&error) {
        format!(
            "{what}: the TLS certificate of vault server {server} is not trusted (check spec.provider.vault.caBundle / caProvider)"
        )
    } else {
        what
    };
    ProviderError::Unavailable {
        detail,
        source: Some(Box::new(error)),
    }
}

/// How to log in. Credentials are held only until the login is done.
#[derive(Clone)]
pub enum VaultAuth {
    /// A static token.
    Token(String),
    /// AppRole: `auth/<mount>/login` with a role id and a secret id.
    AppRole {
        /// The auth mount (`approle`).
        mount: String,
        /// The role id.
        role_id: String,
        /// The secret id.
        secret_id: String,
    },
    /// Kubernetes: `auth/<mount>/login` with a ServiceAccount token (JWT).
    Kubernetes {
        /// The auth mount (`kubernetes`).
        mount: String,
        /// The Vault role.
        role: String,
        /// The ServiceAccount token.
        jwt: String,
    },
}

impl std::fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VaultAuth::Token(_) => f.write_str("Token(<redacted>)"),
            VaultAuth::AppRole { mount, .. } => write!(f, "AppRole {{ mount: {mount:?} }}"),
            VaultAuth::Kubernetes { mount, role, .. } => {
                write!(f, "Kubernetes {{ mount: {mount:?}, role: {role:?} }}")
            }
        }
    }
}

/// A Vault or OpenBao store.
pub struct VaultProvider {
    client: VaultClient,
    config: VaultConfig,
    lease: Option<Duration>,
}

impl VaultProvider {
    /// Logs in with `auth`, trusting the system roots, and returns a provider holding the
    /// resulting token.
    pub async fn login(config: VaultConfig, auth: &VaultAuth) -> Result<Self, ProviderError> {
        Self::login_trusting(config, ServerTrust::SystemRoots, auth).await
    }

    /// Logs in with `auth`, accepting the server certificates `trust` allows.
    pub async fn login_trusting(
        config: VaultConfig,
        trust: ServerTrust,
        auth: &VaultAuth,
    ) -> Result<Self, ProviderError> {
        let (mount, info) = match auth {
            VaultAuth::Token(token) => return Self::with_token_trusting(config, trust, token),
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                let anonymous = Self::with_token_trusting(config.clone(), trust.clone(), "")?;
                let info =
                    vaultrs::auth::approle::login(&anonymous.client, mount, role_id, secret_id)
                        .await;
                (mount, info)
            }
            VaultAuth::Kubernetes { mount, role, jwt } => {
                let anonymous = Self::with_token_trusting(config.clone(), trust.clone(), "")?;
                let info =
                    vaultrs::auth::kubernetes::login(&anonymous.client, mount, role, jwt).await;
                (mount, info)
            }
        };
        let info = info.map_err(|error| classify_login(&config.server, mount, error))?;
        let mut provider = Self::with_token_trusting(config, trust, &info.client_token)?;
        provider.lease =
            (info.lease_duration > 0).then(|| Duration::from_secs(info.lease_duration));
        Ok(provider)
    }

    /// How long the login's token lives, if it expires (static tokens: `None`).
    pub fn lease(&self) -> Option<Duration> {
        self.lease
    }

    /// A provider that authenticates with `token`, trusting the system roots.
    pub fn with_token(config: VaultConfig, token: &str) -> Result<Self, ProviderError> {
        Self::with_token_trusting(config, ServerTrust::SystemRoots, token)
    }

    /// A provider that authenticates with `token`, accepting the certificates `trust` allows.
    pub fn with_token_trusting(
        config: VaultConfig,
        trust: ServerTrust,
        token: &str,
    ) -> Result<Self, ProviderError> {
        if let Some(why) = insecure_server(&config.server) {
            return Err(ProviderError::InvalidConfig(format!(
                "vault server {:?}: {why}",
                config.server
            )));
        }
        let mut settings = VaultClientSettingsBuilder::default();
        // Explicit, so vaultrs reads none of them from the agent's environment.
        settings
            .address(&config.server)
            .token(token)
            .verify(true)
            .ca_certs(Vec::new())
            .identity(None);
        if let Some(namespace) = &config.namespace {
            settings.namespace(Some(namespace.clone()));
        }
        let settings = settings.build().map_err(|e| {
            ProviderError::InvalidConfig(format!("vault server {:?}: {e}", config.server))
        })?;
        let mut client = VaultClient::new(settings).map_err(|e| {
            ProviderError::InvalidConfig(format!("vault server {:?}: {e}", config.server))
        })?;
        // vaultrs's own client would add the system roots to a store's CA; replace it.
        let http = http_client(&config.server, &trust)?;
        client.http =
            rustify::clients::reqwest::Client::new(client.settings.address.as_str(), http);
        Ok(VaultProvider {
            client,
            config,
            lease: None,
        })
    }

    /// Reads the secret at `reference.key` as its map of fields.
    async fn read_fields(
        &self,
        reference: &RemoteRef,
    ) -> Result<BTreeMap<String, serde_json::Value>, ProviderError> {
        let (mount, key) = mount_and_path(&self.config, &reference.key);
        self.read_at(&mount, &key, reference.version.as_deref())
            .await
    }

    /// Reads the secret at `key` inside `mount`, at `version` (KV v2) or the current one.
    async fn read_at(
        &self,
        mount: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<BTreeMap<String, serde_json::Value>, ProviderError> {
        let result = match (self.config.version, version) {
            (KvVersion::V2, None) => vaultrs::kv2::read(&self.client, mount, key).await,
            (KvVersion::V2, Some(version)) => {
                let number = version.parse::<u64>().map_err(|_| {
                    ProviderError::InvalidConfig(format!(
                        "version {version:?} of {key:?} is not a KV v2 version number"
                    ))
                })?;
                vaultrs::kv2::read_version(&self.client, mount, key, number).await
            }
            (KvVersion::V1, None) => vaultrs::kv1::get(&self.client, mount, key).await,
            (KvVersion::V1, Some(_)) => {
                return Err(ProviderError::InvalidConfig(format!(
                    "{key:?}: a KV v1 mount has no versions"
                )));
            }
        };
        result.map_err(|error| classify(key, error))
    }

    /// The entries of one folder (`""` is the mount's root): names, and sub-folders ending in
    /// `/`. A folder that does not exist is empty.
    async fn list_folder(&self, mount: &str, folder: &str) -> Result<Vec<String>, ProviderError> {
        let listed = match self.config.version {
            KvVersion::V2 => vaultrs::kv2::list(&self.client, mount, folder).await,
            KvVersion::V1 => vaultrs::kv1::list(&self.client, mount, folder)
                .await
                .map(|response| response.data.keys),
        };
        match listed {
            Ok(keys) => Ok(keys),
            Err(ClientError::APIError { code: 404, .. }) => Ok(Vec::new()),
            Err(error) => Err(classify(&format!("{mount}/{folder}"), error)),
        }
    }

    /// Every secret name under `base` (a folder path ending in `/`, or empty), recursively,
    /// listing at most `max_folders` folders.
    async fn list_recursive(
        &self,
        mount: &str,
        base: &str,
        max_folders: usize,
    ) -> Result<Vec<String>, ProviderError> {
        let mut folders = std::collections::VecDeque::from([base.to_string()]);
        let mut listed_folders = 0usize;
        let mut names = Vec::new();
        while let Some(folder) = folders.pop_front() {
            listed_folders += 1;
            if listed_folders > max_folders {
                return Err(ProviderError::InvalidConfig(format!(
                    "find.path: more than {max_folders} folders under {:?} of mount {mount:?}; narrow find.path",
                    base.trim_end_matches('/')
                )));
            }
            for entry in self.list_folder(mount, &folder).await? {
                let full = format!("{folder}{entry}");
                if entry.ends_with('/') {
                    folders.push_back(full);
                } else {
                    names.push(full);
                }
            }
        }
        Ok(names)
    }

    /// Whether the secret's KV v2 custom metadata carries every tag of `query`.
    async fn has_tags(
        &self,
        mount: &str,
        key: &str,
        query: &FindQuery,
    ) -> Result<bool, ProviderError> {
        if query.tags.is_empty() {
            return Ok(true);
        }
        match vaultrs::kv2::read_metadata(&self.client, mount, key).await {
            Ok(metadata) => {
                let tags: BTreeMap<String, String> = metadata
                    .custom_metadata
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                Ok(query.matches_tags(&tags))
            }
            // Deleted between the LIST and now.
            Err(ClientError::APIError { code: 404, .. }) => Ok(false),
            Err(error) => Err(classify(key, error)),
        }
    }
}

/// The mount and the path inside it for `key`, as ESO builds them: without a configured mount
/// the key's first segment is the mount; a key that repeats the mount, or on KV v2 includes the
/// `data/` segment, is accepted too.
fn mount_and_path(config: &VaultConfig, key: &str) -> (String, String) {
    let key = key.trim_start_matches('/');
    let (mount, rest) = if config.mount.is_empty() {
        match key.split_once('/') {
            Some((mount, rest)) => (mount.to_string(), rest),
            None => (String::new(), key),
        }
    } else {
        let prefix = format!("{}/", config.mount);
        (
            config.mount.clone(),
            key.strip_prefix(prefix.as_str()).unwrap_or(key),
        )
    };
    let rest = match config.version {
        KvVersion::V2 => rest.strip_prefix("data/").unwrap_or(rest),
        KvVersion::V1 => rest,
    };
    (mount, rest.to_string())
}

/// Maps a vaultrs error to the provider contract's classes.
fn classify(key: &str, error: ClientError) -> ProviderError {
    match error {
        ClientError::APIError { code: 404, .. } => ProviderError::NotFound {
            key: key.to_string(),
            detail: "vault answered 404".into(),
        },
        ClientError::APIError { code: 403, .. } => ProviderError::PermissionDenied {
            key: key.to_string(),
            detail: "vault answered 403".into(),
        },
        ClientError::APIError { code, .. } if (400..500).contains(&code) => {
            ProviderError::InvalidConfig(format!("vault answered {code} for {key:?}"))
        }
        other if is_untrusted_certificate(&other) => ProviderError::Unavailable {
            detail: format!(
                "failed to read {key:?} from vault: the server's TLS certificate is not trusted (check spec.provider.vault.caBundle / caProvider)"
            ),
            source: Some(Box::new(other)),
        },
        other => ProviderError::Unavailable {
            detail: format!("failed to read {key:?} from vault"),
            source: Some(Box::new(other)),
        },
    }
}

/// Maps a failed login: 400/403 from an auth mount mean the credentials were refused.
fn classify_login(server: &str, mount: &str, error: ClientError) -> ProviderError {
    match error {
        ClientError::APIError { code, .. } if (400..500).contains(&code) && code != 404 => {
            ProviderError::PermissionDenied {
                key: String::new(),
                detail: format!("vault refused the login at auth/{mount} ({code})"),
            }
        }
        ClientError::APIError { code: 404, .. } => {
            ProviderError::InvalidConfig(format!("vault has no auth method mounted at {mount:?}"))
        }
        other => unavailable(
            server,
            format!("failed to log in to vault at auth/{mount}"),
            other,
        ),
    }
}

#[async_trait::async_trait]
impl SecretProvider for VaultProvider {
    async fn get(&self, reference: &RemoteRef) -> Result<SecretValue, ProviderError> {
        let fields = self.read_fields(reference).await?;
        // The whole secret is its fields as one JSON object, as ESO returns it; a property is
        // looked up in it as everywhere else (top-level field, then a dotted path).
        let whole = serde_json::to_vec(&fields).map_err(|e| ProviderError::Unavailable {
            detail: format!("failed to encode {:?}", reference.key),
            source: Some(Box::new(e)),
        })?;
        select_property(reference, whole)
    }

    async fn get_map(
        &self,
        reference: &RemoteRef,
    ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        let whole = self
            .get(&RemoteRef {
                property: None,
                ..reference.clone()
            })
            .await?;
        json_properties(&reference.key, whole.expose())
    }

    /// KV v2: a recursive LIST of the metadata under `find.path`; the name regexp applies to the
    /// full path inside the mount (as ESO), tags to the custom metadata. KV v1: a recursive LIST;
    /// it has no metadata, so tags are refused. Names carry the mount only when the store names
    /// none (then `find.path` starts with it), so every name found is a key `get` accepts.
    async fn find(
        &self,
        query: &FindQuery,
    ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        if !query.tags.is_empty() && self.config.version == KvVersion::V1 {
            return Err(ProviderError::InvalidConfig(
                "find.tags: a KV v1 mount has no custom metadata to match; use find.name or a KV v2 mount"
                    .into(),
            ));
        }
        let path = query.path.as_deref().unwrap_or_default().trim_matches('/');
        let (mount, base, shown_prefix) = if self.config.mount.is_empty() {
            let (mount, rest) = path.split_once('/').unwrap_or((path, ""));
            if mount.is_empty() {
                return Err(ProviderError::InvalidConfig(
                    "find.path must start with the KV mount when the store sets no path".into(),
                ));
            }
            (mount.to_string(), rest.to_string(), format!("{mount}/"))
        } else {
            let (mount, rest) = mount_and_path(&self.config, path);
            (mount, rest, String::new())
        };
        let base = if base.is_empty() {
            base
        } else {
            format!("{base}/")
        };
        let mut found = BTreeMap::new();
        let limits = query.limits;
        for key in self.list_recursive(&mount, &base, limits.folders).await? {
            let name = format!("{shown_prefix}{key}");
            if !query.matches_name(&name) || !self.has_tags(&mount, &key, query).await? {
                continue;
            }
            if found.len() == limits.results {
                return Err(ProviderError::InvalidConfig(format!(
                    "find selects more than {} secrets under {path:?}; narrow find.path, find.name or find.tags",
                    limits.results
                )));
            }
            let fields = match self.read_at(&mount, &key, None).await {
                Ok(fields) => fields,
                // Deleted (or its current version deleted) since the LIST: not a match.
                Err(ProviderError::NotFound { .. }) => continue,
                Err(error) => return Err(error),
            };
            let whole = serde_json::to_vec(&fields).map_err(|e| ProviderError::Unavailable {
                detail: format!("failed to encode {name:?}"),
                source: Some(Box::new(e)),
            })?;
            found.insert(name, SecretValue::new(whole));
        }
        Ok(found)
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        vaultrs::token::lookup_self(&self.client)
            .await
            .map(|_| ())
            .map_err(|error| match error {
                ClientError::APIError { code: 403, .. } => ProviderError::PermissionDenied {
                    key: String::new(),
                    detail: "vault rejected the token".into(),
                },
                ClientError::APIError { .. } => classify("", error),
                other => unavailable(
                    &self.config.server,
                    "failed to look up the token".into(),
                    other,
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mount: &str, version: KvVersion) -> VaultConfig {
        VaultConfig {
            server: "http://vault".into(),
            mount: mount.into(),
            version,
            namespace: None,
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for allowed in [
            "https://vault.example:8200",
            "https://10.0.0.5",
            "http://127.0.0.1:8200",
            "http://127.1.2.3",
            "http://localhost:8200",
            "http://LOCALHOST",
            "http://[::1]:8200",
        ] {
            assert_eq!(insecure_server(allowed), None, "{allowed}");
        }
        for refused in [
            "http://vault.example:8200",
            "http://10.0.0.5:8200",
            "http://[fd00::1]",
            "http://localhost.attacker.example",
            "http://127.0.0.1.nip.io",
        ] {
            let why = insecure_server(refused).unwrap();
            assert!(why.contains("use https"), "{refused}: {why}");
        }
        assert!(
            insecure_server("ftp://vault")
                .unwrap()
                .contains("not https")
        );
        assert!(insecure_server("vault:8200/x").is_some());
        assert!(insecure_server("").is_some());
        let error = VaultProvider::with_token(
            VaultConfig {
                server: "http://vault.example".into(),
                ..config("secret", KvVersion::V2)
            },
            "t",
        )
        .err()
        .unwrap();
        assert_eq!(error.reason(), "InvalidConfig");
        assert!(error.to_string().contains("use https"), "{error}");
    }

    #[test]
    fn paths_are_built_as_eso_builds_them() {
        let v2 = config("secret", KvVersion::V2);
        let split = |c: &VaultConfig, key: &str| mount_and_path(c, key);
        assert_eq!(split(&v2, "db/prod"), ("secret".into(), "db/prod".into()));
        assert_eq!(
            split(&v2, "secret/db/prod"),
            ("secret".into(), "db/prod".into())
        );
        assert_eq!(
            split(&v2, "secret/data/db/prod"),
            ("secret".into(), "db/prod".into())
        );
        let no_mount = config("", KvVersion::V2);
        assert_eq!(split(&no_mount, "kv/data/app"), ("kv".into(), "app".into()));
        assert_eq!(split(&no_mount, "kv/app"), ("kv".into(), "app".into()));
        let v1 = config("kv1", KvVersion::V1);
        assert_eq!(split(&v1, "data/x"), ("kv1".into(), "data/x".into()));
    }
}
