//! Installing mooring's CRDs by server-side apply, and waiting until the API server serves them.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};

/// The field manager of everything mooring applies.
pub const FIELD_MANAGER: &str = "mooring";

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
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(Error::Watch {
                    name: name.clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(Error::NotEstablished {
                    name: name.clone(),
                    timeout,
                });
            }
        }
    }
    Ok(names)
}
