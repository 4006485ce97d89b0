//! `mooring demo`: installs the CRDs into a (local) cluster and prints what is there.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::ListParams;

use crate::cli::ClusterArgs;
use crate::{Error, cluster, install};

/// API groups whose CRDs mooring serves.
const GROUPS: [&str; 3] = ["mooring.dev", "bitnami.com", "external-secrets.io"];

/// Connects, installs the CRDs, and prints the server version and the installed CRDs.
pub async fn run(args: ClusterArgs) -> Result<(), Error> {
    let client = cluster::client(args.kubeconfig.as_deref()).await?;
    let version = client
        .apiserver_version()
        .await
        .map_err(|source| Error::Request {
            action: "read the API server version",
            source,
        })?;
    println!(
        "Kubernetes API server {} ({})",
        version.git_version, version.platform
    );

    let installed = install::apply_crds(&client, Duration::from_secs(60)).await?;
    println!(
        "Installed {} CRD(s) by server-side apply (field manager {}).",
        installed.len(),
        install::FIELD_MANAGER
    );

    let api: Api<CustomResourceDefinition> = Api::all(client);
    let crds = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Request {
            action: "list CustomResourceDefinitions",
            source,
        })?;
    println!();
    println!(
        "{:<40} {:<10} {:<12} SHORT NAMES",
        "CRD", "VERSION", "SCOPE"
    );
    for crd in crds
        .items
        .iter()
        .filter(|crd| GROUPS.contains(&crd.spec.group.as_str()))
    {
        let served: Vec<&str> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.as_str())
            .collect();
        let short = crd
            .spec
            .names
            .short_names
            .clone()
            .unwrap_or_default()
            .join(",");
        println!(
            "{:<40} {:<10} {:<12} {}",
            crd.metadata.name.as_deref().unwrap_or_default(),
            served.join(","),
            crd.spec.scope,
            short
        );
    }
    Ok(())
}
