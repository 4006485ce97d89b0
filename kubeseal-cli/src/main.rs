//! `kubeseal`: seal values for a mooring (or bitnami sealed-secrets) cluster, offline.
//!
//! This version implements raw mode (`--raw`), which seals one value against a certificate
//! file. Sealing whole Secrets, fetching the certificate from the cluster, `--merge-into`,
//! `--re-encrypt`, `--validate` and `--recovery-unseal` follow; the flags that exist behave as
//! upstream's.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};
use base64::Engine;
use clap::Parser;
use mooring_sealing::{Scope, SealingCertificate};

/// Seal secrets so that only the cluster's controller can open them.
#[derive(Debug, Parser)]
#[command(name = "kubeseal", version, about)]
struct Cli {
    /// Certificate (PEM) to seal against: a file path.
    #[arg(long, env = "SEALED_SECRETS_CERT")]
    cert: Option<PathBuf>,
    /// Encrypt one value read from stdin (or --from-file) and print it base64-encoded.
    #[arg(long)]
    raw: bool,
    /// Scope: strict (name and namespace), namespace-wide, or cluster-wide.
    #[arg(long, default_value = "strict", env = "SEALED_SECRETS_SCOPE")]
    scope: Scope,
    /// Secret name; required with --raw and strict scope.
    #[arg(long, default_value = "")]
    name: String,
    /// Secret namespace; required with --raw unless cluster-wide. Unlike upstream, never guessed
    /// from the kubeconfig: a value sealed for the wrong namespace fails only in the cluster.
    #[arg(short = 'n', long, default_value = "")]
    namespace: String,
    /// With --raw: read the value from this file (`[key=]path`; the key is ignored).
    #[arg(long)]
    from_file: Option<String>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.from_file.is_some() && !cli.raw {
        bail!("--from-file requires --raw");
    }
    if !cli.raw {
        bail!("this kubeseal implements --raw only so far; seal each value with --raw");
    }
    ensure_raw_names(&cli)?;
    let cert_path = cli
        .cert
        .as_ref()
        .context("--cert is required (fetching from the cluster is not implemented yet)")?;
    let pem = std::fs::read(cert_path)
        .with_context(|| format!("failed to read certificate {}", cert_path.display()))?;
    let certificate = SealingCertificate::from_pem(&pem)?;
    certificate.ensure_not_expired(SystemTime::now())?;

    let value = read_value(cli.from_file.as_deref())?;
    let label = cli.scope.label(&cli.namespace, &cli.name);
    let sealed = mooring_sealing::seal(certificate.public_key(), &label, &value)?;
    // Upstream prints standard base64 with padding and no trailing newline.
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(
        base64::engine::general_purpose::STANDARD
            .encode(sealed)
            .as_bytes(),
    )?;
    stdout.flush()?;
    Ok(())
}

/// Raw mode seals for a name the tool cannot see, so the names the scope binds must be given.
fn ensure_raw_names(cli: &Cli) -> anyhow::Result<()> {
    if cli.scope != Scope::ClusterWide && cli.namespace.is_empty() {
        bail!("--raw with scope {} requires --namespace", cli.scope);
    }
    if cli.scope == Scope::Strict && cli.name.is_empty() {
        bail!("--raw with scope strict requires --name");
    }
    Ok(())
}

fn read_value(from_file: Option<&str>) -> anyhow::Result<Vec<u8>> {
    match from_file {
        Some(spec) => {
            // kubectl's `[key=]path` syntax; the key has no meaning for a raw value.
            let path = spec.split_once('=').map_or(spec, |(_, path)| path);
            std::fs::read(path).with_context(|| format!("failed to read --from-file {path}"))
        }
        None => {
            let mut value = Vec::new();
            std::io::stdin()
                .read_to_end(&mut value)
                .context("failed to read the value from stdin")?;
            Ok(value)
        }
    }
}
