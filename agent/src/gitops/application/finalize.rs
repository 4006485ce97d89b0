//! An Application being deleted: with Argo CD's resources finalizer, delete its objects
//! (guarded like a prune) and then release the finalizer; without one, leave the objects in
//! place (Argo CD's default).

use json_patch::jsonptr::PointerBuf;
use json_patch::{PatchOperation, ReplaceOperation, TestOperation};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use mooring_crds::application::Application;

use super::{Context, Error, events, failed_objects};
use crate::gitops::apply::object::AppId;
use crate::gitops::apply::prune::PruneSettings;
use crate::gitops::apply::{Engine, Mode, SyncRequest};

/// Argo CD's finalizers that ask for the Application's resources to be deleted with it
/// (foreground, or background for the `/background` variant).
const RESOURCES_FINALIZER: &str = "resources-finalizer.argocd.argoproj.io";
const RESOURCES_FINALIZER_BACKGROUND: &str = "resources-finalizer.argocd.argoproj.io/background";

/// Deletes the objects of `app` if a resources finalizer asks for it (with `engine`: as the
/// Application's ServiceAccount, only what its project permits), then removes that finalizer
/// so the deletion completes.
pub(super) async fn finalize(
    ctx: &Context,
    engine: &Engine,
    app: &Application,
    id: &AppId,
) -> Result<Action, Error> {
    let finalizers = app.metadata.finalizers.clone().unwrap_or_default();
    let ours: Vec<&String> = finalizers
        .iter()
        .filter(|f| is_resources_finalizer(f))
        .collect();
    if ours.is_empty() {
        return Ok(Action::await_change());
    }
    let background = ours.iter().any(|f| *f == RESOURCES_FINALIZER_BACKGROUND);
    delete_resources(ctx, engine, app, id, background).await?;
    release_finalizer(ctx, app, id, finalizers).await?;
    Ok(Action::await_change())
}

fn is_resources_finalizer(finalizer: &str) -> bool {
    finalizer == RESOURCES_FINALIZER || finalizer == RESOURCES_FINALIZER_BACKGROUND
}

/// Deletes every object of the inventory, with background propagation when asked.
async fn delete_resources(
    ctx: &Context,
    engine: &Engine,
    app: &Application,
    id: &AppId,
    background: bool,
) -> Result<(), Error> {
    let status = app.status.clone().unwrap_or_default();
    let mut sync_options = app
        .spec
        .sync_policy
        .as_ref()
        .map(|p| p.sync_options.clone())
        .unwrap_or_default();
    if background {
        sync_options.push("PrunePropagationPolicy=background".into());
    }
    let request = SyncRequest {
        app: id.clone(),
        objects: Vec::new(),
        destination_namespace: app.spec.destination.namespace.clone(),
        sync_options,
        inventory: status.resources.clone(),
        prune: PruneSettings::default(),
        mode: Mode::Apply,
        hooks: crate::gitops::apply::Hooks::Ignore,
    };
    let report = engine.delete_all(&request).await;
    events::resources_deleted(ctx, app, &report).await;
    match failed_objects(&report) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Removes the resources finalizers from `finalizers` (the list as read).
async fn release_finalizer(
    ctx: &Context,
    app: &Application,
    id: &AppId,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let remaining: Vec<String> = finalizers
        .into_iter()
        .filter(|f| !is_resources_finalizer(f))
        .collect();
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let patch = finalizer_patch(app.metadata.finalizers.clone(), remaining);
    api.patch(&id.name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(|source| Error::RemoveFinalizer {
            name: id.name.clone(),
            source,
        })?;
    Ok(())
}

/// A JSON patch that replaces the finalizers `read` with `remaining`, testing the list first:
/// another controller's finalizer change in between makes it fail and retry instead of being
/// overwritten.
fn finalizer_patch(read: Option<Vec<String>>, remaining: Vec<String>) -> json_patch::Patch {
    let path = PointerBuf::from_tokens(["metadata", "finalizers"]);
    json_patch::Patch(vec![
        PatchOperation::Test(TestOperation {
            path: path.clone(),
            value: serde_json::Value::from(read),
        }),
        PatchOperation::Replace(ReplaceOperation {
            path,
            value: serde_json::Value::from(remaining),
        }),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finalizer_patch_tests_the_list_before_replacing_it() {
        let read = vec![RESOURCES_FINALIZER.to_string(), "other/finalizer".into()];
        let patch = finalizer_patch(Some(read), vec!["other/finalizer".into()]);
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers",
                 "value": [RESOURCES_FINALIZER, "other/finalizer"]},
                {"op": "replace", "path": "/metadata/finalizers", "value": ["other/finalizer"]},
            ])
        );
        let unset = serde_json::to_value(finalizer_patch(None, Vec::new())).unwrap();
        assert_eq!(unset[0]["value"], serde_json::Value::Null);
    }
}
