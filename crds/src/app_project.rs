//! `AppProject` (mooring.dev/v1alpha1): who may deploy what, with Argo CD's field names and
//! semantics.
//!
//! Projects live in the agent's namespace (as Argo CD's live in `argocd`). An Application names
//! its project in `spec.project` (default `default`); every rendered object is checked against
//! the project before anything of the sync is written. Without an AppProject named `default`,
//! the built-in default project allows everything, but only for Applications in the agent's
//! namespace. The rules themselves are in the agent (`gitops::project`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What an Application of this project may deploy, from where, to where, and as whom.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "mooring.dev",
    version = "v1alpha1",
    kind = "AppProject",
    namespaced,
    shortname = "appproj",
    shortname = "appprojs",
    category = "mooring"
)]
#[serde(rename_all = "camelCase")]
pub struct AppProjectSpec {
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Repository URL globs an Application may sync from (`*` any, `!` denies); none: no
    /// repository is allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_repos: Vec<String>,
    /// Where objects may go: (server or name, namespace) globs, `!` denies; none: nowhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<ProjectDestination>,
    /// Cluster-scoped kinds allowed; empty means none (Argo CD's default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_resource_whitelist: Vec<GroupKind>,
    /// Cluster-scoped kinds refused even when whitelisted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_resource_blacklist: Vec<GroupKind>,
    /// Namespaced kinds allowed; absent means all, an empty list means none (as Argo CD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_resource_whitelist: Option<Vec<GroupKind>>,
    /// Namespaced kinds refused; wins over the whitelist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_resource_blacklist: Vec<GroupKind>,
    /// Namespaces other than the agent's whose Applications may use this project (globs): Argo
    /// CD's "apps in any namespace".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_namespaces: Vec<String>,
    /// The ServiceAccount a sync runs as, by destination (Argo CD 2.13+): the first entry whose
    /// server and namespace globs match the Application's destination wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_service_accounts: Vec<DestinationServiceAccount>,
    /// Argo CD's orphaned-resource monitoring; accepted, not evaluated yet (a condition on the
    /// Application names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphaned_resources: Option<OrphanedResources>,
    /// Argo CD's project roles (API tokens); not supported (a condition names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_list")]
    pub roles: Option<Vec<serde_json::Value>>,
    /// Argo CD's sync windows; not supported (a condition names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_list")]
    pub sync_windows: Option<Vec<serde_json::Value>>,
    /// Argo CD's GPG keys for commit verification; not supported (a condition names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_list")]
    pub signature_keys: Option<Vec<serde_json::Value>>,
    /// Argo CD's source integrity (3.5); not supported (a condition names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub source_integrity: Option<serde_json::Value>,
    /// Argo CD's project-scoped clusters switch; mooring syncs only into its own cluster, so it
    /// has no effect (accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit_only_project_scoped_clusters: Option<bool>,
}

fn any_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// One allowed (or, with `!`, denied) destination.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProjectDestination {
    /// A glob of API server URLs (`https://kubernetes.default.svc`, `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// A glob of cluster names (`in-cluster`, `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A glob of namespaces (`team-a-*`, `!kube-system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A kind, by API group and kind; both may be globs (`*`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct GroupKind {
    /// The API group, empty for the core group.
    #[serde(default)]
    pub group: String,
    /// The kind.
    pub kind: String,
}

/// As Argo CD's `destinationServiceAccounts` entry.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DestinationServiceAccount {
    /// A glob of API server URLs.
    #[serde(default)]
    pub server: String,
    /// A glob of destination namespaces.
    #[serde(default)]
    pub namespace: String,
    /// The ServiceAccount: `name` (in the destination namespace) or `namespace:name`.
    pub default_service_account: String,
}

/// As Argo CD's `orphanedResources`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrphanedResources {
    /// Warn about objects in a destination namespace that no Application manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn: Option<bool>,
    /// Objects not to warn about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_list")]
    pub ignore: Option<Vec<serde_json::Value>>,
}

/// Argo CD's own AppProject CRD (`appprojects.argoproj.io`), with this schema: what
/// `mooring install --argocd-api` installs where Argo CD has not, so projects written for Argo CD
/// apply unchanged.
pub fn argocd_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = AppProject::crd();
    crd.metadata.name = Some(format!("appprojects.{ARGOCD_GROUP}"));
    crd.spec.group = ARGOCD_GROUP.to_string();
    crd.spec.names.categories = Some(vec!["argoproj".to_string()]);
    crd
}

/// Argo CD's API group.
pub const ARGOCD_GROUP: &str = "argoproj.io";

/// How to address Argo CD's AppProjects (read as dynamic objects whose `spec` is an
/// [`AppProjectSpec`]).
pub fn argocd_api_resource() -> kube::core::ApiResource {
    kube::core::ApiResource {
        group: ARGOCD_GROUP.to_string(),
        version: "v1alpha1".to_string(),
        api_version: format!("{ARGOCD_GROUP}/v1alpha1"),
        kind: "AppProject".to_string(),
        plural: "appprojects".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Argo CD AppProject, with only the apiVersion changed, parses.
    #[test]
    fn argo_cd_project_parses() {
        let manifest = r#"
apiVersion: mooring.dev/v1alpha1
kind: AppProject
metadata:
  name: team-a
  namespace: mooring-system
spec:
  sourceRepos: ["https://git.example.com/team-a/*"]
  destinations:
    - server: https://kubernetes.default.svc
      namespace: "team-a-*"
    - name: in-cluster
      namespace: "!kube-system"
  clusterResourceWhitelist: []
  namespaceResourceBlacklist:
    - group: ""
      kind: ResourceQuota
  sourceNamespaces: [team-a]
  destinationServiceAccounts:
    - server: "*"
      namespace: "team-a-*"
      defaultServiceAccount: deployer
  orphanedResources:
    warn: true
"#;
        let project: AppProject = serde_saphyr::from_str(manifest).unwrap();
        assert_eq!(project.spec.destinations.len(), 2);
        assert_eq!(project.spec.namespace_resource_whitelist, None);
        assert_eq!(
            project.spec.namespace_resource_blacklist[0].kind,
            "ResourceQuota"
        );
        assert_eq!(
            project.spec.destination_service_accounts[0].default_service_account,
            "deployer"
        );
    }
}
