//! The Application controller's [`Source`]: repository credentials from Secrets, the shared Git
//! cache, then the renderer. Each step's error keeps its reason (`AuthenticationFailed`,
//! `HostKeyMismatch`, `RefNotFound`, `InvalidManifest`, …) for the Application's condition.

use std::sync::Arc;

use futures::future::BoxFuture;
use mooring_crds::application::Application;

use crate::controllers::application::{Desired, Source, SourceError};
use crate::git::{GitCache, GitError};
use crate::render::{self, DirectoryOptions, KustomizeOptions, RenderError, RenderLimits};

/// Git + render for Applications.
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

    async fn fetch_and_render(&self, app: &Application) -> Result<Desired, SourceError> {
        let source = &app.spec.source;
        let revision = source
            .target_revision
            .as_deref()
            .filter(|r| !r.is_empty())
            .unwrap_or("HEAD");
        let credentials = crate::git::credentials_for(
            &self.client,
            &self.credentials_namespace,
            &source.repo_url,
        )
        .await
        .map_err(git_error)?;
        let checkout = self
            .cache
            .resolve(&source.repo_url, revision, credentials.as_ref())
            .await
            .map_err(git_error)?;
        let directory = source.directory.clone().unwrap_or_default();
        let kustomize = source.kustomize.clone().unwrap_or_default();
        let options = render::RenderOptions {
            directory: DirectoryOptions {
                recurse: directory.recurse.unwrap_or(false),
                include: directory.include,
                exclude: directory.exclude,
            },
            kustomize: KustomizeOptions {
                name_prefix: kustomize.name_prefix,
                name_suffix: kustomize.name_suffix,
                images: kustomize.images,
                common_labels: kustomize.common_labels,
            },
            limits: self.limits.clone(),
        };
        let path = source.path.as_deref().unwrap_or(".");
        let objects = render::render(&checkout.root, path, &options)
            .await
            .map_err(|error| render_error(&checkout.commit, error))?;
        Ok(Desired {
            revision: checkout.commit,
            objects,
        })
    }
}

impl Source for GitSource {
    fn desired<'a>(&'a self, app: &'a Application) -> BoxFuture<'a, Result<Desired, SourceError>> {
        Box::pin(self.fetch_and_render(app))
    }
}

fn git_error(error: GitError) -> SourceError {
    SourceError {
        reason: error.reason(),
        message: crate::error_chain(&error),
        retryable: error.is_retryable(),
    }
}

fn render_error(commit: &str, error: RenderError) -> SourceError {
    SourceError {
        reason: error.reason(),
        message: format!(
            "failed to render commit {}: {}",
            commit.get(..12).unwrap_or(commit),
            crate::error_chain(&error)
        ),
        retryable: error.is_retryable(),
    }
}
