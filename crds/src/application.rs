//! `Application` (mooring.dev/v1alpha1): one Git path synced into this cluster.
//!
//! Field names follow Argo CD's `argoproj.io/v1alpha1` Application so that existing manifests work
//! with only the `apiVersion` changed. Fields mooring adds (`suspend`, `pollInterval`) are marked.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;

/// What to sync from where to where, and how.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "mooring.dev",
    version = "v1alpha1",
    kind = "Application",
    namespaced,
    status = "ApplicationStatus",
    shortname = "app",
    shortname = "apps",
    category = "mooring",
    printcolumn = r#"{"name":"Sync Status","type":"string","jsonPath":".status.sync.status"}"#,
    printcolumn = r#"{"name":"Health Status","type":"string","jsonPath":".status.health.status"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.sync.revision","priority":10}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// The AppProject (in the agent's namespace) whose rules every object of this Application
    /// is checked against; default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// mooring (Flux's model): the ServiceAccount, in the destination namespace, that every
    /// apply, prune, dry-run and read of this Application runs as. A matching
    /// `destinationServiceAccounts` entry of the project wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The Git repository, revision and path to render.
    pub source: ApplicationSource,
    /// Where the rendered objects go. Only this cluster is supported.
    pub destination: ApplicationDestination,
    /// When and how to sync; without `automated` the Application is only compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_policy: Option<SyncPolicy>,
    /// mooring: stop reconciling this Application (nothing is applied or pruned) while true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// mooring: how often to look for new commits, as a Go duration (`30s`, `3m`, `1h`).
    /// Defaults to the agent's `--default-poll-interval` (3m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,
    /// Argo CD's multi-source list; not supported (a condition names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_list")]
    pub sources: Option<Vec<serde_json::Value>>,
    /// Argo CD's diff normalisation rules; not supported (a condition names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_list")]
    pub ignore_differences: Option<Vec<serde_json::Value>>,
    /// Argo CD's informational key/value list; accepted and ignored (it has no effect in Argo
    /// either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_list")]
    pub info: Option<Vec<serde_json::Value>>,
    /// How many entries `status.history` keeps (Argo CD's field; default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i64>,
}

/// Schema of a list of free-form objects: accepted as they are (`x-kubernetes-preserve-unknown-fields`)
/// so that mooring can name them in a condition instead of the API server dropping them silently.
fn any_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// Schema of one free-form object (see [`any_list`]).
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// A Git source, as Argo CD's `spec.source`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSource {
    /// The repository URL: `https://`, `ssh://` or (for tests) `file://`.
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    /// A branch, tag, full commit SHA or `HEAD` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,
    /// The directory inside the repository; must stay inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Options for a plain YAML/JSON directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectorySource>,
    /// Options for a Kustomize directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<KustomizeSource>,
    /// Argo CD's Helm options; not supported yet (a condition names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub helm: Option<serde_json::Value>,
    /// Argo CD's config-management plugin; not supported (a condition names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub plugin: Option<serde_json::Value>,
    /// Argo CD's Helm chart name (Helm repository sources); not supported (a condition names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
}

/// Plain-directory options, as Argo CD's `source.directory`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DirectorySource {
    /// Include subdirectories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurse: Option<bool>,
    /// A glob of files to include (`*.yaml`, or `{a.yaml,b.yaml}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<String>,
    /// A glob of files to exclude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<String>,
    /// How the directory's `*.jsonnet` files are evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonnet: Option<JsonnetSource>,
}

/// Jsonnet settings, as Argo CD's `source.directory.jsonnet`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JsonnetSource {
    /// External variables (`std.extVar`); values may use the build environment (`$ARGOCD_APP_NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ext_vars: Vec<JsonnetVar>,
    /// Top-level arguments, passed when a file evaluates to a function.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tlas: Vec<JsonnetVar>,
    /// Library directories searched by `import`, relative to the repository root (which they may
    /// not leave).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libs: Vec<String>,
}

/// One external variable or top-level argument, as Argo CD's `JsonnetVar`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JsonnetVar {
    /// The variable's name.
    pub name: String,
    /// Its value: a string, or Jsonnet code when `code` is true.
    #[serde(default)]
    pub value: String,
    /// Evaluate `value` as Jsonnet code instead of passing it as a string.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub code: bool,
}

/// Kustomize overrides, as Argo CD's `source.kustomize`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KustomizeSource {
    /// Prefix added to every object name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// Suffix added to every object name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_suffix: Option<String>,
    /// Image overrides in `kustomize edit set image` syntax (`name=repo:tag`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Labels added to every object and selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub common_labels: BTreeMap<String, String>,
}

/// The target, as Argo CD's `spec.destination`. Only this cluster is supported:
/// `server: https://kubernetes.default.svc` or `name: in-cluster`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationDestination {
    /// The API server URL of the target cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The name of the target cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The namespace for namespaced objects that do not set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// As Argo CD's `spec.syncPolicy`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicy {
    /// Sync without a person asking; absent means compare only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated: Option<AutomatedSync>,
    /// Options such as `CreateNamespace=true`, `PruneLast=true`, `Prune=false`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_options: Vec<String>,
    /// How failed syncs are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryStrategy>,
    /// Argo CD's labels and annotations for a created namespace; not supported (a condition
    /// names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub managed_namespace_metadata: Option<serde_json::Value>,
}

/// As Argo CD's `syncPolicy.automated`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutomatedSync {
    /// Delete objects that left Git (guarded; see the prune rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// Revert changes made in the cluster by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_heal: Option<bool>,
    /// Allow a sync whose render is empty to prune everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_empty: Option<bool>,
}

/// As Argo CD's `syncPolicy.retry`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetryStrategy {
    /// The most attempts; a negative value retries forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// The delay between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

/// As Argo CD's `retry.backoff`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// The first delay, as a Go duration (`5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The factor each delay is multiplied by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<i64>,
    /// The longest delay, as a Go duration (`3m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
}

/// What the agent last saw and did.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// Whether the cluster matches Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
    /// The aggregated health of the applied objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// Every object applied for this Application: the inventory that guards pruning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceStatus>,
    /// kstatus conditions (`Synced`, `Ready`, and warnings such as `UnsupportedFields`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last revisions applied, newest last (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionHistory>,
    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last sync operation that ran resource hooks (Argo CD's `status.operationState`):
    /// which revision and spec generation it synced, how far it got and each hook's result.
    /// Absent while the desired set has no hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_state: Option<OperationState>,
}

/// One sync of a revision with resource hooks. Hooks run once per operation: a resync of the
/// same revision and spec generation after the operation finished runs none.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperationState {
    /// The commit SHA synced.
    pub revision: String,
    /// The Application's `metadata.generation` the operation started from: a spec change
    /// starts a new operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Running until every phase finished, then Succeeded or Failed.
    pub phase: OperationPhase,
    /// Why it is running still, or why it failed (naming the hook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the operation started, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it finished, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Every hook started by the operation, in the order they started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookStatus>,
}

/// The phase of a sync operation (Argo CD's `OperationPhase`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum OperationPhase {
    /// Hooks or waves are still awaited.
    #[default]
    Running,
    /// Every phase finished.
    Succeeded,
    /// A hook failed: the later phases were not applied and the SyncFail hooks ran.
    Failed,
}

/// One hook of a sync operation, as an entry of Argo CD's `syncResult.resources`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HookStatus {
    /// API group, empty for the core group.
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespace, absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The name of the object created (for a `generateName` hook, the name the API server
    /// chose).
    pub name: String,
    /// The hook's `metadata.generateName` in Git, when it has one instead of a name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    /// The sync phase the hook ran in.
    pub hook_type: HookType,
    /// Its result so far.
    pub hook_phase: HookPhase,
    /// Why, for people (the Job's failure message, for instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// When a hook runs (`argocd.argoproj.io/hook`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    Deserialize,
    Serialize,
    JsonSchema,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
pub enum HookType {
    /// Before anything else of the sync is applied.
    #[default]
    PreSync,
    /// With the sync's own objects, in their waves.
    Sync,
    /// After every object is applied and healthy.
    PostSync,
    /// When a hook of the operation failed.
    SyncFail,
}

/// A hook's result (Argo CD's `HookPhase`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum HookPhase {
    /// Created; not finished yet.
    #[default]
    Running,
    /// Finished successfully (a Job Complete, a Pod Succeeded, any other kind healthy).
    Succeeded,
    /// Failed (a Job failed, a Pod failed, any other kind degraded).
    Failed,
}

/// As Argo CD's `status.sync`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// `Synced`, `OutOfSync` or `Unknown`.
    pub status: SyncState,
    /// The commit SHA compared against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// Argo CD's sync states.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum SyncState {
    /// The cluster matches Git.
    Synced,
    /// The cluster differs from Git.
    OutOfSync,
    /// Not compared yet, or the comparison failed.
    #[default]
    Unknown,
}

/// As Argo CD's `status.health`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// The health state.
    pub status: HealthState,
    /// Why, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Argo CD's health states.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum HealthState {
    /// Everything is ready.
    Healthy,
    /// Still rolling out.
    Progressing,
    /// Failed or failing.
    Degraded,
    /// Expected but absent.
    Missing,
    /// Paused on purpose.
    Suspended,
    /// Not assessed.
    #[default]
    Unknown,
}

/// One object in the inventory, as an entry of Argo CD's `status.resources`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// API group, empty for the core group.
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespace, absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Whether this object matches Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SyncState>,
    /// This object's health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// The object left Git but is still in the cluster (prune off, refused or not allowed), as
    /// Argo CD's `requiresPruning`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_pruning: Option<bool>,
}

/// One applied revision, as an entry of Argo CD's `status.history`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionHistory {
    /// The commit SHA applied.
    pub revision: String,
    /// When the sync finished, RFC 3339.
    pub deployed_at: String,
}

/// Condition and event reasons the Application controller writes, so the controller, tests and
/// docs share one spelling. Condition types are in [`crate::conditions::names`]; the `Ready`
/// condition of an unhealthy but synced Application takes its [`HealthState`] as the reason, and
/// fetch and render failures bring their own (`FetchFailed`, `RenderFailed`, …).
pub mod reasons {
    /// Fields mooring does not implement were set (or sync hooks were found); they are ignored.
    pub const UNSUPPORTED_FIELDS: &str = "UnsupportedFields";
    /// The destination is not this cluster; nothing is applied.
    pub const INVALID_DESTINATION: &str = "InvalidDestination";
    /// `spec.suspend` is true; nothing is applied or pruned.
    pub const SUSPENDED: &str = "Suspended";
    /// A sync wave is applied and the next one waits for it to become healthy.
    pub const SYNC_WAVE_NOT_HEALTHY: &str = "SyncWaveNotHealthy";
    /// The sync, or some of its objects, failed.
    pub const SYNC_FAILED: &str = "SyncFailed";
    /// Every object matches Git.
    pub const SYNCED: &str = "Synced";
    /// The source rendered no objects and `syncPolicy.automated.allowEmpty` is off: nothing is
    /// applied or pruned, and the Application is not Synced.
    pub const EMPTY_RENDER: &str = "EmptyRender";
    /// The cluster differs from Git.
    pub const OUT_OF_SYNC: &str = "OutOfSync";
    /// Custom resources wait for their CustomResourceDefinition.
    pub const MISSING_CUSTOM_RESOURCE_DEFINITION: &str = "MissingCustomResourceDefinition";
    /// Objects that left Git were kept (pruning is off or an object asks to be kept).
    pub const PRUNE_SKIPPED: &str = "PruneSkipped";
    /// A managed object was changed by hand and selfHeal is off.
    pub const MANUAL_CHANGE: &str = "ManualChange";
    /// In sync with Git and healthy (`Ready`).
    pub const HEALTHY: &str = "Healthy";
    /// The status could not be written.
    pub const STATUS_UPDATE_FAILED: &str = "StatusUpdateFailed";
    /// The resources finalizer could not be removed.
    pub const FINALIZER_UPDATE_FAILED: &str = "FinalizerUpdateFailed";
    /// A resource hook failed: the later phases were not applied.
    pub const HOOK_FAILED: &str = "HookFailed";
    /// The Application could not be read.
    pub const API_ERROR: &str = "ApiError";
    /// Event: selfHeal reverted a manual change.
    pub const DRIFT_REVERTED: &str = "DriftReverted";
    /// Event: a manual change was seen and not reverted (yet).
    pub const DRIFT_DETECTED: &str = "DriftDetected";
    /// Event: objects were applied.
    pub const APPLIED: &str = "Applied";
    /// Event: objects that left Git were pruned.
    pub const PRUNED: &str = "Pruned";
    /// The Application's project does not exist, does not admit its namespace, repository or
    /// destination, or names no ServiceAccount for it: nothing is applied (Argo CD's
    /// `InvalidSpecError`).
    pub const INVALID_SPEC: &str = "InvalidSpecError";
    /// A rendered object is not permitted by the project: nothing of the sync is written.
    pub const PROJECT_VIOLATION: &str = "ProjectViolation";
    /// Event: the resources finalizer deleted the Application's objects.
    pub const RESOURCES_DELETED: &str = "ResourcesDeleted";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed article's Application, with only the apiVersion changed, parses.
    #[test]
    fn argo_cd_manifest_parses_with_only_the_api_version_changed() {
        let manifest = r#"
apiVersion: mooring.dev/v1alpha1
kind: Application
metadata:
  name: platform-api
  namespace: argocd
spec:
  project: default
  source:
    repoURL: https://github.com/example/platform-gitops.git
    targetRevision: main
    path: apps/platform-api/overlays/production
  destination:
    server: https://kubernetes.default.svc
    namespace: platform-api
  syncPolicy:
    automated:
      prune: true
      selfHeal: true
    syncOptions:
      - CreateNamespace=true
"#;
        let app: Application = serde_saphyr::from_str(manifest).unwrap();
        assert_eq!(
            app.spec.source.repo_url,
            "https://github.com/example/platform-gitops.git"
        );
        assert_eq!(app.spec.source.target_revision.as_deref(), Some("main"));
        let automated = app
            .spec
            .sync_policy
            .as_ref()
            .unwrap()
            .automated
            .as_ref()
            .unwrap();
        assert_eq!(
            (automated.prune, automated.self_heal),
            (Some(true), Some(true))
        );
        assert_eq!(
            app.spec.sync_policy.unwrap().sync_options,
            vec!["CreateNamespace=true".to_string()]
        );
    }

    /// Argo CD's `directory.jsonnet` parses into typed fields.
    #[test]
    fn argo_cd_jsonnet_settings_parse() {
        let manifest = r#"
repoURL: https://github.com/example/platform-gitops.git
path: jsonnet/app
directory:
  recurse: true
  jsonnet:
    extVars:
      - {name: env, value: prod}
      - {name: replicas, value: "3", code: true}
    tlas:
      - {name: app, value: $ARGOCD_APP_NAME}
    libs: [vendor]
"#;
        let source: ApplicationSource = serde_saphyr::from_str(manifest).unwrap();
        let jsonnet = source.directory.unwrap().jsonnet.unwrap();
        assert_eq!(jsonnet.ext_vars.len(), 2);
        assert!(!jsonnet.ext_vars[0].code && jsonnet.ext_vars[1].code);
        assert_eq!(jsonnet.tlas[0].value, "$ARGOCD_APP_NAME");
        assert_eq!(jsonnet.libs, ["vendor"]);
        let json = serde_json::to_value(&jsonnet.ext_vars[0]).unwrap();
        assert_eq!(json, serde_json::json!({"name": "env", "value": "prod"}));
    }

    /// Unset optional fields are not written back, so GitOps tools see no diff.
    #[test]
    fn defaults_are_not_serialized() {
        let spec = ApplicationSpec {
            source: ApplicationSource {
                repo_url: "https://example.invalid/repo.git".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"source": {"repoURL": "https://example.invalid/repo.git"}, "destination": {}})
        );
    }
}
