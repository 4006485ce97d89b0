//! `--merge-into`: new items sealed for the target's name, namespace and scope.

use mooring_sealing::scope::NAMESPACE_WIDE_ANNOTATION;

use crate::support::{Keys, failure, run, sealed_secrets, secret_yaml, success};

#[test]
fn merge_uses_the_targets_names_and_scope_and_keeps_its_format() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let target = dir.path().join("target.yaml");
    let target_arg = target.to_str().unwrap();
    let original = secret_yaml(
        "target",
        Some("prod"),
        &format!(
            "  annotations:\n    {NAMESPACE_WIDE_ANNOTATION}: \"true\"\n  labels:\n    old: label\nstringData:\n  old: one\n"
        ),
    );
    success(&run(
        &["--cert", keys.cert_arg(), "-w", target_arg],
        original.as_bytes(),
    ));

    // The input names another Secret in another namespace and asks for no scope.
    let update = secret_yaml(
        "input",
        Some("dev"),
        "  labels:\n    new: label\nstringData:\n  new: two\n  old: replaced\n",
    );
    let output = run(
        &["--cert", keys.cert_arg(), "--merge-into", target_arg],
        update.as_bytes(),
    );
    assert_eq!(
        success(&output),
        "",
        "the target is rewritten, stdout stays empty"
    );

    let text = std::fs::read_to_string(&target).unwrap();
    assert!(
        text.starts_with("---\n"),
        "a YAML target stays YAML without -o: {text}"
    );
    let merged = &sealed_secrets(&text)[0];
    assert_eq!(merged.metadata.name.as_deref(), Some("target"));
    assert_eq!(merged.metadata.namespace.as_deref(), Some("prod"));
    assert_eq!(
        keys.open(merged, "new", "prod"),
        b"two",
        "sealed namespace-wide, like the target"
    );
    assert_eq!(keys.open(merged, "old", "prod"), b"replaced");
    let labels = merged
        .spec
        .template
        .as_ref()
        .unwrap()
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(
        (labels["old"].as_str(), labels["new"].as_str()),
        ("label", "label")
    );

    // -o json rewrites it as JSON.
    let again = secret_yaml("x", None, "stringData:\n  third: '3'\n");
    success(&run(
        &[
            "--cert",
            keys.cert_arg(),
            "--merge-into",
            target_arg,
            "-o",
            "json",
        ],
        again.as_bytes(),
    ));
    let text = std::fs::read_to_string(&target).unwrap();
    assert!(text.starts_with('{'));
    assert_eq!(keys.open(&sealed_secrets(&text)[0], "third", "prod"), b"3");
}

#[test]
fn a_scope_that_contradicts_the_target_is_refused_and_the_file_kept() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let target = dir.path().join("target.json");
    let target_arg = target.to_str().unwrap();
    let original = secret_yaml("target", Some("prod"), "stringData:\n  k: v\n");
    success(&run(
        &["--cert", keys.cert_arg(), "-w", target_arg],
        original.as_bytes(),
    ));
    let before = std::fs::read(&target).unwrap();

    let update = secret_yaml("target", Some("prod"), "stringData:\n  k2: v2\n");
    let output = run(
        &[
            "--cert",
            keys.cert_arg(),
            "--merge-into",
            target_arg,
            "--scope",
            "cluster-wide",
        ],
        update.as_bytes(),
    );
    assert!(failure(&output).contains("differs from the target's scope strict"));
    assert_eq!(std::fs::read(&target).unwrap(), before);
}
