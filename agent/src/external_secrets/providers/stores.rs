//! Stores: which store, which controller class handles it, whether it is referent, which
//! provider it names (the one `match` over providers), and resolving it into a connection.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use mooring_crds::secret_store::{
    ClusterSecretStoreCondition, ProviderChoiceError, ProviderSpec, SecretStoreSpec,
};

use super::{Connection, CredentialReader, ProviderConfig, ProviderSettings, StoreError};
use crate::metrics::{ExternalSecretMetrics, StoreCallLabels};

/// The kind of a store reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreKind {
    /// A namespaced `SecretStore`.
    SecretStore,
    /// A cluster-scoped `ClusterSecretStore`.
    ClusterSecretStore,
}

impl StoreKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::SecretStore => "SecretStore",
            StoreKind::ClusterSecretStore => "ClusterSecretStore",
        }
    }
}

/// Which store: its kind, namespace (namespaced stores) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId {
    /// SecretStore or ClusterSecretStore.
    pub kind: StoreKind,
    /// The store's namespace; `None` for a ClusterSecretStore.
    pub namespace: Option<String>,
    /// The store's name.
    pub name: String,
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind.as_str(), self.name),
            None => write!(f, "{} {}", self.kind.as_str(), self.name),
        }
    }
}

/// Whether mooring handles stores of this controller class: no class, or `mooring` (ESO's
/// `spec.controller`, so both can run side by side during a migration).
pub fn is_handled_here(spec: &SecretStoreSpec) -> bool {
    spec.controller
        .as_deref()
        .is_none_or(|class| class.is_empty() || class == "mooring")
}

/// A provider this agent was built without: its stores are refused, naming it.
#[cfg(not(all(feature = "vault", feature = "aws")))]
struct NotBuilt(&'static str);

#[cfg(not(all(feature = "vault", feature = "aws")))]
#[async_trait::async_trait]
impl ProviderConfig for NotBuilt {
    fn credential_namespaces(&self) -> Vec<Option<&str>> {
        Vec::new()
    }

    async fn connection(
        &self,
        reader: &CredentialReader<'_>,
        _: &ProviderSettings,
    ) -> Result<Connection, StoreError> {
        Err(StoreError::invalid_spec(
            reader.store,
            format!("this agent was built without the {} provider", self.0),
        ))
    }
}

/// The store's provider as the agent handles it: the one place each provider is named, so a
/// provider added to [`ProviderSpec`] does not compile until it is handled here.
fn provider_config(spec: &SecretStoreSpec) -> Result<&dyn ProviderConfig, ProviderChoiceError> {
    let config: &dyn ProviderConfig = match spec.provider.kind()? {
        #[cfg(feature = "vault")]
        ProviderSpec::Vault(vault) => vault,
        #[cfg(not(feature = "vault"))]
        ProviderSpec::Vault(_) => &NotBuilt("vault"),
        #[cfg(feature = "aws")]
        ProviderSpec::Aws(aws) => aws,
        #[cfg(not(feature = "aws"))]
        ProviderSpec::Aws(_) => &NotBuilt("aws"),
        ProviderSpec::AzureKv(azure) => azure,
    };
    Ok(config)
}

/// Whether a ClusterSecretStore's `conditions` let `namespace` (with `labels`) use it, as ESO's
/// `shouldProcessSecret` decides: any condition that matches by name list, label selector or
/// name regex allows. An invalid regex allows nothing.
pub fn namespace_is_allowed(
    conditions: &[ClusterSecretStoreCondition],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    conditions.iter().any(|condition| {
        let by_name = condition
            .namespaces
            .iter()
            .flatten()
            .any(|name| name == namespace);
        let by_selector = condition
            .namespace_selector
            .as_ref()
            .is_some_and(|selector| selector_matches(selector, namespace, labels));
        let by_regex = condition
            .namespace_regexes
            .iter()
            .flatten()
            .any(|pattern| regex::Regex::new(pattern).is_ok_and(|re| re.is_match(namespace)));
        by_name || by_selector || by_regex
    })
}

/// A label selector over a namespace's labels (plus the implicit `kubernetes.io/metadata.name`).
fn selector_matches(
    selector: &LabelSelector,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let mut labels = labels.clone();
    labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// Whether credentials of a ClusterSecretStore are resolved in the consuming namespace (a
/// "referent" store: some credential reference has no namespace).
pub fn is_referent(spec: &SecretStoreSpec) -> bool {
    provider_config(spec)
        .is_ok_and(|config| config.credential_namespaces().iter().any(Option::is_none))
}

/// Reads credentials for `store` and turns its spec into a [`Connection`].
///
/// `namespace` is where credential references without a namespace are read: the store's own
/// namespace for a SecretStore (a `namespace` in its references is ignored, as ESO does at run
/// time), the consuming ExternalSecret's for a referent ClusterSecretStore.
pub async fn resolve(
    client: &kube::Client,
    store: &StoreId,
    spec: &SecretStoreSpec,
    namespace: Option<&str>,
    settings: &ProviderSettings,
) -> Result<Connection, StoreError> {
    let config = provider_config(spec)
        .map_err(|error| StoreError::invalid_spec(store, error.to_string()))?;
    let reader = CredentialReader {
        client,
        store,
        namespace,
    };
    config.connection(&reader, settings).await
}

/// How long to wait before validating a store again: its `refreshInterval` (seconds or a Go
/// duration), else five minutes (ESO's `--store-requeue-interval`).
pub fn store_refresh_interval(spec: &SecretStoreSpec) -> Duration {
    let default = Duration::from_secs(300);
    match &spec.refresh_interval {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .filter(|s| *s > 0)
            .map_or(default, Duration::from_secs),
        Some(serde_json::Value::String(text)) => crate::duration::parse(text)
            .ok()
            .filter(|d| !d.is_zero())
            .unwrap_or(default),
        _ => default,
    }
}

/// Counts one provider call in `mooring_externalsecret_provider_calls_total`.
pub fn count_provider_call(
    metrics: &ExternalSecretMetrics,
    store: &StoreId,
    call: &str,
    outcome: &str,
) {
    metrics
        .provider_calls
        .get_or_create(&StoreCallLabels {
            store: store.to_string(),
            call: call.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A store spec from JSON.
    pub(in crate::external_secrets::providers) fn spec(json: serde_json::Value) -> SecretStoreSpec {
        serde_json::from_value(json).unwrap()
    }

    /// The message `resolve` refuses `provider` with (no API call is made for these).
    async fn refusal(provider: serde_json::Value) -> String {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let store = StoreId {
            kind: StoreKind::SecretStore,
            namespace: Some("app".into()),
            name: "s".into(),
        };
        let spec = spec(serde_json::json!({ "provider": provider }));
        let settings = ProviderSettings::default();
        match resolve(&client, &store, &spec, Some("app"), &settings).await {
            Err(error @ StoreError::InvalidSpec { .. }) => error.to_string(),
            Err(other) => format!("not InvalidSpec: {other}"),
            Ok(_) => "resolved".into(),
        }
    }

    #[tokio::test]
    async fn stores_naming_no_single_supported_provider_are_refused_naming_the_fields() {
        assert_eq!(
            refusal(serde_json::json!({})).await,
            "SecretStore app/s: spec.provider must set exactly one of vault, aws, azurekv"
        );
        assert_eq!(
            refusal(serde_json::json!({
                "vault": {"server": "http://v"}, "aws": {"service": "SecretsManager"}}))
            .await,
            "SecretStore app/s: spec.provider must set exactly one of vault, aws, azurekv, not vault and aws"
        );
        assert_eq!(
            refusal(serde_json::json!({"gcpsm": {"projectID": "p"}})).await,
            "SecretStore app/s: spec.provider.gcpsm is not supported by mooring (supported: vault, aws, azurekv)"
        );
        let azure = refusal(serde_json::json!({"azurekv": {
            "vaultUrl": "https://v.vault.azure.net", "tenantId": "t"}}))
        .await;
        assert!(
            azure.starts_with("SecretStore app/s: spec.provider.azurekv"),
            "{azure}"
        );
    }

    #[test]
    fn a_store_with_several_providers_is_not_referent() {
        let several = spec(serde_json::json!({"provider": {
            "vault": {"server": "http://v", "auth": {"tokenSecretRef": {"name": "t", "key": "k"}}},
            "aws": {"service": "SecretsManager"}}}));
        assert!(
            !is_referent(&several),
            "it is refused as it is, not per namespace"
        );
    }

    #[test]
    fn store_refresh_interval_accepts_seconds_and_durations() {
        let with = |value: serde_json::Value| {
            let mut s = spec(serde_json::json!({"provider": {}}));
            s.refresh_interval = Some(value);
            store_refresh_interval(&s)
        };
        assert_eq!(with(serde_json::json!(60)), Duration::from_secs(60));
        assert_eq!(with(serde_json::json!("2m")), Duration::from_secs(120));
        assert_eq!(with(serde_json::json!(0)), Duration::from_secs(300));
    }

    #[test]
    fn stores_of_another_controller_class_are_left_alone() {
        let with = |class: Option<&str>| {
            let mut spec: SecretStoreSpec =
                serde_json::from_value(serde_json::json!({"provider": {}})).unwrap();
            spec.controller = class.map(str::to_string);
            is_handled_here(&spec)
        };
        assert!(with(None));
        assert!(with(Some("")));
        assert!(with(Some("mooring")));
        assert!(!with(Some("eso")));
    }

    #[test]
    fn namespace_selectors() {
        let labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
        let selector: LabelSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"team": "a"}})).unwrap();
        assert!(selector_matches(&selector, "x", &labels));
        assert!(!selector_matches(&selector, "x", &BTreeMap::new()));
        let by_name: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["x"]}]})).unwrap();
        assert!(selector_matches(&by_name, "x", &BTreeMap::new()));
        assert!(!selector_matches(&by_name, "y", &BTreeMap::new()));
    }

    #[test]
    fn any_condition_that_matches_allows_the_namespace() {
        let conditions: Vec<ClusterSecretStoreCondition> =
            serde_json::from_value(serde_json::json!([
                {"namespaces": ["a"]},
                {"namespaceRegexes": ["^team-", "("]},
                {"namespaceSelector": {"matchLabels": {"tier": "web"}}},
            ]))
            .unwrap();
        let none = BTreeMap::new();
        let web = BTreeMap::from([("tier".to_string(), "web".to_string())]);
        assert!(namespace_is_allowed(&conditions, "a", &none));
        assert!(namespace_is_allowed(&conditions, "team-x", &none));
        assert!(namespace_is_allowed(&conditions, "b", &web));
        assert!(
            !namespace_is_allowed(&conditions, "b", &none),
            "an invalid regex allows nothing"
        );
    }
}
