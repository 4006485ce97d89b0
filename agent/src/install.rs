//! Installing mooring's CRDs by server-side apply, and waiting until the API server serves them.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};

use crate::cluster::FIELD_MANAGER;

/// Why the CRDs could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server-side apply of a CRD was refused.
    #[error("failed to apply CustomResourceDefinition {name}")]
    Apply {
        /// The CRD.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A CRD was applied but did not become Established in time.
    #[error("CustomResourceDefinition {name} was not Established within {timeout:?}")]
    NotEstablished {
        /// The CRD.
        name: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// Watching a CRD for its Established condition failed.
    #[error("failed to watch CustomResourceDefinition {name}")]
    Watch {
        /// The CRD.
        name: String,
        /// The watch error.
        #[source]
        source: kube::runtime::wait::Error,
    },
}

/// Applies every mooring CRD and waits (at most `timeout` each) until all are Established.
/// Returns their names.
pub async fn apply_crds(client: &kube::Client, timeout: Duration) -> Result<Vec<String>, Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for crd in mooring_crds::definitions() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|source| Error::Apply {
                name: name.clone(),
                source,
            })?;
        names.push(name);
    }
    for name in &names {
        wait_established(&api, name, timeout).await?;
    }
    Ok(names)
}

/// Waits at most `timeout` until CRD `name` is Established.
async fn wait_established(
    api: &Api<CustomResourceDefinition>,
    name: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let established = await_condition(api.clone(), name, conditions::is_crd_established());
    match tokio::time::timeout(timeout, established).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(Error::Watch {
            name: name.to_owned(),
            source,
        }),
        Err(_) => Err(Error::NotEstablished {
            name: name.to_owned(),
            timeout,
        }),
    }
}

/// The install variants `mooring install` offers; each is `deploy/` rendered by kustomize
/// (`./dev deploy`) and embedded in the binary, so the binary installs exactly what the repo
/// tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Overlay {
    /// One replica, every controller (`deploy/base`).
    Base,
    /// Two replicas with leader election (`deploy/overlays/ha`).
    Ha,
    /// Only the SealedSecret and ExternalSecret controllers (`deploy/overlays/no-gitops`).
    NoGitops,
    /// The secret controllers and the sync engine as two Deployments under two ServiceAccounts
    /// in two namespaces (`deploy/overlays/split`).
    Split,
}

/// The image the embedded manifests name; `--image` replaces it.
pub const DEFAULT_IMAGE: &str = "mooring:0.1.0";

impl Overlay {
    /// The rendered manifests, as committed in `deploy/rendered/`.
    pub fn rendered(self) -> &'static str {
        match self {
            Overlay::Base => include_str!("../../deploy/rendered/base.yaml"),
            Overlay::Ha => include_str!("../../deploy/rendered/ha.yaml"),
            Overlay::NoGitops => include_str!("../../deploy/rendered/no-gitops.yaml"),
            Overlay::Split => include_str!("../../deploy/rendered/split.yaml"),
        }
    }

    /// The rendered manifests with the agent's image set to `image`.
    pub fn manifests(self, image: &str) -> String {
        self.rendered().replace(
            &format!("image: {DEFAULT_IMAGE}"),
            &format!("image: {image}"),
        )
    }
}

/// Why the install manifests could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The embedded manifests did not parse (a build defect, caught by tests).
    #[error("failed to parse the embedded install manifests")]
    Parse(#[source] serde_saphyr::Error),
    /// A document has no apiVersion, kind or name.
    #[error("install manifest #{index} has no {field}")]
    Incomplete {
        /// Its position in the stream, from 1.
        index: usize,
        /// The missing field.
        field: &'static str,
    },
    /// The API server does not serve a kind the manifests use.
    #[error("failed to find {kind} ({api_version}) on the API server")]
    Discover {
        /// apiVersion of the object.
        api_version: String,
        /// kind of the object.
        kind: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The server-side apply of an object was refused.
    #[error("failed to apply {kind} {name}")]
    Apply {
        /// kind of the object.
        kind: String,
        /// name of the object.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A CRD did not become Established.
    #[error(transparent)]
    Crd(#[from] Error),
    /// No client for the cluster.
    #[error(transparent)]
    Cluster(#[from] Box<crate::cluster::Error>),
}

/// Applies `manifests` (a YAML stream) by server-side apply as field manager `mooring`, in
/// their order (kustomize puts Namespaces and CRDs first), then waits at most `timeout` for every
/// CRD among them to be Established. Returns `kind/name` of each object applied.
pub async fn apply_manifests(
    client: &kube::Client,
    manifests: &str,
    timeout: Duration,
) -> Result<Vec<String>, ApplyError> {
    use kube::api::{DynamicObject, GroupVersionKind};
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(manifests).map_err(ApplyError::Parse)?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Vec::new();
    let mut crds = Vec::new();
    for (index, document) in documents.into_iter().filter(|d| !d.is_null()).enumerate() {
        let field = |name: &'static str| {
            document
                .pointer(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or(ApplyError::Incomplete {
                    index: index + 1,
                    field: name.trim_start_matches('/'),
                })
        };
        let api_version = field("/apiVersion")?;
        let kind = field("/kind")?;
        let name = field("/metadata/name")?;
        let namespace = document
            .pointer("/metadata/namespace")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
        let gvk = GroupVersionKind::gvk(group, version, &kind);
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|source| ApplyError::Discover {
                api_version: api_version.clone(),
                kind: kind.clone(),
                source,
            })?;
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(&name, &params, &Patch::Apply(&document))
            .await
            .map_err(|source| ApplyError::Apply {
                kind: kind.clone(),
                name: name.clone(),
                source,
            })?;
        if kind == "CustomResourceDefinition" {
            crds.push(name.clone());
        }
        applied.push(format!("{kind}/{name}"));
    }
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in &crds {
        wait_established(&api, name, timeout).await?;
    }
    Ok(applied)
}

/// What `mooring install` installs.
pub struct Options<'a> {
    /// The variant.
    pub overlay: Overlay,
    /// The agent's image.
    pub image: &'a str,
    /// Also Argo CD's AppProject CRD (where the cluster has none) and `--argocd-api`.
    pub argocd_api: bool,
}

/// Argo CD's AppProject CRD as generated into `crds/manifests/`.
const ARGOCD_APP_PROJECT_CRD: &str =
    include_str!("../../crds/manifests/appprojects.argoproj.io.yaml");

impl Options<'_> {
    /// The manifests: the overlay's with the image set, and with `argocd_api` the agent's
    /// `--argocd-api` flag.
    pub fn manifests(&self) -> String {
        let manifests = self.overlay.manifests(self.image);
        if self.argocd_api {
            manifests.replace("        - run\n", "        - run\n        - --argocd-api\n")
        } else {
            manifests
        }
    }
}

/// Applies Argo CD's AppProject CRD unless the cluster has one (Argo CD's own is then kept);
/// returns what was applied.
pub async fn apply_argocd_crds(
    client: &kube::Client,
    timeout: Duration,
) -> Result<Vec<String>, ApplyError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "appprojects.argoproj.io";
    let existing = crds
        .get_opt(name)
        .await
        .map_err(|source| ApplyError::Apply {
            kind: "CustomResourceDefinition".into(),
            name: name.to_string(),
            source,
        })?;
    if existing.is_some() {
        return Ok(Vec::new());
    }
    apply_manifests(client, ARGOCD_APP_PROJECT_CRD, timeout).await
}

/// `mooring install`: prints the manifests of `options`, or with `apply` applies them (and,
/// with `--argocd-api`, Argo CD's AppProject CRD unless the cluster already has one, which is
/// then left as it is).
pub async fn run(
    options: &Options<'_>,
    apply: bool,
    kubeconfig: Option<&std::path::Path>,
) -> Result<(), ApplyError> {
    let manifests = options.manifests();
    if !apply {
        print!("{manifests}");
        if options.argocd_api {
            print!("---\n{ARGOCD_APP_PROJECT_CRD}");
        }
        return Ok(());
    }
    let client = crate::cluster::client(kubeconfig).await.map_err(Box::new)?;
    if options.argocd_api {
        let applied = apply_argocd_crds(&client, Duration::from_secs(60)).await?;
        if applied.is_empty() {
            println!("CustomResourceDefinition appprojects.argoproj.io kept (the cluster has it)");
        }
        for object in applied {
            println!("{object} applied");
        }
    }
    let applied = apply_manifests(&client, &manifests, Duration::from_secs(60)).await?;
    for object in applied {
        println!("{object} applied");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argocd_api_adds_the_flag_to_every_agent_container() {
        for overlay in [Overlay::Base, Overlay::Ha, Overlay::Split] {
            let plain = Options {
                overlay,
                image: DEFAULT_IMAGE,
                argocd_api: false,
            };
            let with = Options {
                argocd_api: true,
                ..plain
            };
            let agents = plain.manifests().matches("        - run\n").count();
            assert!(agents > 0);
            assert_eq!(with.manifests().matches("- --argocd-api\n").count(), agents);
            assert!(!plain.manifests().contains("--argocd-api"));
        }
        assert!(ARGOCD_APP_PROJECT_CRD.contains("name: appprojects.argoproj.io"));
    }
}
