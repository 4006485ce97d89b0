//! The default mode: Secrets in, SealedSecrets out.

use mooring_sealing::scope::{CLUSTER_WIDE_ANNOTATION, NAMESPACE_WIDE_ANNOTATION};

use crate::support::{
    Keys, failure, kubeseal, run, run_with, sealed_secrets, secret_yaml, success,
};

/// Two Secrets in one YAML stream; `db` has `password` in both data ("old") and stringData ("new").
fn two_secrets() -> String {
    format!(
        "{}---\n{}",
        secret_yaml(
            "db",
            Some("prod"),
            "type: kubernetes.io/basic-auth\ndata:\n  username: YWRtaW4=\n  password: b2xk\nstringData:\n  password: new\n",
        ),
        secret_yaml("api", Some("prod"), "stringData:\n  token: t0k3n\n"),
    )
}

#[test]
fn secrets_seal_for_every_scope_in_json_and_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let input = two_secrets();
    let scopes = [
        ("strict", None, "prod/db", "prod/api"),
        (
            "namespace-wide",
            Some(NAMESPACE_WIDE_ANNOTATION),
            "prod",
            "prod",
        ),
        ("cluster-wide", Some(CLUSTER_WIDE_ANNOTATION), "", ""),
    ];
    for (scope, annotation, db_label, api_label) in scopes {
        for format in ["json", "yaml"] {
            let output = run(
                &["--cert", keys.cert_arg(), "--scope", scope, "-o", format],
                input.as_bytes(),
            );
            let stdout = success(&output);
            if format == "json" {
                assert!(
                    stdout.starts_with("{\n  \"") && stdout.ends_with("}\n"),
                    "{stdout}"
                );
            }
            let sealed = sealed_secrets(&stdout);
            assert_eq!(sealed.len(), 2, "{scope} {format}");
            let (db, api) = (&sealed[0], &sealed[1]);
            assert_eq!(db.metadata.name.as_deref(), Some("db"));
            assert_eq!(db.metadata.namespace.as_deref(), Some("prod"));
            let annotations = db.metadata.annotations.clone().unwrap_or_default();
            match annotation {
                Some(annotation) => {
                    assert_eq!(annotations.len(), 1, "only the scope annotation");
                    assert_eq!(annotations[annotation], "true");
                }
                None => assert!(annotations.is_empty()),
            }
            let template = db.spec.template.as_ref().unwrap();
            assert_eq!(template.type_.as_deref(), Some("kubernetes.io/basic-auth"));
            assert_eq!(
                template
                    .metadata
                    .as_ref()
                    .unwrap()
                    .annotations
                    .clone()
                    .unwrap_or_default(),
                annotations,
                "the template carries the scope annotation too"
            );
            assert_eq!(keys.open(db, "username", db_label), b"admin");
            assert_eq!(
                keys.open(db, "password", db_label),
                b"new",
                "stringData wins"
            );
            assert_eq!(keys.open(api, "token", api_label), b"t0k3n");
        }
    }
}

#[test]
fn concatenated_json_input_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let input = r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a", "namespace": "n"}, "stringData": {"k": "1"}}
{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b", "namespace": "n"}, "data": {"k": "Mg=="}}"#;
    let sealed = sealed_secrets(&success(&run(
        &["--cert", keys.cert_arg()],
        input.as_bytes(),
    )));
    assert_eq!(sealed.len(), 2);
    assert_eq!(keys.open(&sealed[0], "k", "n/a"), b"1");
    assert_eq!(keys.open(&sealed[1], "k", "n/b"), b"2");
}

#[test]
fn input_annotations_select_the_scope_unless_a_wider_scope_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let input = secret_yaml(
        "db",
        Some("prod"),
        &format!("  annotations:\n    {CLUSTER_WIDE_ANNOTATION}: \"true\"\nstringData:\n  k: v\n"),
    );
    // The default (strict) scope does not override the annotation, as upstream.
    let sealed = sealed_secrets(&success(&run(
        &["--cert", keys.cert_arg()],
        input.as_bytes(),
    )));
    assert_eq!(keys.open(&sealed[0], "k", ""), b"v");
    let sealed = sealed_secrets(&success(&run(
        &["--cert", keys.cert_arg(), "--scope", "namespace-wide"],
        input.as_bytes(),
    )));
    assert_eq!(keys.open(&sealed[0], "k", "prod"), b"v");
    let annotations = sealed[0].metadata.annotations.clone().unwrap();
    assert!(!annotations.contains_key(CLUSTER_WIDE_ANNOTATION));
}

#[test]
fn name_and_namespace_come_from_flags_when_the_input_lacks_them() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let input = secret_yaml("db", None, "stringData:\n  k: v\n");
    let sealed = sealed_secrets(&success(&run(
        &["--cert", keys.cert_arg(), "-n", "dev", "--name", "renamed"],
        input.as_bytes(),
    )));
    assert_eq!(sealed[0].metadata.namespace.as_deref(), Some("dev"));
    assert_eq!(keys.open(&sealed[0], "k", "dev/renamed"), b"v");

    // Without -n: the kubeconfig context's namespace.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {}}]\ncontexts: [{name: c, context: {cluster: k, user: u, namespace: team}}]\n",
    )
    .unwrap();
    let mut command = kubeseal();
    command
        .args(["--cert", keys.cert_arg()])
        .env("KUBECONFIG", &kubeconfig);
    let sealed = sealed_secrets(&success(&run_with(command, input.as_bytes())));
    assert_eq!(keys.open(&sealed[0], "k", "team/db"), b"v");

    // Neither: "default", as upstream.
    let sealed = sealed_secrets(&success(&run(
        &["--cert", keys.cert_arg()],
        input.as_bytes(),
    )));
    assert_eq!(keys.open(&sealed[0], "k", "default/db"), b"v");

    let in_prod = secret_yaml("db", Some("prod"), "stringData:\n  k: v\n");
    let mismatch = run(
        &["--cert", keys.cert_arg(), "-n", "dev"],
        in_prod.as_bytes(),
    );
    assert!(failure(&mismatch).contains("namespace mismatch"));
}

#[test]
fn yaml_extension_forces_yaml_and_failures_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let out = dir.path().join("sealed.yaml");
    let out_arg = out.to_str().unwrap();
    let output = run(
        &["--cert", keys.cert_arg(), "-o", "json", "-w", out_arg],
        two_secrets().as_bytes(),
    );
    assert_eq!(success(&output), "", "nothing on stdout with -w");
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(
        written.starts_with("---\napiVersion: bitnami.com/v1alpha1\n"),
        "{written}"
    );
    assert_eq!(
        keys.open(&sealed_secrets(&written)[1], "token", "prod/api"),
        b"t0k3n"
    );

    let failed = dir.path().join("failed.json");
    let output = run(
        &["--cert", keys.cert_arg(), "-w", failed.to_str().unwrap()],
        secret_yaml("db", Some("prod"), "").as_bytes(),
    );
    failure(&output);
    assert!(!failed.exists(), "no output file after a failure");
}

#[test]
fn empty_data_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let input = secret_yaml("db", Some("prod"), "type: Opaque\n");
    let refused = run(&["--cert", keys.cert_arg()], input.as_bytes());
    assert!(failure(&refused).contains("--allow-empty-data"));
    let allowed = run(
        &["--cert", keys.cert_arg(), "--allow-empty-data"],
        input.as_bytes(),
    );
    let sealed = sealed_secrets(&success(&allowed));
    assert!(sealed[0].spec.encrypted_data.is_empty());
    let none = run(&["--cert", keys.cert_arg()], b"\n---\n");
    assert!(failure(&none).contains("no secrets found"));
}

#[test]
fn expired_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::expired(dir.path());
    let input = secret_yaml("db", Some("prod"), "stringData:\n  k: v\n");
    let output = run(&["--cert", keys.cert_arg()], input.as_bytes());
    assert!(failure(&output).contains("expired certificate on 2020-01-01"));
    let raw = run(
        &[
            "--cert",
            keys.cert_arg(),
            "--raw",
            "--scope",
            "cluster-wide",
        ],
        b"v",
    );
    assert!(failure(&raw).contains("expired"));
}

#[test]
fn certificates_are_read_from_file_urls() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let url = format!("file://{}", keys.cert.display());
    let input = secret_yaml("db", Some("prod"), "stringData:\n  k: v\n");
    let sealed = sealed_secrets(&success(&run(&["--cert", &url], input.as_bytes())));
    assert_eq!(keys.open(&sealed[0], "k", "prod/db"), b"v");
    let fetched = success(&run(&["--cert", &url, "--fetch-cert"], b""));
    assert_eq!(fetched, keys.cert_pem);
}

#[test]
fn environment_variables_set_flags_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let input = secret_yaml("db", Some("prod"), "stringData:\n  k: v\n");
    let env = |command: &mut std::process::Command| {
        command
            .env("SEALED_SECRETS_CERT", &keys.cert)
            .env("SEALED_SECRETS_SCOPE", "cluster-wide")
            .env("SEALED_SECRETS_FORMAT", "yaml");
    };
    let mut command = kubeseal();
    env(&mut command);
    let stdout = success(&run_with(command, input.as_bytes()));
    assert!(stdout.starts_with("---\n"));
    assert_eq!(keys.open(&sealed_secrets(&stdout)[0], "k", ""), b"v");

    let mut command = kubeseal();
    env(&mut command);
    command.args(["--scope", "namespace-wide", "-o", "json"]);
    let stdout = success(&run_with(command, input.as_bytes()));
    assert!(stdout.starts_with('{'));
    assert_eq!(keys.open(&sealed_secrets(&stdout)[0], "k", "prod"), b"v");

    let mut command = kubeseal();
    command
        .env("SEALED_SECRETS_CERT", &keys.cert)
        .env("SEALED_SECRETS_RAW", "true")
        .env("SEALED_SECRETS_NAMESPACE", "prod")
        .env("SEALED_SECRETS_NAME", "db");
    let raw = success(&run_with(command, b"v"));
    let ciphertext = mooring_sealing::decode_base64(&raw).unwrap();
    assert_eq!(
        mooring_sealing::open(&keys.private, b"prod/db", &ciphertext)
            .unwrap()
            .as_slice(),
        b"v"
    );
}

#[test]
fn plaintext_never_reaches_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let applied = r#"{\"stringData\":{\"k\":\"hunter2\"}}"#;
    let input = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: prod\n  uid: abc\n  resourceVersion: \"7\"\n  \
         annotations:\n    kubectl.kubernetes.io/last-applied-configuration: \"{applied}\"\n    keep: me\n  \
         ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: o, uid: u}}]\nstringData:\n  k: hunter2\n"
    );
    let stdout = success(&run(&["--cert", keys.cert_arg()], input.as_bytes()));
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(!stdout.contains("aHVudGVyMg"), "nor its base64");
    let sealed = &sealed_secrets(&stdout)[0];
    let metadata = sealed
        .spec
        .template
        .as_ref()
        .unwrap()
        .metadata
        .as_ref()
        .unwrap();
    assert_eq!(metadata.annotations.as_ref().unwrap().len(), 1);
    assert_eq!(metadata.uid, None);
    assert_eq!(metadata.resource_version, None);
    assert_eq!(metadata.owner_references, None);

    let bad = secret_yaml("db", Some("prod"), "data:\n  k: hunter2!\n");
    let stderr = failure(&run(&["--cert", keys.cert_arg()], bad.as_bytes()));
    assert!(
        stderr.contains("data[\"k\"]") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}
