//! `kubeseal --raw` output opens with the matching private key under the scope's label.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;

fn kubeseal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubeseal"))
}

fn write_cert(
    dir: &tempfile::TempDir,
) -> (std::path::PathBuf, aws_lc_rs::rsa::PrivateDecryptingKey) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["sealed-secret".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let path = dir.path().join("cert.pem");
    std::fs::write(&path, cert.pem()).unwrap();
    let private = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&key.serialize_der()).unwrap();
    (path, private)
}

fn seal(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = kubeseal()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn raw_values_open_under_each_scope_label() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, private) = write_cert(&dir);
    let cert = cert.to_str().unwrap();
    let cases: [(&[&str], &[u8]); 3] = [
        (
            &["--scope", "strict", "--name", "db", "--namespace", "prod"],
            b"prod/db",
        ),
        (
            &["--scope", "namespace-wide", "--namespace", "prod"],
            b"prod",
        ),
        (&["--scope", "cluster-wide"], b""),
    ];
    for (flags, label) in cases {
        let mut args = vec!["--raw", "--cert", cert];
        args.extend_from_slice(flags);
        let output = seal(&args, b"p4ssw0rd");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !output.stdout.ends_with(b"\n"),
            "no trailing newline, like upstream"
        );
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&output.stdout)
            .unwrap();
        let opened = mooring_sealing::open(&private, label, &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"p4ssw0rd");
    }
}

#[test]
fn raw_refuses_to_guess_names() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = write_cert(&dir);
    let cert = cert.to_str().unwrap();
    let no_namespace = seal(&["--raw", "--cert", cert, "--name", "db"], b"v");
    assert!(!no_namespace.status.success());
    assert!(String::from_utf8_lossy(&no_namespace.stderr).contains("requires --namespace"));
    let no_name = seal(&["--raw", "--cert", cert, "--namespace", "prod"], b"v");
    assert!(String::from_utf8_lossy(&no_name.stderr).contains("requires --name"));
}

#[test]
fn from_file_reads_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, private) = write_cert(&dir);
    let value = dir.path().join("value");
    std::fs::write(&value, b"from a file").unwrap();
    let spec = format!("password={}", value.display());
    let output = seal(
        &[
            "--raw",
            "--cert",
            cert.to_str().unwrap(),
            "--scope",
            "cluster-wide",
            "--from-file",
            &spec,
        ],
        b"",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&output.stdout)
        .unwrap();
    assert_eq!(
        mooring_sealing::open(&private, b"", &sealed)
            .unwrap()
            .as_slice(),
        b"from a file"
    );
}
