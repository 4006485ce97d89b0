//! Sealing scopes: which names a sealed value may be unsealed under, and their OAEP labels.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Annotation that makes a SealedSecret namespace-wide.
pub const NAMESPACE_WIDE_ANNOTATION: &str = "sealedsecrets.bitnami.com/namespace-wide";
/// Annotation that makes a SealedSecret cluster-wide.
pub const CLUSTER_WIDE_ANNOTATION: &str = "sealedsecrets.bitnami.com/cluster-wide";

/// How tightly a sealed value is bound to its Secret's name and namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Only the same name in the same namespace (label `namespace/name`).
    #[default]
    Strict,
    /// Any name in the same namespace (label `namespace`).
    NamespaceWide,
    /// Any name in any namespace (empty label).
    ClusterWide,
}

impl Scope {
    /// The OAEP label that binds a value to this scope.
    pub fn label(self, namespace: &str, name: &str) -> Vec<u8> {
        match self {
            Scope::Strict => format!("{namespace}/{name}").into_bytes(),
            Scope::NamespaceWide => namespace.as_bytes().to_vec(),
            Scope::ClusterWide => Vec::new(),
        }
    }

    /// The scope an object's annotations ask for; cluster-wide wins when both are `"true"`.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Scope {
        let is_set = |key: &str| annotations.get(key).is_some_and(|v| v == "true");
        if is_set(CLUSTER_WIDE_ANNOTATION) {
            Scope::ClusterWide
        } else if is_set(NAMESPACE_WIDE_ANNOTATION) {
            Scope::NamespaceWide
        } else {
            Scope::Strict
        }
    }
}

/// The error for a scope name that kubeseal does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to parse scope {0:?}: expected strict, namespace-wide or cluster-wide")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(Scope::Strict),
            "namespace-wide" => Ok(Scope::NamespaceWide),
            "cluster-wide" => Ok(Scope::ClusterWide),
            other => Err(UnknownScope(other.to_string())),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Strict => "strict",
            Scope::NamespaceWide => "namespace-wide",
            Scope::ClusterWide => "cluster-wide",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_upstream() {
        assert_eq!(Scope::Strict.label("ns", "db"), b"ns/db");
        assert_eq!(Scope::NamespaceWide.label("ns", "db"), b"ns");
        assert!(Scope::ClusterWide.label("ns", "db").is_empty());
    }

    #[test]
    fn cluster_wide_wins_over_namespace_wide() {
        let both = BTreeMap::from([
            (NAMESPACE_WIDE_ANNOTATION.to_string(), "true".to_string()),
            (CLUSTER_WIDE_ANNOTATION.to_string(), "true".to_string()),
        ]);
        assert_eq!(Scope::from_annotations(&both), Scope::ClusterWide);
        let ns = BTreeMap::from([(NAMESPACE_WIDE_ANNOTATION.to_string(), "true".to_string())]);
        assert_eq!(Scope::from_annotations(&ns), Scope::NamespaceWide);
        let off = BTreeMap::from([(CLUSTER_WIDE_ANNOTATION.to_string(), "false".to_string())]);
        assert_eq!(Scope::from_annotations(&off), Scope::Strict);
    }

    #[test]
    fn names_round_trip() {
        for scope in [Scope::Strict, Scope::NamespaceWide, Scope::ClusterWide] {
            assert_eq!(scope.to_string().parse::<Scope>(), Ok(scope));
        }
        assert!("wide".parse::<Scope>().is_err());
    }
}
