//! Interop of mooring's envelope with upstream bitnami sealed-secrets, built from the release
//! pinned in `tests/golden/go.mod` by `tests/realenv/install`:
//!
//! - `sealvectors` (tests/golden/cmd/sealvectors) seals and opens single values with upstream's
//!   own packages (`kubeseal.ParseKey`, `v1alpha1.EncryptionLabel`, `crypto.HybridEncrypt` and
//!   `crypto.HybridDecrypt`);
//! - upstream's `kubeseal --cert … --raw` is the CLI users run today.
//!
//! Keys and self-signed certificates come from the `openssl` CLI at test time, so neither side
//! parses a key the other side wrote. Each scope is checked with an empty, a short binary and a
//! 1 MiB value, in both directions, and so is every way a value may or may not move: renamed,
//! moved to another namespace, opened under another scope or with another key.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::LazyLock;

use anyhow::{Context, bail, ensure};
use aws_lc_rs::rsa::{PrivateDecryptingKey, PublicEncryptingKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mooring_e2e::RealEnv;
use mooring_sealing::{EnvelopeError, Scope, SealingCertificate};
use tempfile::TempDir;

const NAMESPACE: &str = "team-a";
const NAME: &str = "db-credentials";
const OTHER_NAMESPACE: &str = "team-b";
const OTHER_NAME: &str = "api-token";
const SCOPES: [Scope; 3] = [Scope::Strict, Scope::NamespaceWide, Scope::ClusterWide];
/// The only error text upstream's HybridDecrypt returns, whatever went wrong; users grep for it.
const UPSTREAM_DECRYPT_ERROR: &str = "no key could decrypt secret";

/// The upstream binaries, from env.sh. A missing one is an error, never a skip.
struct Upstream {
    sealvectors: PathBuf,
    kubeseal: PathBuf,
}

impl Upstream {
    fn load() -> anyhow::Result<Upstream> {
        let env = RealEnv::load()?;
        Ok(Upstream {
            sealvectors: executable(&env, "UPSTREAM_SEALVECTORS")?,
            kubeseal: executable(&env, "UPSTREAM_KUBESEAL")?,
        })
    }

    /// `sealvectors seal`: the base64 upstream produces for `value`.
    fn seal(
        &self,
        key: &TestKey,
        scope: Scope,
        namespace: &str,
        name: &str,
        value: &[u8],
    ) -> String {
        let output = run(
            &self.sealvectors,
            &[
                "seal",
                "--cert",
                path_str(&key.cert_path),
                "--scope",
                scope_flag(scope),
                "--namespace",
                namespace,
                "--name",
                name,
            ],
            value,
        );
        assert!(
            output.status.success(),
            "upstream seal ({scope:?}) failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("upstream base64 is ASCII")
    }

    /// `sealvectors open`: the plaintext, or upstream's error message.
    fn open(
        &self,
        key: &TestKey,
        scope: Scope,
        namespace: &str,
        name: &str,
        sealed: &str,
    ) -> Result<Vec<u8>, String> {
        let output = run(
            &self.sealvectors,
            &[
                "open",
                "--key",
                path_str(&key.key_path),
                "--scope",
                scope_flag(scope),
                "--namespace",
                namespace,
                "--name",
                name,
            ],
            sealed.as_bytes(),
        );
        if output.status.success() {
            Ok(output.stdout)
        } else {
            assert_eq!(
                output.status.code(),
                Some(1),
                "sealvectors open should fail with status 1, not crash: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// Upstream `kubeseal --raw` with `args`, offline (`--cert`), with no kubeconfig (nor the
    /// in-cluster fallback client-go takes inside a pod) and no `SEALED_SECRETS_*` variables
    /// (kubeseal reads every flag from one).
    fn kubeseal_raw(&self, key: &TestKey, args: &[&str], value: &[u8]) -> Output {
        let home = TempDir::new().expect("temporary HOME");
        let mut command = Command::new(&self.kubeseal);
        command
            .args(["--cert", path_str(&key.cert_path), "--raw"])
            .args(args)
            .env("HOME", home.path());
        for name in [
            "KUBECONFIG",
            "KUBERNETES_MASTER",
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
        ] {
            command.env_remove(name);
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SEALED_SECRETS_") {
                command.env_remove(name);
            }
        }
        pipe(command, value)
    }
}

/// The path in env.sh variable `name`, which must be an existing file.
fn executable(env: &RealEnv, name: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(env.var(name)?);
    let metadata = std::fs::metadata(&path).with_context(|| {
        format!(
            "{name}={} is missing: build it with tests/realenv/install",
            path.display()
        )
    })?;
    ensure!(
        metadata.is_file(),
        "{name}={} is not a file",
        path.display()
    );
    Ok(path)
}

/// An RSA key pair from `openssl`, written into a directory of its own.
struct TestKey {
    _dir: TempDir,
    cert_path: PathBuf,
    key_path: PathBuf,
    modulus_bytes: usize,
    public_key: PublicEncryptingKey,
    private_key: PrivateDecryptingKey,
}

/// The PEM and DER files of one generated key, kept in memory so that every test writes its own
/// copy into a directory that is removed when the test ends.
#[derive(Clone)]
struct KeyFiles {
    bits: usize,
    key_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pkcs8_der: Vec<u8>,
}

static KEY_2048: LazyLock<KeyFiles> = LazyLock::new(|| generate_key_files(2048));
static OTHER_KEY_2048: LazyLock<KeyFiles> = LazyLock::new(|| generate_key_files(2048));
/// The size upstream's controller generates.
static KEY_4096: LazyLock<KeyFiles> = LazyLock::new(|| generate_key_files(4096));

fn generate_key_files(bits: usize) -> KeyFiles {
    let dir = TempDir::new().expect("temporary directory");
    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    let der = dir.path().join("key.der");
    let bits_option = format!("rsa_keygen_bits:{bits}");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        &bits_option,
        "-out",
        path_str(&key),
    ]);
    // Upstream refuses expired certificates; a day is plenty for a test run.
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        path_str(&key),
        "-out",
        path_str(&cert),
        "-days",
        "1",
        "-subj",
        "/CN=mooring-golden",
    ]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        path_str(&key),
        "-outform",
        "DER",
        "-out",
        path_str(&der),
    ]);
    KeyFiles {
        bits,
        key_pem: std::fs::read(&key).unwrap(),
        cert_pem: std::fs::read(&cert).unwrap(),
        key_pkcs8_der: std::fs::read(&der).unwrap(),
    }
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("failed to run openssl (tests/realenv/install installs it)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl TestKey {
    fn new(files: &KeyFiles) -> TestKey {
        let dir = TempDir::new().expect("temporary directory");
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, &files.cert_pem).unwrap();
        std::fs::write(&key_path, &files.key_pem).unwrap();
        let certificate = SealingCertificate::from_pem(&files.cert_pem)
            .expect("mooring parses the openssl certificate");
        let private_key = PrivateDecryptingKey::from_pkcs8(&files.key_pkcs8_der)
            .expect("aws-lc-rs parses the openssl PKCS#8 key");
        TestKey {
            _dir: dir,
            cert_path,
            key_path,
            modulus_bytes: files.bits / 8,
            public_key: certificate.public_key().clone(),
            private_key,
        }
    }

    /// mooring's `open` of a base64 value.
    fn mooring_open(
        &self,
        scope: Scope,
        namespace: &str,
        name: &str,
        sealed: &str,
    ) -> Result<Vec<u8>, EnvelopeError> {
        let bytes = STANDARD
            .decode(sealed)
            .expect("sealed value is padded standard base64");
        mooring_sealing::open(&self.private_key, &scope.label(namespace, name), &bytes)
            .map(|plaintext| plaintext.to_vec())
    }

    /// mooring's `seal`, base64-encoded as in `spec.encryptedData`.
    fn mooring_seal(&self, scope: Scope, namespace: &str, name: &str, value: &[u8]) -> String {
        let sealed = mooring_sealing::seal(&self.public_key, &scope.label(namespace, name), value)
            .expect("mooring seals");
        STANDARD.encode(sealed)
    }
}

/// Test values: empty (legal upstream: only the GCM tag), short binary, and 1 MiB.
fn values() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", Vec::new()),
        ("short binary", b"p\x00ss\xffw\xc3\xb6rd\r\n".to_vec()),
        ("1 MiB", pseudo_random_bytes(1 << 20)),
    ]
}

/// Every byte value, in no simple pattern (xorshift), reproducible.
fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_be_bytes()[0]
        })
        .collect()
}

fn scope_flag(scope: Scope) -> &'static str {
    match scope {
        Scope::Strict => "strict",
        Scope::NamespaceWide => "namespace-wide",
        Scope::ClusterWide => "cluster-wide",
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn run(program: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut command = Command::new(program);
    command.args(args);
    pipe(command, stdin)
}

/// Runs `command` with `stdin` written from another thread, so that a large value cannot
/// deadlock against a large output.
fn pipe(mut command: Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {command:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    std::thread::scope(|threads| {
        let writer = threads.spawn(move || input.write_all(stdin));
        let output = child.wait_with_output().unwrap();
        // A process that fails early closes stdin; its exit status tells the story.
        let _ = writer.join().unwrap();
        output
    })
}

/// Checks upstream's framing of one sealed value: u16 BE modulus length, RSA part, GCM part.
fn assert_upstream_framing(key: &TestKey, sealed: &str, value_len: usize) {
    let bytes = STANDARD
        .decode(sealed)
        .expect("upstream writes padded standard base64");
    let prefix = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
    assert_eq!(
        prefix, key.modulus_bytes,
        "length prefix is the modulus size"
    );
    assert_eq!(
        bytes.len(),
        2 + key.modulus_bytes + value_len + 16,
        "2 + RSA part + value + GCM tag"
    );
    assert!(!sealed.ends_with('\n'), "no trailing newline, like --raw");
}

/// Where a value sealed for (NAMESPACE, NAME) under `scope` may be opened: the same scope must
/// accept a rename unless strict and a namespace move only when cluster-wide, and another scope
/// never accepts it (its label differs).
fn mobility(scope: Scope) -> Vec<(Scope, &'static str, &'static str, bool)> {
    let mut cases = vec![
        (scope, NAMESPACE, NAME, true),
        (scope, NAMESPACE, OTHER_NAME, scope != Scope::Strict),
        (scope, OTHER_NAMESPACE, NAME, scope == Scope::ClusterWide),
    ];
    for other in SCOPES.into_iter().filter(|other| *other != scope) {
        cases.push((other, NAMESPACE, NAME, false));
    }
    cases
}

#[test]
fn upstream_sealed_values_open_with_mooring() -> anyhow::Result<()> {
    let upstream = Upstream::load()?;
    let key = TestKey::new(&KEY_2048);
    for scope in SCOPES {
        for (what, value) in values() {
            let sealed = upstream.seal(&key, scope, NAMESPACE, NAME, &value);
            assert_upstream_framing(&key, &sealed, value.len());
            let opened = key.mooring_open(scope, NAMESPACE, NAME, &sealed);
            if opened.as_deref() != Ok(value.as_slice()) {
                bail!("{scope:?} {what}: mooring did not recover upstream's value: {opened:?}");
            }
        }
    }
    Ok(())
}

#[test]
fn mooring_sealed_values_open_with_upstream() -> anyhow::Result<()> {
    let upstream = Upstream::load()?;
    let key = TestKey::new(&KEY_2048);
    for scope in SCOPES {
        for (what, value) in values() {
            let sealed = key.mooring_seal(scope, NAMESPACE, NAME, &value);
            match upstream.open(&key, scope, NAMESPACE, NAME, &sealed) {
                Ok(opened) => ensure!(
                    opened == value,
                    "{scope:?} {what}: upstream opened mooring's value to other bytes ({} bytes)",
                    opened.len()
                ),
                Err(message) => bail!("{scope:?} {what}: upstream failed to open: {message}"),
            }
        }
    }
    Ok(())
}

#[test]
fn values_interoperate_with_a_4096_bit_key_as_upstream_generates() -> anyhow::Result<()> {
    let upstream = Upstream::load()?;
    let key = TestKey::new(&KEY_4096);
    for scope in SCOPES {
        for (what, value) in values() {
            let sealed = upstream.seal(&key, scope, NAMESPACE, NAME, &value);
            assert_upstream_framing(&key, &sealed, value.len());
            // 0x0200 (512) as the prefix: the "Ag" every default-key value starts with.
            assert!(sealed.starts_with("Ag"), "{sealed:.8}…");
            let opened = key.mooring_open(scope, NAMESPACE, NAME, &sealed);
            ensure!(
                opened.as_deref() == Ok(value.as_slice()),
                "{scope:?} {what}: mooring did not recover upstream's value: {opened:?}"
            );

            let sealed = key.mooring_seal(scope, NAMESPACE, NAME, &value);
            assert!(sealed.starts_with("Ag"), "{sealed:.8}…");
            let opened = upstream.open(&key, scope, NAMESPACE, NAME, &sealed);
            ensure!(
                opened.as_deref() == Ok(value.as_slice()),
                "{scope:?} {what}: upstream did not recover mooring's value: {:?}",
                opened.map(|bytes| bytes.len())
            );
        }
    }
    Ok(())
}

#[test]
fn mooring_honours_upstream_scope_bindings() -> anyhow::Result<()> {
    let upstream = Upstream::load()?;
    let key = TestKey::new(&KEY_2048);
    let value = b"s3cr3t";
    for scope in SCOPES {
        let sealed = upstream.seal(&key, scope, NAMESPACE, NAME, value);
        for (open_scope, namespace, name, accepted) in mobility(scope) {
            let opened = key.mooring_open(open_scope, namespace, name, &sealed);
            let context = format!(
                "sealed upstream as {scope:?} {NAMESPACE}/{NAME}, opened by mooring as \
                 {open_scope:?} {namespace}/{name}"
            );
            if accepted {
                ensure!(
                    opened.as_deref() == Ok(value.as_slice()),
                    "{context}: {opened:?}"
                );
            } else {
                // A wrong label fails in RSA-OAEP, before any value byte is touched.
                ensure!(
                    opened == Err(EnvelopeError::DecryptSessionKey),
                    "{context}: expected a refusal, got {opened:?}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn upstream_honours_mooring_scope_bindings() -> anyhow::Result<()> {
    let upstream = Upstream::load()?;
    let key = TestKey::new(&KEY_2048);
    let value = b"s3cr3t";
    for scope in SCOPES {
        let sealed = key.mooring_seal(scope, NAMESPACE, NAME, value);
        for (open_scope, namespace, name, accepted) in mobility(scope) {
            let opened = upstream.open(&key, open_scope, namespace, name, &sealed);
            let context = format!(
                "sealed by mooring as {scope:?} {NAMESPACE}/{NAME}, opened upstream as \
                 {open_scope:?} {namespace}/{name}"
            );
            match opened {
                Ok(opened) => ensure!(
                    accepted && opened == value,
                    "{context}: opened to {:?}",
                    String::from_utf8_lossy(&opened)
                ),
                Err(message) => ensure!(
                    !accepted && message.contains(UPSTREAM_DECRYPT_ERROR),
                    "{context}: {message}"
                ),
            }
        }
    }
    Ok(())
}

#[test]
fn another_key_is_refused_by_both_sides() -> anyhow::Result<()> {
    let upstream = Upstream::load()?;
    let key = TestKey::new(&KEY_2048);
    let other_key = TestKey::new(&OTHER_KEY_2048);
    let value = b"s3cr3t";
    for scope in SCOPES {
        let sealed = upstream.seal(&key, scope, NAMESPACE, NAME, value);
        let opened = other_key.mooring_open(scope, NAMESPACE, NAME, &sealed);
        ensure!(
            opened == Err(EnvelopeError::DecryptSessionKey),
            "{scope:?}: mooring opened a value sealed for another key: {opened:?}"
        );

        let sealed = key.mooring_seal(scope, NAMESPACE, NAME, value);
        match upstream.open(&other_key, scope, NAMESPACE, NAME, &sealed) {
            Ok(opened) => bail!("{scope:?}: upstream opened it with another key: {opened:?}"),
            Err(message) => ensure!(message.contains(UPSTREAM_DECRYPT_ERROR), "{message}"),
        }
    }
    Ok(())
}

#[test]
fn upstream_kubeseal_raw_output_opens_with_mooring() -> anyhow::Result<()> {
    let upstream = Upstream::load()?;
    let key = TestKey::new(&KEY_2048);
    let value = b"hunter2\n";
    // Cluster-wide needs neither a namespace nor a name (given ones are ignored: empty label).
    let cases: [(Scope, &[&str]); 4] = [
        (Scope::ClusterWide, &["--scope", "cluster-wide"]),
        (
            Scope::ClusterWide,
            &[
                "--scope",
                "cluster-wide",
                "-n",
                OTHER_NAMESPACE,
                "--name",
                OTHER_NAME,
            ],
        ),
        (
            Scope::NamespaceWide,
            &["--scope", "namespace-wide", "-n", NAMESPACE],
        ),
        (
            Scope::Strict,
            &["--scope", "strict", "-n", NAMESPACE, "--name", NAME],
        ),
    ];
    for (scope, args) in cases {
        let output = upstream.kubeseal_raw(&key, args, value);
        ensure!(
            output.status.success(),
            "kubeseal --raw {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let sealed = String::from_utf8(output.stdout)?;
        assert_upstream_framing(&key, &sealed, value.len());
        let opened = key.mooring_open(scope, NAMESPACE, NAME, &sealed);
        ensure!(
            opened.as_deref() == Ok(value.as_slice()),
            "kubeseal --raw {args:?}: mooring did not recover the value: {opened:?}"
        );
        // And only under that scope's label.
        for other in SCOPES.into_iter().filter(|other| *other != scope) {
            let opened = key.mooring_open(other, NAMESPACE, NAME, &sealed);
            ensure!(
                opened == Err(EnvelopeError::DecryptSessionKey),
                "kubeseal --raw {args:?} opened as {other:?}: {opened:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn upstream_kubeseal_raw_seals_an_empty_and_a_large_value_from_a_file() -> anyhow::Result<()> {
    let upstream = Upstream::load()?;
    let key = TestKey::new(&KEY_2048);
    let dir = TempDir::new()?;
    for (what, value) in values() {
        let file = dir.path().join("value");
        std::fs::write(&file, &value)?;
        let from_file = format!("password={}", path_str(&file));
        let args = ["--scope", "cluster-wide", "--from-file", from_file.as_str()];
        let output = upstream.kubeseal_raw(&key, &args, b"");
        ensure!(
            output.status.success(),
            "kubeseal --raw --from-file ({what}) failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let sealed = String::from_utf8(output.stdout)?;
        assert_upstream_framing(&key, &sealed, value.len());
        let opened = key.mooring_open(Scope::ClusterWide, OTHER_NAMESPACE, OTHER_NAME, &sealed);
        ensure!(
            opened.as_deref() == Ok(value.as_slice()),
            "{what}: mooring did not recover kubeseal's value: {:?}",
            opened.map(|bytes| bytes.len())
        );
    }
    Ok(())
}

#[test]
fn upstream_kubeseal_raw_strict_needs_a_namespace_and_a_name() -> anyhow::Result<()> {
    // What mooring's kubeseal must reproduce: offline `--raw` still asks the kubeconfig for the
    // namespace unless `-n` is given (and with no kubeconfig that is an error, not "default"),
    // and strict needs `--name`.
    let upstream = Upstream::load()?;
    let key = TestKey::new(&KEY_2048);
    let cases: [(&[&str], &str); 3] = [
        (
            &["--scope", "strict", "--name", NAME],
            "no configuration has been provided",
        ),
        (
            &["--scope", "namespace-wide"],
            "no configuration has been provided",
        ),
        (
            &["--scope", "strict", "-n", NAMESPACE],
            "must provide the --name flag with --raw and --scope strict",
        ),
    ];
    for (args, expected) in cases {
        let output = upstream.kubeseal_raw(&key, args, b"value");
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            !output.status.success() && output.stdout.is_empty(),
            "kubeseal --raw {args:?} should fail, printed {:?}",
            String::from_utf8_lossy(&output.stdout)
        );
        ensure!(
            stderr.contains(expected),
            "kubeseal --raw {args:?}: expected {expected:?}, got {stderr}"
        );
    }
    Ok(())
}
