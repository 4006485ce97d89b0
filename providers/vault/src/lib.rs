//! Vault and OpenBao KV secrets (v1 and v2), through vaultrs.
//!
//! One [`VaultProvider`] holds one authenticated client for a store and reuses it for every read:
//! it logs in once (token, AppRole or Kubernetes auth) and the agent keeps it until shortly
//! before the token's lease ends, so there is no login per reconcile (ESO's #376).

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
    /// Logs in with `auth` and returns a provider holding the resulting token.
    pub async fn login(config: VaultConfig, auth: &VaultAuth) -> Result<Self, ProviderError> {
        let (mount, info) = match auth {
            VaultAuth::Token(token) => return Self::with_token(config, token),
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                let anonymous = Self::with_token(config.clone(), "")?;
                let info =
                    vaultrs::auth::approle::login(&anonymous.client, mount, role_id, secret_id)
                        .await;
                (mount, info)
            }
            VaultAuth::Kubernetes { mount, role, jwt } => {
                let anonymous = Self::with_token(config.clone(), "")?;
                let info =
                    vaultrs::auth::kubernetes::login(&anonymous.client, mount, role, jwt).await;
                (mount, info)
            }
        };
        let info = info.map_err(|error| classify_login(mount, error))?;
        let mut provider = Self::with_token(config, &info.client_token)?;
        provider.lease =
            (info.lease_duration > 0).then(|| Duration::from_secs(info.lease_duration));
        Ok(provider)
    }

    /// How long the login's token lives, if it expires (static tokens: `None`).
    pub fn lease(&self) -> Option<Duration> {
        self.lease
    }

    /// A provider that authenticates with `token`.
    pub fn with_token(config: VaultConfig, token: &str) -> Result<Self, ProviderError> {
        let mut settings = VaultClientSettingsBuilder::default();
        settings.address(&config.server).token(token);
        if let Some(namespace) = &config.namespace {
            settings.namespace(Some(namespace.clone()));
        }
        let settings = settings.build().map_err(|e| {
            ProviderError::InvalidConfig(format!("vault server {:?}: {e}", config.server))
        })?;
        let client = VaultClient::new(settings).map_err(|e| {
            ProviderError::InvalidConfig(format!("vault server {:?}: {e}", config.server))
        })?;
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
        other => ProviderError::Unavailable {
            detail: format!("failed to read {key:?} from vault"),
            source: Some(Box::new(other)),
        },
    }
}

/// Maps a failed login: 400/403 from an auth mount mean the credentials were refused.
fn classify_login(mount: &str, error: ClientError) -> ProviderError {
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
        other => ProviderError::Unavailable {
            detail: format!("failed to log in to vault at auth/{mount}"),
            source: Some(Box::new(other)),
        },
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
                other => classify("", other),
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
