//! `--recovery-unseal` with PEM keys, key Secrets and Lists of key Secrets.

use std::process::{Command, Stdio};

use base64::Engine;

use crate::support::{Keys, documents, failure, run, secret_yaml, success};

/// A sealed Secret `prod/db` with `password: s3cret`, as JSON.
fn sealed_input(keys: &Keys) -> String {
    let input = secret_yaml(
        "db",
        Some("prod"),
        "type: Opaque\nstringData:\n  password: s3cret\n",
    );
    success(&run(&["--cert", keys.cert_arg()], input.as_bytes()))
}

/// `pkcs8_pem` as PKCS#1 (`RSA PRIVATE KEY`), the form upstream's controller stores.
fn pkcs1(pkcs8_pem: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["rsa", "-traditional"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pkcs8_pem.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pem = String::from_utf8(output.stdout).unwrap();
    assert!(pem.contains("BEGIN RSA PRIVATE KEY"));
    pem
}

/// A `kubernetes.io/tls` key Secret holding `key_pem`, as JSON.
fn key_secret(name: &str, key_pem: &str, cert_pem: &str) -> serde_json::Value {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "mooring-system",
                     "labels": {"sealedsecrets.bitnami.com/sealed-secrets-key": "active"}},
        "data": {"tls.key": b64(key_pem), "tls.crt": b64(cert_pem)}
    })
}

/// The recovered Secret's `password`.
fn recovered_password(stdout: &str) -> Vec<u8> {
    let secret = &documents(stdout)[0];
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["name"], "db");
    assert_eq!(secret["metadata"]["namespace"], "prod");
    assert_eq!(secret["type"], "Opaque");
    mooring_sealing::decode_base64(secret["data"]["password"].as_str().unwrap()).unwrap()
}

#[test]
fn pem_keys_in_both_encodings_recover_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let sealed = sealed_input(&keys);
    let pkcs8 = dir.path().join("key8.pem");
    std::fs::write(&pkcs8, &keys.private_pem).unwrap();
    let pkcs1_path = dir.path().join("key1.pem");
    std::fs::write(&pkcs1_path, pkcs1(&keys.private_pem)).unwrap();
    for key in [&pkcs8, &pkcs1_path] {
        for format in ["json", "yaml"] {
            let output = run(
                &[
                    "--recovery-unseal",
                    "--recovery-private-key",
                    key.to_str().unwrap(),
                    "-o",
                    format,
                ],
                sealed.as_bytes(),
            );
            assert_eq!(recovered_password(&success(&output)), b"s3cret");
        }
    }
}

#[test]
fn key_secrets_and_lists_of_them_recover_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let other = Keys::new(other_dir.path());
    let sealed = sealed_input(&keys);

    let secret_file = dir.path().join("key-secret.json");
    let secret = key_secret(
        "sealed-secrets-keyabcde",
        &pkcs1(&keys.private_pem),
        &keys.cert_pem,
    );
    std::fs::write(&secret_file, serde_json::to_string_pretty(&secret).unwrap()).unwrap();
    let output = run(
        &[
            "--recovery-unseal",
            "--recovery-private-key",
            secret_file.to_str().unwrap(),
        ],
        sealed.as_bytes(),
    );
    assert_eq!(recovered_password(&success(&output)), b"s3cret");

    // The backup `kubectl get secret -l ... -o yaml` makes: a List, here with a wrong key first.
    let list = serde_json::json!({
        "apiVersion": "v1", "kind": "List",
        "items": [
            key_secret("old", &other.private_pem, &other.cert_pem),
            key_secret("current", &keys.private_pem, &keys.cert_pem),
        ]
    });
    let list_file = dir.path().join("backup.yaml");
    std::fs::write(&list_file, serde_saphyr::to_string(&list).unwrap()).unwrap();
    let output = run(
        &[
            "--recovery-unseal",
            "--recovery-private-key",
            list_file.to_str().unwrap(),
        ],
        sealed.as_bytes(),
    );
    assert_eq!(recovered_password(&success(&output)), b"s3cret");
}

#[test]
fn keys_can_be_comma_separated_and_wrong_keys_name_the_items() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let other = Keys::new(other_dir.path());
    let sealed = sealed_input(&keys);
    let right = dir.path().join("right.pem");
    std::fs::write(&right, &keys.private_pem).unwrap();
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(&wrong, &other.private_pem).unwrap();

    let both = format!("{},{}", wrong.display(), right.display());
    let output = run(
        &["--recovery-unseal", "--recovery-private-key", &both],
        sealed.as_bytes(),
    );
    assert_eq!(recovered_password(&success(&output)), b"s3cret");

    let output = run(
        &[
            "--recovery-unseal",
            "--recovery-private-key",
            wrong.to_str().unwrap(),
        ],
        sealed.as_bytes(),
    );
    let stderr = failure(&output);
    assert!(
        stderr.contains("no key could decrypt secret (password)"),
        "{stderr}"
    );
}
