//! The contract between the agent and secret-store providers.
//!
//! Providers know nothing of Kubernetes: the agent resolves credentials and passes plain
//! configuration in. Values travel as [`SecretValue`], which is zeroized on drop and never
//! printed; errors carry [`ProviderError::reason`] for conditions, events and metric labels.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

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

    /// A CamelCase word for condition reasons, events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ProviderError::NotFound { .. } => "NotFound",
            ProviderError::PermissionDenied { .. } => "PermissionDenied",
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

    /// A round trip proving the store is reachable and the credentials work.
    async fn validate(&self) -> Result<(), ProviderError>;
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
        assert_eq!(denied.reason(), "PermissionDenied");
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
