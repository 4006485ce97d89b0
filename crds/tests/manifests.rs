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
