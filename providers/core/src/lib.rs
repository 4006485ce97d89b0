//! The contract between the agent and secret-store providers.
//!
//! Providers know nothing of Kubernetes: the agent resolves credentials and passes plain
//! configuration in. Values travel as [`SecretValue`], which is zeroized on drop and never
//! printed; errors carry [`ProviderError::reason`] for conditions, events and metric labels.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

#[cfg(feature = "conformance")]
pub mod conformance;

/// Where a value lives in a store, as ESO's `remoteRef`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteRef {
    /// The secret's key or path in the store.
    pub key: String,
    /// One field of a structured (JSON) secret; the whole secret when absent.
    pub property: Option<String>,
    /// A specific version (or AWS stage); the current one when absent.
    pub version: Option<String>,
}

impl RemoteRef {
    /// A reference to the current version of the whole secret at `key`.
    pub fn key(key: impl Into<String>) -> Self {
        RemoteRef {
            key: key.into(),
            ..Default::default()
        }
    }

    /// The same reference narrowed to one property.
    pub fn with_property(mut self, property: impl Into<String>) -> Self {
        self.property = Some(property.into());
        self
    }
}

/// Secret bytes: zeroized when dropped, redacted in `Debug`, never `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps bytes read from a store.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(Zeroizing::new(bytes))
    }

    /// The bytes, for writing into a Secret.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        SecretValue::new(value.into_bytes())
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<{} bytes redacted>)", self.0.len())
    }
}

/// Why a provider call failed. Messages name the store and key, never a value.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The key (or version, or property) does not exist.
    #[error("secret {key:?} not found: {detail}")]
    NotFound {
        /// The key asked for.
        key: String,
        /// What was missing.
        detail: String,
    },
    /// The store refused the credentials or the access.
    #[error("permission denied reading {key:?}: {detail}")]
    PermissionDenied {
        /// The key asked for.
        key: String,
        /// The store's answer.
        detail: String,
    },
    /// The store configuration is unusable; retrying will not help until it changes.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// The store could not be reached or answered with a server error; worth retrying.
    #[error("store unavailable: {detail}")]
    Unavailable {
        /// What happened.
        detail: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl ProviderError {
    /// Whether the same call may succeed later without a configuration change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Unavailable { .. })
    }

    /// A CamelCase word for condition reasons, events and metric labels: ESO's words for the
    /// `Fetched` condition (`NotFound`, `Forbidden`, `InvalidConfig`, `Unavailable`), which the
    /// README documents.
    pub fn reason(&self) -> &'static str {
        match self {
            ProviderError::NotFound { .. } => "NotFound",
            ProviderError::PermissionDenied { .. } => "Forbidden",
            ProviderError::InvalidConfig(_) => "InvalidConfig",
            ProviderError::Unavailable { .. } => "Unavailable",
        }
    }
}

/// A secret store. Implementations hold an authenticated client and reuse it across calls.
#[async_trait::async_trait]
pub trait SecretProvider: Send + Sync {
    /// One value: the whole secret, or one property of it.
    async fn get(&self, reference: &RemoteRef) -> Result<SecretValue, ProviderError>;

    /// A structured secret as a map of its top-level properties (ESO's `dataFrom.extract`).
    async fn get_map(
        &self,
        reference: &RemoteRef,
    ) -> Result<BTreeMap<String, SecretValue>, ProviderError>;

    /// Every secret that `query` selects, keyed by its full name in the store, each value the
    /// whole secret (ESO's `dataFrom.find`). Stores that cannot list say so.
    async fn find(
        &self,
        query: &FindQuery,
    ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        let _ = query;
        Err(ProviderError::InvalidConfig(
            "this store does not support dataFrom.find".into(),
        ))
    }

    /// The metadata of the secret at `reference` (tags) as a JSON object of strings, for ESO's
    /// `metadataPolicy: Fetch`; `property` then picks one. Stores without metadata say so.
    async fn get_metadata(&self, reference: &RemoteRef) -> Result<SecretValue, ProviderError> {
        let _ = reference;
        Err(ProviderError::InvalidConfig(
            "this store does not support metadataPolicy: Fetch".into(),
        ))
    }

    /// A round trip proving the store is reachable and the credentials work.
    async fn validate(&self) -> Result<(), ProviderError>;
}

/// The largest compiled `find.name.regexp` accepted; bounds what a manifest can make the agent
/// build.
const FIND_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What `dataFrom[].find` selects: secrets under `path` whose name matches `name.regexp` and
/// that carry every tag in `tags`.
#[derive(Clone, Debug)]
pub struct FindQuery {
    /// A prefix (folder) to search under; the whole store when absent.
    pub path: Option<String>,
    /// Every one of these tags (or Vault custom metadata) must match exactly.
    pub tags: BTreeMap<String, String>,
    /// How much one find may list and return.
    pub limits: FindLimits,
    name: Option<regex::Regex>,
}

/// Bounds on one find, so a manifest cannot make the agent walk a whole store: exceeding one is
/// `InvalidConfig` naming it (narrow `find.path`, `find.name` or `find.tags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FindLimits {
    /// The most folders a store with folders (Vault) lists for one find.
    pub folders: usize,
    /// The most secrets one find returns.
    pub results: usize,
}

impl Default for FindLimits {
    fn default() -> Self {
        FindLimits {
            folders: 1000,
            results: 500,
        }
    }
}

impl FindQuery {
    /// A query; at least one of `name_regexp` and `tags` is required, as ESO. A regexp that
    /// does not compile is `InvalidConfig` naming the field.
    pub fn new(
        path: Option<String>,
        name_regexp: Option<&str>,
        tags: BTreeMap<String, String>,
    ) -> Result<Self, ProviderError> {
        if name_regexp.is_none() && tags.is_empty() {
            return Err(ProviderError::InvalidConfig(
                "find needs name.regexp or tags".into(),
            ));
        }
        let name = name_regexp
            .map(|r| {
                regex::RegexBuilder::new(r)
                    .size_limit(FIND_REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| ProviderError::InvalidConfig(format!("find.name.regexp: {e}")))
            })
            .transpose()?;
        Ok(FindQuery {
            path,
            tags,
            limits: FindLimits::default(),
            name,
        })
    }

    /// The name regexp as written, for providers that can filter on the server.
    pub fn name_regexp(&self) -> Option<&str> {
        self.name.as_ref().map(regex::Regex::as_str)
    }

    /// Whether a secret's full name passes the name filter (true without one).
    pub fn matches_name(&self, name: &str) -> bool {
        self.name.as_ref().is_none_or(|r| r.is_match(name))
    }

    /// Whether a secret's tags include every tag of the query.
    pub fn matches_tags(&self, tags: &BTreeMap<String, String>) -> bool {
        self.tags.iter().all(|(k, v)| tags.get(k) == Some(v))
    }
}

/// Splits a JSON object into its top-level properties: strings as they are, other values as JSON.
///
/// Shared by providers whose secrets are JSON documents (AWS, Azure) so `property` and `get_map`
/// behave the same everywhere.
pub fn json_properties(
    key: &str,
    document: &[u8],
) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
    let not_an_object = || ProviderError::NotFound {
        key: key.to_string(),
        detail: "the secret is not a JSON object, so it has no properties".into(),
    };
    let parsed: serde_json::Value =
        serde_json::from_slice(document).map_err(|_| not_an_object())?;
    let serde_json::Value::Object(map) = parsed else {
        return Err(not_an_object());
    };
    Ok(map
        .into_iter()
        .map(|(name, value)| {
            let bytes = match value {
                serde_json::Value::String(s) => s.into_bytes(),
                other => other.to_string().into_bytes(),
            };
            (name, SecretValue::new(bytes))
        })
        .collect())
}

/// Picks `reference.property` out of a JSON document, or returns the document when none is set.
pub fn select_property(
    reference: &RemoteRef,
    document: Vec<u8>,
) -> Result<SecretValue, ProviderError> {
    let Some(property) = &reference.property else {
        return Ok(SecretValue::new(document));
    };
    let document = Zeroizing::new(document);
    let mut properties = json_properties(&reference.key, &document)?;
    if let Some(value) = properties.remove(property) {
        return Ok(value);
    }
    // Not a top-level field: a dotted path into nested objects (`db.password`, `hosts.0`), as
    // ESO's gjson lookup resolves it.
    nested_property(&document, property).ok_or_else(|| ProviderError::NotFound {
        key: reference.key.clone(),
        detail: format!("property {property:?} is not in the secret"),
    })
}

/// Walks `path` (dot-separated object fields or array indexes) through a JSON document.
fn nested_property(document: &[u8], path: &str) -> Option<SecretValue> {
    if !path.contains('.') {
        return None;
    }
    let parsed: serde_json::Value = serde_json::from_slice(document).ok()?;
    let mut current = &parsed;
    for segment in path.split('.') {
        current = match current {
            serde_json::Value::Object(map) => map.get(segment)?,
            serde_json::Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    let bytes = match current {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    };
    Some(SecretValue::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_query_filters_by_name_and_tags() {
        let tags = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let query = FindQuery::new(None, Some("^db-"), tags).unwrap();
        assert!(query.matches_name("db-users"));
        assert!(!query.matches_name("app-db-users"));
        let mut have = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        have.insert("team".into(), "a".into());
        assert!(query.matches_tags(&have));
        have.insert("env".into(), "dev".into());
        assert!(!query.matches_tags(&have));
    }

    #[test]
    fn find_query_needs_a_filter_and_a_valid_regexp() {
        let err = FindQuery::new(None, None, BTreeMap::new()).unwrap_err();
        assert_eq!(err.reason(), "InvalidConfig");
        let err = FindQuery::new(None, Some("(unclosed"), BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("find.name.regexp"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_value() {
        let value = SecretValue::from("s3cr3t-value".to_string());
        let printed = format!("{value:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert_eq!(printed, "SecretValue(<12 bytes redacted>)");
    }

    #[test]
    fn only_unavailable_is_retryable() {
        let unavailable = ProviderError::Unavailable {
            detail: "connection refused".into(),
            source: None,
        };
        assert!(unavailable.is_retryable());
        assert_eq!(unavailable.reason(), "Unavailable");
        let denied = ProviderError::PermissionDenied {
            key: "k".into(),
            detail: "403".into(),
        };
        assert!(!denied.is_retryable());
        assert_eq!(denied.reason(), "Forbidden");
    }

    #[test]
    fn properties_of_a_json_document() {
        let doc = br#"{"user":"app","port":5432,"tls":{"on":true}}"#.to_vec();
        let reference = RemoteRef::key("db").with_property("user");
        assert_eq!(
            select_property(&reference, doc.clone()).unwrap().expose(),
            b"app"
        );
        let map = json_properties("db", &doc).unwrap();
        assert_eq!(map["port"].expose(), b"5432");
        assert_eq!(map["tls"].expose(), br#"{"on":true}"#);
        let nested = select_property(&RemoteRef::key("db").with_property("tls.on"), doc.clone());
        assert_eq!(nested.unwrap().expose(), b"true");
        let listed = br#"{"hosts":["a","b"]}"#.to_vec();
        let second = select_property(&RemoteRef::key("db").with_property("hosts.1"), listed);
        assert_eq!(second.unwrap().expose(), b"b");
        let missing = select_property(&RemoteRef::key("db").with_property("password"), doc.clone());
        assert_eq!(missing.unwrap_err().reason(), "NotFound");
        let missing = select_property(&RemoteRef::key("db").with_property("tls.off"), doc);
        assert_eq!(missing.unwrap_err().reason(), "NotFound");
    }

    #[test]
    fn whole_document_without_property() {
        let doc = b"plain text".to_vec();
        assert_eq!(
            select_property(&RemoteRef::key("k"), doc).unwrap().expose(),
            b"plain text"
        );
        assert!(json_properties("k", b"plain text").is_err());
    }
}
