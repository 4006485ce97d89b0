//! What one invocation does, in upstream's order of precedence:
//! `--recovery-unseal`, `--validate`, `--re-encrypt`, then (with the certificate) `--fetch-cert`,
//! `--merge-into`, `--raw`, and the default: seal every Secret of the input.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};
use mooring_sealing::{Scope, SealingCertificate};

use crate::cert;
use crate::cli::{Cli, Invocation};
use crate::cluster::{ClusterOptions, Controller};
use crate::documents;
use crate::merge::Merge;
use crate::output::{self, Format};
use crate::recovery;

/// Runs the invocation; output goes to stdout or, only on success, to `-w`.
pub async fn run(invocation: Invocation) -> anyhow::Result<()> {
    let Invocation { cli, format_given } = invocation;
    if cli.version {
        println!("kubeseal version: {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    if !cli.from_file.is_empty() && !cli.raw {
        bail!("--from-file requires --raw");
    }
    if cli.rotate {
        eprintln!("Flag --rotate has been deprecated, please use --re-encrypt instead");
    }
    let re_encrypt = cli.re_encrypt || cli.rotate;
    let mut input = Input::open(cli.input_file.as_deref())?;
    if cli.input_file.is_none() && !cli.raw && !cli.fetch_cert && std::io::stdin().is_terminal() {
        eprintln!("(tty detected: expecting json/yaml k8s resource in stdin)");
    }

    // --re-encrypt with only -f rewrites that file (upstream #405).
    let output_file = match (&cli.output_file, &cli.input_file) {
        (None, Some(input)) if re_encrypt => Some(input.clone()),
        (output, _) => output.clone(),
    };
    let format = output_file
        .as_deref()
        .and_then(Format::forced_by_extension)
        .unwrap_or(cli.format);

    let mut out = Vec::new();
    let mode = Mode {
        cli: &cli,
        cluster: ClusterOptions::from_cli(&cli),
        format,
        format_given: format_given.then_some(cli.format),
        re_encrypt,
    };
    mode.run(&mut input, &mut out).await?;

    match output_file {
        Some(path) => output::write_atomically(&path, &out, false),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&out)
                .and_then(|()| stdout.flush())
                .context("failed to write to stdout")
        }
    }
}

/// The input: `-f` (opened up front, so a wrong path fails first, as upstream) or stdin.
enum Input {
    File(PathBuf, File),
    Stdin,
}

impl Input {
    fn open(path: Option<&Path>) -> anyhow::Result<Input> {
        match path {
            Some(path) => {
                let file = File::open(path).with_context(|| {
                    format!(
                        "failed to read the file given with --secret-file: {}",
                        path.display()
                    )
                })?;
                Ok(Input::File(path.to_path_buf(), file))
            }
            None => Ok(Input::Stdin),
        }
    }

    fn read_all(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        match self {
            Input::File(path, file) => file
                .read_to_end(&mut bytes)
                .with_context(|| format!("failed to read {}", path.display()))?,
            Input::Stdin => std::io::stdin()
                .read_to_end(&mut bytes)
                .context("failed to read stdin")?,
        };
        Ok(bytes)
    }
}

struct Mode<'a> {
    cli: &'a Cli,
    cluster: ClusterOptions,
    format: Format,
    format_given: Option<Format>,
    re_encrypt: bool,
}

impl Mode<'_> {
    async fn run(&self, input: &mut Input, out: &mut Vec<u8>) -> anyhow::Result<()> {
        let cli = self.cli;
        if cli.recovery_unseal {
            return self.recovery_unseal(input, out);
        }
        if !cli.recovery_private_key.is_empty() && std::io::stderr().is_terminal() {
            eprintln!(
                "warning: ignoring --recovery-private-key because unseal command not chosen with --recovery-unseal"
            );
        }
        if cli.validate {
            return self.validate(input).await;
        }
        if self.re_encrypt {
            return self.re_encrypt(input, out).await;
        }

        let pem = cert::obtain(
            cli.cert.as_deref(),
            &self.cluster,
            &cli.controller_namespace,
            &cli.controller_name,
        )
        .await?;
        if cli.fetch_cert {
            out.extend_from_slice(&pem);
            return Ok(());
        }
        let certificate = cert::sealing_certificate(&pem, SystemTime::now())?;

        if let Some(target) = &cli.merge_into {
            return self.merge_into(target, input, &certificate);
        }
        if cli.raw {
            return self.raw(&certificate, out);
        }
        self.seal(input, &certificate, out)
    }

    fn recovery_unseal(&self, input: &mut Input, out: &mut Vec<u8>) -> anyhow::Result<()> {
        let keys = recovery::read_private_keys(&self.cli.recovery_private_key)?;
        let sealed_secrets = read_sealed_secrets(input)?;
        for sealed in &sealed_secrets {
            let secret = recovery::recover(sealed, &keys)?;
            output::write_object(out, self.format, &secret)?;
        }
        Ok(())
    }

    async fn controller(&self) -> anyhow::Result<Controller> {
        let client = self.cluster.client().await?;
        Controller::connect(
            client,
            &self.cli.controller_namespace,
            &self.cli.controller_name,
        )
        .await
    }

    async fn validate(&self, input: &mut Input) -> anyhow::Result<()> {
        let controller = self.controller().await?;
        for sealed in read_sealed_secrets(input)? {
            controller.verify(&sealed).await?;
        }
        Ok(())
    }

    async fn re_encrypt(&self, input: &mut Input, out: &mut Vec<u8>) -> anyhow::Result<()> {
        let controller = self.controller().await?;
        for sealed in read_sealed_secrets(input)? {
            let rotated = controller.rotate(&sealed).await?;
            output::write_object(out, self.format, &rotated)?;
        }
        Ok(())
    }

    fn merge_into(
        &self,
        target: &Path,
        input: &mut Input,
        certificate: &SealingCertificate,
    ) -> anyhow::Result<()> {
        let mut secrets = read_secrets(input)?;
        if secrets.len() != 1 {
            bail!(
                "failed to merge into {}: expected one Secret in the input, found {}",
                target.display(),
                secrets.len()
            );
        }
        // As upstream, the target's name wins over --name.
        let secret = secrets.remove(0);
        Merge {
            target,
            scope_flag: self.cli.scope,
            namespace_flag: self.cli.namespace.as_deref(),
            allow_empty_data: self.cli.allow_empty_data,
            format: self.format_given,
        }
        .run(secret, certificate.public_key())
    }

    /// `--raw`: one value, base64 with no trailing newline. The names the scope binds must be
    /// given; unlike upstream, the namespace is never taken from the kubeconfig.
    fn raw(&self, certificate: &SealingCertificate, out: &mut Vec<u8>) -> anyhow::Result<()> {
        let cli = self.cli;
        let namespace = cli.namespace.clone().unwrap_or_default();
        if cli.scope != Scope::ClusterWide && namespace.is_empty() {
            bail!("--raw with scope {} requires --namespace", cli.scope);
        }
        if cli.scope == Scope::Strict && cli.name.is_empty() {
            bail!("--raw with scope strict requires --name");
        }
        let value = zeroize::Zeroizing::new(match cli.from_file.as_slice() {
            [] => {
                if std::io::stdin().is_terminal() {
                    eprintln!("(tty detected: expecting a secret to encrypt in stdin)");
                }
                Input::Stdin.read_all()?
            }
            [spec] => {
                // kubectl's `[key=]path` syntax; the key means nothing for one raw value.
                let path = spec.split_once('=').map_or(spec.as_str(), |(_, path)| path);
                std::fs::read(path).with_context(|| format!("failed to read --from-file {path}"))?
            }
            _ => {
                bail!("must provide only one --from-file when encrypting a single item with --raw")
            }
        });
        let label = cli.scope.label(&namespace, &cli.name);
        let sealed = mooring_sealing::seal(certificate.public_key(), &label, &value)
            .context("failed to seal the raw value")?;
        out.extend_from_slice(mooring_sealing::encode_base64(&sealed).as_bytes());
        Ok(())
    }

    /// The default: every Secret of the input becomes a SealedSecret.
    fn seal(
        &self,
        input: &mut Input,
        certificate: &SealingCertificate,
        out: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        let cli = self.cli;
        let secrets = read_secrets(input)?;
        // As upstream, the default strict scope does not override the input's annotations.
        let scope_override = (cli.scope != Scope::Strict).then_some(cli.scope);
        for mut secret in secrets {
            if !cli.name.is_empty() {
                secret.metadata.name = Some(cli.name.clone());
            }
            let annotations = secret.metadata.annotations.clone().unwrap_or_default();
            let scope = scope_override.unwrap_or_else(|| Scope::from_annotations(&annotations));
            if scope != Scope::ClusterWide {
                self.fill_namespace(&mut secret)?;
            }
            let sealed = mooring_sealing::seal_secret(
                &secret,
                certificate.public_key(),
                scope_override,
                cli.allow_empty_data,
            )?;
            output::write_object(out, self.format, &sealed)?;
        }
        Ok(())
    }

    /// The input's namespace, else `-n`, else the kubeconfig context's, else `default` (as
    /// upstream); an explicit `-n` that contradicts the input is an error.
    fn fill_namespace(
        &self,
        secret: &mut k8s_openapi::api::core::v1::Secret,
    ) -> anyhow::Result<()> {
        let current = secret
            .metadata
            .namespace
            .clone()
            .filter(|namespace| !namespace.is_empty());
        match (&self.cli.namespace, current) {
            (Some(flag), Some(current)) if *flag != current => bail!(
                "namespace mismatch: input secret is in namespace {current:?} but {flag:?} was specified"
            ),
            (_, Some(_)) => {}
            (Some(flag), None) => secret.metadata.namespace = Some(flag.clone()),
            (None, None) => {
                let namespace = self
                    .cluster
                    .context_namespace()?
                    .unwrap_or_else(|| "default".to_string());
                secret.metadata.namespace = Some(namespace);
            }
        }
        Ok(())
    }
}

/// The Secrets of the input (several YAML documents or concatenated JSON objects).
fn read_secrets(input: &mut Input) -> anyhow::Result<Vec<k8s_openapi::api::core::v1::Secret>> {
    let bytes = zeroize::Zeroizing::new(input.read_all()?);
    let documents = documents::parse_documents(&bytes)?;
    if documents.is_empty() {
        bail!("failed to seal: no secrets found; ensure the input is valid and UTF-8 encoded");
    }
    documents
        .into_iter()
        .enumerate()
        .map(|(index, document)| documents::secret_from_document(document, index + 1))
        .collect()
}

/// The SealedSecrets of the input; a `List` (`kubectl get sealedsecrets -o yaml`) yields its
/// items. An input without any is an error, so a check that checked nothing cannot pass.
fn read_sealed_secrets(input: &mut Input) -> anyhow::Result<Vec<mooring_crds::SealedSecret>> {
    let bytes = input.read_all()?;
    let documents: Vec<_> = documents::parse_documents(&bytes)?
        .into_iter()
        .flat_map(documents::list_items)
        .collect();
    if documents.is_empty() {
        bail!("failed to read sealed secrets: none found in the input");
    }
    documents
        .into_iter()
        .enumerate()
        .map(|(index, document)| documents::sealed_secret_from_document(document, index + 1))
        .collect()
}
