//! Whether an Application can be synced as written: its destination must be this cluster, and
//! the fields and hook types mooring accepts but does not implement are named in a condition
//! (they are ignored, not refused, so Argo CD manifests keep working).

use kube::api::DynamicObject;
use mooring_crds::application::{Application, reasons};
use mooring_crds::conditions::{Condition, ConditionStatus, names};

use crate::gitops::apply::hooks::{self, Role};

/// The destinations that mean "this cluster" (Argo CD's in-cluster server URL and name).
const IN_CLUSTER_SERVER: &str = "https://kubernetes.default.svc";
const IN_CLUSTER_NAME: &str = "in-cluster";

/// The destination must be this cluster.
pub(super) fn check_destination(app: &Application) -> Result<(), String> {
    let destination = &app.spec.destination;
    match (destination.server.as_deref(), destination.name.as_deref()) {
        (Some(IN_CLUSTER_SERVER) | None, Some(IN_CLUSTER_NAME) | None) => Ok(()),
        (server, name) => Err(format!(
            "mooring syncs only into its own cluster (server {IN_CLUSTER_SERVER} or name {IN_CLUSTER_NAME}); \
             spec.destination has server {} and name {}",
            server.unwrap_or("(unset)"),
            name.unwrap_or("(unset)")
        )),
    }
}

/// The `UnsupportedFields` condition, when `app` (or its project, `from_project`) sets any.
pub(super) fn unsupported_fields_condition(
    app: &Application,
    from_project: &[String],
) -> Option<Condition> {
    let mut unsupported = unsupported_fields(app);
    unsupported.extend_from_slice(from_project);
    if unsupported.is_empty() {
        return None;
    }
    Some(Condition::new(
        names::UNSUPPORTED_FIELDS,
        ConditionStatus::True,
        reasons::UNSUPPORTED_FIELDS,
        format!(
            "mooring does not implement {}; they are ignored",
            unsupported.join(", ")
        ),
    ))
}

/// Why a render of no objects is not a sync, naming the source path; `None` when objects were
/// rendered or `syncPolicy.automated.allowEmpty` allows an empty one.
pub(super) fn empty_render(app: &Application, objects: &[DynamicObject]) -> Option<String> {
    let allow_empty = app
        .spec
        .sync_policy
        .as_ref()
        .and_then(|p| p.automated.as_ref())
        .and_then(|a| a.allow_empty)
        .unwrap_or(false);
    if !objects.is_empty() || allow_empty {
        return None;
    }
    let path = app.spec.source.path.as_deref().unwrap_or(".");
    Some(format!(
        "source path {path} rendered no objects; nothing was applied or pruned \
         (set syncPolicy.automated.allowEmpty to sync an empty render)"
    ))
}

/// Set fields mooring accepts but does not implement, by their path.
pub fn unsupported_fields(app: &Application) -> Vec<String> {
    let spec = &app.spec;
    let mut found = Vec::new();
    if spec.sources.as_ref().is_some_and(|s| !s.is_empty()) {
        found.push("spec.sources".to_string());
    }
    if spec
        .ignore_differences
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        found.push("spec.ignoreDifferences".to_string());
    }
    if spec.source.helm.is_some() {
        found.push("spec.source.helm".to_string());
    }
    if spec.source.plugin.is_some() {
        found.push("spec.source.plugin".to_string());
    }
    if spec.source.chart.is_some() {
        found.push("spec.source.chart".to_string());
    }
    if let Some(policy) = &spec.sync_policy {
        if policy.managed_namespace_metadata.is_some() {
            found.push("spec.syncPolicy.managedNamespaceMetadata".to_string());
        }
        for option in &policy.sync_options {
            let name = option
                .split_once('=')
                .map_or(option.as_str(), |(n, _)| n.trim());
            // ServerSideApply is what mooring always does; the rest are implemented.
            let known = [
                "CreateNamespace",
                "PruneLast",
                "Prune",
                "PrunePropagationPolicy",
                "ServerSideApply",
                "ApplyOutOfSyncOnly",
            ];
            if !known.contains(&name) {
                found.push(format!("spec.syncPolicy.syncOptions {option}"));
            }
        }
    }
    found
}

/// Names the rendered objects that are hooks of a kind mooring does not run (PreDelete,
/// PostDelete, Helm's test and rollback hooks) in the `UnsupportedFields` condition (adding to
/// it when fields are already named there). They are not applied, as in Argo CD during a sync.
pub(super) fn note_hooks_not_run(conditions: &mut Vec<Condition>, objects: &[DynamicObject]) {
    let hooks = hooks_not_run(objects);
    if hooks.is_empty() {
        return;
    }
    let listed = crate::gitops::apply::prune::summarize_names(&hooks);
    let sentence = format!("hooks of these types are not implemented and not applied: {listed}");
    match conditions
        .iter_mut()
        .find(|c| c.type_ == names::UNSUPPORTED_FIELDS)
    {
        Some(existing) => {
            existing.message = format!("{}; {sentence}", existing.message);
        }
        None => conditions.push(Condition::new(
            names::UNSUPPORTED_FIELDS,
            ConditionStatus::True,
            reasons::UNSUPPORTED_FIELDS,
            sentence,
        )),
    }
}

/// "Kind name (types)" of each object whose hook annotations name only types mooring does not
/// run.
fn hooks_not_run(objects: &[DynamicObject]) -> Vec<String> {
    objects
        .iter()
        .filter_map(|o| match hooks::role(&o.metadata) {
            Role::NotRun(types) => Some(format!(
                "{} {} ({})",
                o.types.as_ref()?.kind,
                o.metadata
                    .name
                    .as_deref()
                    .or(o.metadata.generate_name.as_deref())?,
                types.join(", ")
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use mooring_crds::application::{
        ApplicationDestination, ApplicationSpec, AutomatedSync, SyncPolicy,
    };

    use super::*;

    fn app(spec: ApplicationSpec) -> Application {
        Application::new("web", spec)
    }

    #[test]
    fn only_this_cluster_is_a_valid_destination() {
        let to = |server: Option<&str>, name: Option<&str>| {
            check_destination(&app(ApplicationSpec {
                destination: ApplicationDestination {
                    server: server.map(str::to_string),
                    name: name.map(str::to_string),
                    namespace: None,
                },
                ..Default::default()
            }))
        };
        assert!(to(Some("https://kubernetes.default.svc"), None).is_ok());
        assert!(to(None, Some("in-cluster")).is_ok());
        assert!(to(None, None).is_ok());
        let error = to(Some("https://prod.example.com:6443"), None).unwrap_err();
        assert!(error.contains("https://prod.example.com:6443"), "{error}");
        assert!(to(None, Some("prod")).is_err());
    }

    #[test]
    fn unsupported_fields_are_named() {
        let mut spec = ApplicationSpec::default();
        spec.source.helm = Some(serde_json::json!({"valueFiles": ["v.yaml"]}));
        spec.ignore_differences = Some(vec![serde_json::json!({"kind": "Deployment"})]);
        spec.sync_policy = Some(SyncPolicy {
            sync_options: vec!["CreateNamespace=true".into(), "Replace=true".into()],
            ..Default::default()
        });
        assert_eq!(
            unsupported_fields(&app(spec)),
            [
                "spec.ignoreDifferences",
                "spec.source.helm",
                "spec.syncPolicy.syncOptions Replace=true"
            ]
        );
        assert!(unsupported_fields(&app(ApplicationSpec::default())).is_empty());
    }

    #[test]
    fn an_empty_render_is_named_by_its_path_unless_allow_empty() {
        let mut spec = ApplicationSpec::default();
        spec.source.path = Some("apps/jsonnet".into());
        let message = empty_render(&app(spec.clone()), &[]).unwrap();
        assert!(
            message.contains("source path apps/jsonnet rendered no objects"),
            "{message}"
        );
        assert!(message.contains("allowEmpty"), "{message}");
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}
        }))
        .unwrap();
        assert_eq!(empty_render(&app(spec.clone()), &[object]), None);
        spec.sync_policy = Some(SyncPolicy {
            automated: Some(AutomatedSync {
                allow_empty: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(empty_render(&app(spec), &[]), None);
    }

    #[test]
    fn hooks_mooring_does_not_run_are_named_and_others_are_not() {
        let object = |name: &str, annotations: serde_json::Value| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": name, "annotations": annotations},
            }))
            .unwrap()
        };
        let objects = [
            object(
                "cleanup",
                serde_json::json!({"argocd.argoproj.io/hook": "PostDelete"}),
            ),
            object("chart-test", serde_json::json!({"helm.sh/hook": "test"})),
            object(
                "migrate",
                serde_json::json!({"argocd.argoproj.io/hook": "PreSync"}),
            ),
        ];
        let mut conditions = Vec::new();
        note_hooks_not_run(&mut conditions, &objects);
        let [condition] = conditions.as_slice() else {
            panic!("one condition: {conditions:?}");
        };
        assert_eq!(condition.type_, names::UNSUPPORTED_FIELDS);
        assert!(
            condition.message.contains("Job cleanup (PostDelete)"),
            "{}",
            condition.message
        );
        assert!(
            condition.message.contains("Job chart-test (Helm test)"),
            "{}",
            condition.message
        );
        assert!(
            !condition.message.contains("migrate"),
            "{}",
            condition.message
        );
        let mut none = Vec::new();
        note_hooks_not_run(&mut none, &objects[2..]);
        assert!(none.is_empty());
    }
}
