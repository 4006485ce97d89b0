//! Who an Application is allowed to be: its AppProject (read from the agent's namespace), the
//! admission of Applications outside the agent's namespace (`sourceNamespaces`), and the
//! ServiceAccount its syncs impersonate, with one cached client per ServiceAccount.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kube::{Api, ResourceExt};
use mooring_crds::app_project::AppProject;
use mooring_crds::application::Application;
use tokio::sync::OnceCell;

use super::{Context, Error};
use crate::controllers::lock;
use crate::gitops::apply::object::ObjectKey;
use crate::gitops::apply::{Engine, Permit};
use crate::gitops::project::{DEFAULT_PROJECT, Project, builtin_default, project_name};

/// Whether and how an Application is reconciled.
pub(super) enum Admission {
    /// Outside the agent's namespace and no project admits it: not this agent's business (no
    /// status is written, as Argo CD ignores Applications in namespaces it does not watch).
    Ignored,
    /// Admitted, but its project refuses it as written (missing project, repository,
    /// destination, no ServiceAccount): the message is the condition's.
    Refused(String),
    /// Admitted under `project`, impersonating `service_account` (namespace, name) if any.
    Admitted {
        /// The project's rules.
        project: Arc<Project>,
        /// The ServiceAccount the sync runs as.
        service_account: Option<(String, String)>,
    },
}

/// The agent's namespace and the clients impersonating ServiceAccounts.
#[derive(Default)]
pub(super) struct Tenancy {
    /// Where AppProjects live and whose Applications the built-in default project admits;
    /// `None` (library use): each Application's own namespace plays that part.
    pub agent_namespace: Option<String>,
    /// The kubeconfig the impersonating clients start from (`None`: inferred, in-cluster first).
    pub kubeconfig: Option<PathBuf>,
    /// Whether Argo CD's own AppProjects (`argoproj.io`) are read too (`--argocd-api`).
    pub argocd_api: bool,
    base: OnceCell<kube::Config>,
    clients: Mutex<HashMap<(String, String), kube::Client>>,
}

impl Tenancy {
    /// A client that sends every request as `system:serviceaccount:<namespace>:<name>` (the
    /// agent's role may `impersonate` serviceaccounts, nothing else), built once per account.
    async fn client_for(&self, namespace: &str, name: &str) -> Result<kube::Client, Error> {
        let account = (namespace.to_string(), name.to_string());
        if let Some(client) = lock(&self.clients).get(&account) {
            return Ok(client.clone());
        }
        let fail = |message: String| Error::Impersonate {
            service_account: format!("{namespace}/{name}"),
            message,
        };
        let base = self
            .base
            .get_or_try_init(|| crate::cluster::config(self.kubeconfig.as_deref()))
            .await
            .map_err(|e| fail(crate::errors::error_chain(&e)))?;
        let mut config = base.clone();
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
        config.auth_info.impersonate_groups = None;
        let client =
            kube::Client::try_from(config).map_err(|e| fail(crate::errors::error_chain(&e)))?;
        lock(&self.clients).insert(account, client.clone());
        Ok(client)
    }
}

impl Permit for Project {
    fn check(&self, key: &ObjectKey, namespaced: bool) -> Result<(), String> {
        self.check_object(key, namespaced)
    }
}

/// The Application's project and ServiceAccount, or why it is ignored or refused.
pub(super) async fn admit(ctx: &Context, app: &Application) -> Result<Admission, Error> {
    let app_namespace = app.namespace().unwrap_or_default();
    let agent_namespace = ctx
        .tenancy
        .agent_namespace
        .clone()
        .unwrap_or_else(|| app_namespace.clone());
    let in_agent_namespace = app_namespace == agent_namespace;
    let name = project_name(app);
    let api: Api<AppProject> = Api::namespaced(ctx.client.clone(), &agent_namespace);
    let found = api
        .get_opt(name)
        .await
        .map_err(|source| Error::ReadProject {
            name: name.to_string(),
            source,
        })?;
    let found = match found {
        Some(found) => Some(found.spec),
        None if ctx.tenancy.argocd_api => {
            match argocd_project(ctx, &agent_namespace, name).await? {
                Some(Ok(spec)) => Some(spec),
                Some(Err(message)) => return Ok(Admission::Refused(message)),
                None => None,
            }
        }
        None => None,
    };
    let project = match found {
        Some(spec) => Project {
            name: name.to_string(),
            spec,
        },
        None if !in_agent_namespace => return Ok(Admission::Ignored),
        None if name == DEFAULT_PROJECT => Project {
            name: name.to_string(),
            spec: builtin_default(),
        },
        None => {
            return Ok(Admission::Refused(format!(
                "application references project {name} which does not exist"
            )));
        }
    };
    if !project.admits_namespace(&app_namespace, &agent_namespace) {
        return Ok(Admission::Ignored);
    }
    if let Err(message) = project.check_application(app) {
        return Ok(Admission::Refused(message));
    }
    match project.service_account(app) {
        Ok(service_account) => Ok(Admission::Admitted {
            project: Arc::new(project),
            service_account,
        }),
        Err(message) => Ok(Admission::Refused(message)),
    }
}

/// Argo CD's own AppProject `name` (`argoproj.io`), read as a dynamic object: its `spec` has the
/// same fields as mooring's. One whose spec does not parse is `Some(Err)`: the refusal, naming it.
async fn argocd_project(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<Result<mooring_crds::app_project::AppProjectSpec, String>>, Error> {
    let resource = mooring_crds::app_project::argocd_api_resource();
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    let found = api
        .get_opt(name)
        .await
        .map_err(|source| Error::ReadProject {
            name: format!("{name} (argoproj.io)"),
            source,
        })?;
    let Some(found) = found else {
        return Ok(None);
    };
    let spec = found.data.get("spec").cloned().unwrap_or_default();
    Ok(Some(serde_json::from_value(spec).map_err(|error| {
        format!("AppProject {name} (argoproj.io) has an invalid spec: {error}")
    })))
}

/// The engine for this Application: its project's rules, and its ServiceAccount's client.
pub(super) async fn engine_for(
    ctx: &Context,
    project: &Arc<Project>,
    service_account: Option<&(String, String)>,
) -> Result<Engine, Error> {
    let client = match service_account {
        Some((namespace, name)) => Some(ctx.tenancy.client_for(namespace, name).await?),
        None => None,
    };
    let permit: Arc<dyn Permit> = project.clone();
    Ok(ctx.engine.scoped(client, Some(permit)))
}
