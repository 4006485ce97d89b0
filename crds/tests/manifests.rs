//! The committed CRD YAML is exactly what the Rust types generate.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

#[test]
fn committed_manifests_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let expected = mooring_crds::manifests().unwrap();
    let mut stale = Vec::new();
    for file in &expected {
        let committed = std::fs::read_to_string(dir.join(&file.file_name)).unwrap_or_default();
        if committed != file.yaml {
            stale.push(file.file_name.clone());
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = expected.iter().map(|f| f.file_name.clone()).collect();
    names.sort();
    assert!(
        stale.is_empty() && on_disk == names,
        "crds/manifests is stale ({stale:?}; on disk {on_disk:?}, expected {names:?}): \
         run `cargo run -p mooring-crds --bin crdgen` and commit the result"
    );
}

#[test]
fn application_crd_is_served_with_status_and_argo_columns() {
    let crd = mooring_crds::definitions().remove(0);
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("applications.mooring.dev")
    );
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Sync Status", "Health Status", "Revision", "Age"]);
}

#[test]
fn sealed_secret_crd_matches_upstream_identity() {
    let crd = mooring_crds::definitions()
        .into_iter()
        .find(|crd| crd.spec.group == "bitnami.com")
        .unwrap();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("sealedsecrets.bitnami.com")
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "SealedSecret");
    // The API server defaults listKind to `<kind>List`, which is upstream's explicit value.
    let list_kind = crd.spec.names.list_kind.clone();
    assert_eq!(
        list_kind.unwrap_or_else(|| format!("{}List", crd.spec.names.kind)),
        "SealedSecretList"
    );
    assert_eq!(
        crd.spec.names.short_names, None,
        "upstream has no short names"
    );
    let version = &crd.spec.versions[0];
    assert_eq!(
        (version.name.as_str(), version.served, version.storage),
        ("v1alpha1", true, true)
    );
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<(&str, &str)> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Status", ".status.conditions[0].message"),
            ("Synced", ".status.conditions[0].status"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
    let schema = serde_json::to_value(&version.schema).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(
        spec["encryptedData"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    assert!(
        spec["encryptedData"].get("default").is_none(),
        "no default written back"
    );
    assert_eq!(
        spec["template"]["properties"]["metadata"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    assert_eq!(spec["data"]["format"], "byte");
}
