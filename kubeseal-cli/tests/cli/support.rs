//! Fixtures: the built binary, a sealing certificate and its key, output parsing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aws_lc_rs::rsa::PrivateDecryptingKey;
use mooring_crds::SealedSecret;

/// The built `kubeseal`, isolated from the developer's environment: no `SEALED_SECRETS_*` or
/// proxy variables and a kubeconfig path that does not exist.
pub fn kubeseal() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubeseal"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SEALED_SECRETS_") {
            command.env_remove(name);
        }
    }
    // Loopback test servers must not be reached through a proxy of the developer's.
    for proxy in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(proxy);
    }
    command.env("KUBECONFIG", "/nonexistent/kubeconfig");
    command
}

/// Runs `command` with `stdin` and returns its output.
pub fn run_with(mut command: Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A run that fails before reading its input closes the pipe early: not a test failure.
    match child.stdin.take().unwrap().write_all(stdin) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    child.wait_with_output().unwrap()
}

/// Runs `kubeseal args` with `stdin`.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut command = kubeseal();
    command.args(args);
    run_with(command, stdin)
}

/// Asserts success and returns stdout as text.
pub fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "kubeseal failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Asserts failure and returns stderr as text.
pub fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "kubeseal succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// A sealing key pair like the controller's, with the certificate written to `cert.pem`.
pub struct Keys {
    /// The certificate file.
    pub cert: PathBuf,
    /// The private key.
    pub private: PrivateDecryptingKey,
    /// The private key as PKCS#8 PEM.
    pub private_pem: String,
    /// The certificate PEM.
    pub cert_pem: String,
}

impl Keys {
    /// A fresh key pair; the certificate is valid now.
    pub fn new(dir: &Path) -> Keys {
        Keys::with_validity(dir, None)
    }

    /// A key pair whose certificate expired at the start of 2020.
    pub fn expired(dir: &Path) -> Keys {
        Keys::with_validity(dir, Some(2020))
    }

    fn with_validity(dir: &Path, expired_in: Option<i32>) -> Keys {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["sealed-secret".into()]).unwrap();
        if let Some(year) = expired_in {
            params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
            params.not_after = rcgen::date_time_ymd(year, 1, 1);
        }
        let cert_pem = params.self_signed(&key).unwrap().pem();
        let cert = dir.join("cert.pem");
        std::fs::write(&cert, &cert_pem).unwrap();
        let private = PrivateDecryptingKey::from_pkcs8(&key.serialize_der()).unwrap();
        Keys {
            cert,
            private,
            private_pem: key.serialize_pem(),
            cert_pem,
        }
    }

    /// The certificate path as a string argument.
    pub fn cert_arg(&self) -> &str {
        self.cert.to_str().unwrap()
    }

    /// Opens `sealed.spec.encryptedData[item]` under `label`.
    pub fn open(&self, sealed: &SealedSecret, item: &str, label: &str) -> Vec<u8> {
        let value = sealed
            .spec
            .encrypted_data
            .get(item)
            .unwrap_or_else(|| panic!("no encryptedData[{item}]"));
        let ciphertext = mooring_sealing::decode_base64(value).unwrap();
        mooring_sealing::open(&self.private, label.as_bytes(), &ciphertext)
            .unwrap_or_else(|error| panic!("{item} does not open under {label:?}: {error}"))
            .to_vec()
    }
}

/// The SealedSecrets of JSON (concatenated) or YAML (multi-document) output.
pub fn sealed_secrets(output: &str) -> Vec<SealedSecret> {
    documents(output)
        .into_iter()
        .map(|document| serde_json::from_value(document).unwrap())
        .collect()
}

/// The documents of JSON (concatenated) or YAML (multi-document) text.
pub fn documents(text: &str) -> Vec<serde_json::Value> {
    if text.starts_with('{') {
        serde_json::Deserializer::from_str(text)
            .into_iter::<serde_json::Value>()
            .map(Result::unwrap)
            .collect()
    } else {
        assert!(
            text.starts_with("---\n"),
            "YAML output starts with ---: {text}"
        );
        serde_saphyr::from_str_multiple::<serde_json::Value, Vec<_>>(text).unwrap()
    }
}

/// A v1 Secret manifest in YAML.
pub fn secret_yaml(name: &str, namespace: Option<&str>, extra: &str) -> String {
    let namespace = namespace
        .map(|namespace| format!("  namespace: {namespace}\n"))
        .unwrap_or_default();
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n{namespace}{extra}")
}
