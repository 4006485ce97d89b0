//! An Application's `spec.source` → its commit and objects: the Git cache and the renderers in
//! one call, for the Application controller.

use std::sync::Arc;

use futures::future::BoxFuture;
use kube::ResourceExt;
use kube::api::DynamicObject;
use mooring_crds::application::{Application, ApplicationSource};

use crate::gitops::application;

use crate::gitops::git::{Checkout, GitCache, GitError, credentials_for};
use crate::gitops::render::{
    BuildEnv, BuildIdentity, DirectoryOptions, JsonnetOptions, JsonnetVar, KustomizeOptions,
    RenderError, RenderLimits, RenderOptions, SourceType,
};

/// What `spec.source` rendered to at one commit.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// The commit checked out (its `commit` is the full SHA for `status.sync.revision`).
    pub checkout: Checkout,
    /// The objects, in render order.
    pub objects: Vec<DynamicObject>,
}

/// Why a source could not be fetched or rendered. Nothing may be applied or pruned after it.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading the credentials, fetching or checking out the revision.
    #[error(transparent)]
    Fetch(#[from] GitError),
    /// Rendering the checked-out path.
    #[error(transparent)]
    Render(#[from] RenderError),
}

impl SourceError {
    /// Whether retrying soon may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Fetch(error) => error.is_retryable(),
            SourceError::Render(error) => error.is_retryable(),
        }
    }

    /// A CamelCase word for the condition reason, the event and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::Fetch(error) => error.reason(),
            SourceError::Render(error) => error.reason(),
        }
    }
}

/// The render options of `source` (Argo CD's `directory` and `kustomize` fields, and which tool
/// it names) with the agent's limits and runners. The build environment is set once the
/// revision is known.
pub fn render_options(source: &ApplicationSource, limits: RenderLimits) -> RenderOptions {
    let directory = source
        .directory
        .as_ref()
        .map(|d| DirectoryOptions {
            recurse: d.recurse.unwrap_or(false),
            include: d.include.clone(),
            exclude: d.exclude.clone(),
        })
        .unwrap_or_default();
    let kustomize = source
        .kustomize
        .as_ref()
        .map(|k| KustomizeOptions {
            name_prefix: k.name_prefix.clone(),
            name_suffix: k.name_suffix.clone(),
            images: k.images.clone(),
            common_labels: k.common_labels.clone(),
        })
        .unwrap_or_default();
    let jsonnet = source
        .directory
        .as_ref()
        .and_then(|d| d.jsonnet.as_ref())
        .map(|j| {
            let vars = |vars: &[mooring_crds::application::JsonnetVar]| {
                vars.iter()
                    .map(|v| JsonnetVar {
                        name: v.name.clone(),
                        value: v.value.clone(),
                        code: v.code,
                    })
                    .collect()
            };
            JsonnetOptions {
                ext_vars: vars(&j.ext_vars),
                tlas: vars(&j.tlas),
                libs: j.libs.clone(),
            }
        })
        .unwrap_or_default();
    RenderOptions {
        directory,
        kustomize,
        jsonnet,
        explicit: explicit_types(source),
        env: BuildEnv::default(),
        limits,
    }
}

/// How long the webhook's look at a pushed branch (the fetch it starts while coalescing) answers
/// for the Applications it then refreshes: they ask the remote no more. Any other refresh (a
/// user's) asks the remote itself, so it always sees a push made just before it.
const WEBHOOK_LOOK: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether `app`'s latest refresh request came from the webhook.
fn refreshed_by_webhook(app: &Application) -> bool {
    app.annotations()
        .get(crate::gitops::webhook::REFRESH_ANNOTATION)
        .is_some_and(|value| value.starts_with(crate::gitops::webhook::REFRESH_PREFIX))
}

/// The tools `source` names itself, as Argo CD's `ExplicitType` (and `chart`, which makes a
/// Helm repository source).
fn explicit_types(source: &ApplicationSource) -> Vec<SourceType> {
    let mut types = Vec::new();
    if source.kustomize.is_some() {
        types.push(SourceType::Kustomize);
    }
    if source.helm.is_some() || source.chart.as_deref().is_some_and(|c| !c.is_empty()) {
        types.push(SourceType::Helm);
    }
    if source.directory.is_some() {
        types.push(SourceType::Directory);
    }
    if let Some(plugin) = &source.plugin {
        let name = plugin
            .get("name")
            .and_then(serde_json::Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        types.push(SourceType::Plugin(name));
    }
    types
}

/// Resolves `source.repoURL` at `source.targetRevision` (credentials from the labelled Secrets of
/// `credentials_namespace`) and renders `source.path` (default: the repository root), for no
/// Application in particular (the build environment's name and namespace are empty).
pub async fn fetch_and_render(
    client: &kube::Client,
    credentials_namespace: &str,
    cache: &GitCache,
    source: &ApplicationSource,
    limits: &RenderLimits,
) -> Result<Rendered, SourceError> {
    let nobody = BuildIdentity::default();
    let now = std::time::Duration::ZERO;
    fetch_and_render_within(
        client,
        credentials_namespace,
        cache,
        source,
        &nobody,
        limits,
        now,
    )
    .await
}

/// [`fetch_and_render`] for the Application `identity` names (its name, namespace and project
/// go into Argo CD's build environment, `$ARGOCD_APP_NAME`, …), reusing a look at the remote
/// younger than `max_look_age`.
async fn fetch_and_render_within(
    client: &kube::Client,
    credentials_namespace: &str,
    cache: &GitCache,
    source: &ApplicationSource,
    identity: &BuildIdentity,
    limits: &RenderLimits,
    max_look_age: std::time::Duration,
) -> Result<Rendered, SourceError> {
    let credentials = credentials_for(client, credentials_namespace, &source.repo_url).await?;
    let revision = source.target_revision.as_deref().unwrap_or("HEAD");
    let checkout = cache
        .resolve_recent(
            &source.repo_url,
            revision,
            credentials.as_ref(),
            max_look_age,
        )
        .await?;
    render_checkout(checkout, source, identity, limits).await
}

/// Renders `source.path` of `checkout`.
async fn render_checkout(
    checkout: Checkout,
    source: &ApplicationSource,
    identity: &BuildIdentity,
    limits: &RenderLimits,
) -> Result<Rendered, SourceError> {
    let mut options = render_options(source, limits.clone());
    let path = source.path.as_deref().unwrap_or(".");
    options.env = BuildEnv::new(
        identity,
        &checkout.commit,
        &source.repo_url,
        source.path.as_deref().unwrap_or_default(),
        source.target_revision.as_deref().unwrap_or_default(),
    );
    let objects = crate::gitops::render::render(&checkout.root, path, &options).await?;
    Ok(Rendered { checkout, objects })
}

fn source_error(error: SourceError) -> application::SourceError {
    application::SourceError {
        reason: error.reason(),
        message: crate::errors::error_chain(&error),
        retryable: error.is_retryable(),
    }
}

fn desired(rendered: Rendered) -> application::Desired {
    application::Desired {
        revision: rendered.checkout.commit,
        objects: rendered.objects,
    }
}

/// The build environment's view of `app`.
fn identity(app: &Application) -> BuildIdentity {
    BuildIdentity {
        app_name: app.metadata.name.clone().unwrap_or_default(),
        // Argo CD's ARGOCD_APP_NAMESPACE is the destination namespace.
        app_namespace: app.spec.destination.namespace.clone().unwrap_or_default(),
        project: crate::gitops::project::project_name(app).to_string(),
    }
}

/// The Application controller's [`application::Source`]: [`fetch_and_render`] with the agent's
/// cache and limits, its errors turned into the condition's reason and message.
pub struct GitSource {
    client: kube::Client,
    /// Where repository credential Secrets live (the agent's namespace, as Argo CD's).
    credentials_namespace: String,
    cache: Arc<GitCache>,
    limits: RenderLimits,
}

impl GitSource {
    /// A source reading credentials from `credentials_namespace`, fetching through `cache` and
    /// rendering within `limits` (which carry the shared kustomize runner).
    pub fn new(
        client: kube::Client,
        credentials_namespace: String,
        cache: Arc<GitCache>,
        limits: RenderLimits,
    ) -> GitSource {
        GitSource {
            client,
            credentials_namespace,
            cache,
            limits,
        }
    }
}

impl crate::gitops::webhook::Prefetch for GitSource {
    fn prefetch<'a>(
        &'a self,
        repo_url: &'a str,
        revision: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let credentials = credentials_for(&self.client, &self.credentials_namespace, repo_url)
                .await
                .map_err(|error| crate::errors::error_chain(&error))?;
            self.cache
                .resolve(repo_url, revision, credentials.as_ref())
                .await
                .map(|checkout| checkout.commit)
                .map_err(|error| crate::errors::error_chain(&error))
        })
    }
}

impl application::Source for GitSource {
    fn desired<'a>(
        &'a self,
        app: &'a Application,
    ) -> BoxFuture<'a, Result<application::Desired, application::SourceError>> {
        Box::pin(async move {
            let identity = identity(app);
            let rendered = fetch_and_render_within(
                &self.client,
                &self.credentials_namespace,
                &self.cache,
                &app.spec.source,
                &identity,
                &self.limits,
                if refreshed_by_webhook(app) {
                    WEBHOOK_LOOK
                } else {
                    std::time::Duration::ZERO
                },
            )
            .await
            .map_err(source_error)?;
            Ok(desired(rendered))
        })
    }

    fn desired_again<'a>(
        &'a self,
        app: &'a Application,
        commit: &'a str,
    ) -> BoxFuture<'a, Result<application::Desired, application::SourceError>> {
        Box::pin(async move {
            let source = &app.spec.source;
            let revision = source.target_revision.as_deref().unwrap_or("HEAD");
            match self.cache.checked_out(&source.repo_url, revision, commit) {
                Some(checkout) => render_checkout(checkout, source, &identity(app), &self.limits)
                    .await
                    .map(desired)
                    .map_err(source_error),
                // Gone from the cache: a look at the remote it is.
                None => self.desired(app).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mooring_crds::application::{DirectorySource, KustomizeSource};

    use super::*;

    #[test]
    fn argo_cd_fields_map_onto_render_options() {
        let source = ApplicationSource {
            repo_url: "https://git.example.test/repo.git".into(),
            directory: Some(DirectorySource {
                recurse: Some(true),
                include: Some("*.yaml".into()),
                exclude: Some("skip/*".into()),
                jsonnet: None,
            }),
            kustomize: Some(KustomizeSource {
                name_prefix: Some("p-".into()),
                name_suffix: Some("-s".into()),
                images: vec!["nginx:1.27".into()],
                common_labels: BTreeMap::from([("team".into(), "a".into())]),
            }),
            ..Default::default()
        };
        let options = render_options(&source, RenderLimits::default());
        assert_eq!(
            options.directory,
            DirectoryOptions {
                recurse: true,
                include: Some("*.yaml".into()),
                exclude: Some("skip/*".into()),
            }
        );
        assert_eq!(options.kustomize.name_prefix.as_deref(), Some("p-"));
        assert_eq!(options.kustomize.name_suffix.as_deref(), Some("-s"));
        assert_eq!(options.kustomize.images, ["nginx:1.27"]);
        assert_eq!(options.kustomize.common_labels["team"], "a");
        let bare = render_options(&ApplicationSource::default(), RenderLimits::default());
        assert_eq!(bare.directory, DirectoryOptions::default());
        assert_eq!(bare.kustomize, KustomizeOptions::default());
    }

    #[test]
    fn jsonnet_settings_and_the_named_tool_map_onto_render_options() {
        let source = ApplicationSource {
            repo_url: "https://git.example.test/repo.git".into(),
            directory: Some(DirectorySource {
                jsonnet: Some(mooring_crds::application::JsonnetSource {
                    ext_vars: vec![mooring_crds::application::JsonnetVar {
                        name: "env".into(),
                        value: "$ARGOCD_APP_NAME".into(),
                        code: false,
                    }],
                    tlas: vec![mooring_crds::application::JsonnetVar {
                        name: "n".into(),
                        value: "1 + 1".into(),
                        code: true,
                    }],
                    libs: vec!["vendor".into()],
                }),
                ..Default::default()
            }),
            plugin: Some(serde_json::json!({"name": "tanka"})),
            ..Default::default()
        };
        let options = render_options(&source, RenderLimits::default());
        assert_eq!(options.jsonnet.ext_vars[0].value, "$ARGOCD_APP_NAME");
        assert!(options.jsonnet.tlas[0].code);
        assert_eq!(options.jsonnet.libs, ["vendor"]);
        assert_eq!(
            options.explicit,
            [
                SourceType::Directory,
                SourceType::Plugin(Some("tanka".into()))
            ]
        );
        let chart = ApplicationSource {
            chart: Some("redis".into()),
            ..Default::default()
        };
        assert_eq!(
            render_options(&chart, RenderLimits::default()).explicit,
            [SourceType::Helm]
        );
        assert!(
            render_options(&ApplicationSource::default(), RenderLimits::default())
                .explicit
                .is_empty()
        );
    }

    #[test]
    fn the_chain_names_each_cause_once() {
        let error = SourceError::from(RenderError::Read {
            file: "apps/web.yaml".into(),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied"),
        });
        assert_eq!(
            crate::errors::error_chain(&error),
            "failed to read apps/web.yaml: permission denied"
        );
    }
}
