//! The command line: upstream kubeseal's flags, each also read from `SEALED_SECRETS_<FLAG>`.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use mooring_sealing::Scope;

use crate::output::Format;

/// What kubeseal prints for `--help` above the flags.
const ABOUT: &str = "kubeseal: seal Kubernetes Secrets into SealedSecrets that only the cluster's controller \
(mooring, or bitnami sealed-secrets) can open.";

/// Where kubeseal differs from upstream's, printed after the flags.
const AFTER_HELP: &str = "\
Modes (first match wins): --recovery-unseal, --validate, --re-encrypt, --fetch-cert, --merge-into, --raw,
then the default: read Secrets (JSON or YAML, several documents allowed) from -f or stdin and print
one SealedSecret per Secret.

Every flag can also be set from the environment as SEALED_SECRETS_<FLAG> (upper case, dashes as
underscores, for example SEALED_SECRETS_CONTROLLER_NAMESPACE); the command line wins. Boolean flags
accept --flag, --flag=true and --flag=false.

Differences from upstream kubeseal:
  --controller-name/--controller-namespace default to mooring's Service (mooring-system/mooring).
  --raw never guesses the namespace from the kubeconfig: pass --namespace unless --scope cluster-wide
    (a value sealed for a guessed namespace only fails later, in the cluster).
  --merge-into seals with the target SealedSecret's name, namespace AND scope (upstream uses --scope or
    the input's annotations, which yields values the target cannot open); a non-strict --scope that
    differs from the target's is an error. Without -o, the target keeps its format (JSON or YAML);
    the target file is replaced atomically and keeps its permissions.
  --recovery-unseal also opens the deprecated single-blob spec.data and several SealedSecrets.
  Templates never carry managedFields (upstream copies them from the input).";

/// Seal secrets so that only the cluster's controller can open them.
#[derive(Debug, Parser)]
#[command(
    name = "kubeseal",
    about = ABOUT,
    after_help = AFTER_HELP,
    disable_version_flag = true
)]
pub struct Cli {
    /// Certificate / public key to seal with: a file path, an http(s):// URL or a file:// URL.
    /// Overrides --controller-*.
    #[arg(long, env = "SEALED_SECRETS_CERT", value_name = "FILE|URL")]
    pub cert: Option<String>,

    /// Namespace of the controller's Service.
    #[arg(
        long,
        env = "SEALED_SECRETS_CONTROLLER_NAMESPACE",
        default_value = "mooring-system",
        value_name = "NAMESPACE"
    )]
    pub controller_namespace: String,

    /// Name of the controller's Service.
    #[arg(
        long,
        env = "SEALED_SECRETS_CONTROLLER_NAME",
        default_value = "mooring",
        value_name = "NAME"
    )]
    pub controller_name: String,

    /// Output format for sealed secret: json or yaml (yaml output starts with "---").
    #[arg(
        short = 'o',
        long = "format",
        env = "SEALED_SECRETS_FORMAT",
        default_value = "json",
        value_parser = parse_format,
        value_name = "FORMAT"
    )]
    pub format: Format,

    /// Sealed-secret (output) file, written atomically and only on success; a .yaml or .yml
    /// extension forces yaml.
    #[arg(
        short = 'w',
        long = "sealed-secret-file",
        env = "SEALED_SECRETS_SEALED_SECRET_FILE",
        value_name = "FILE",
        conflicts_with = "merge_into"
    )]
    pub output_file: Option<PathBuf>,

    /// Secret (input) file [default: stdin].
    #[arg(
        short = 'f',
        long = "secret-file",
        env = "SEALED_SECRETS_SECRET_FILE",
        value_name = "FILE"
    )]
    pub input_file: Option<PathBuf>,

    /// Write the certificate to stdout (or -w). Useful for later use with --cert.
    #[arg(long, env = "SEALED_SECRETS_FETCH_CERT", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new(), value_name = "BOOL", hide_default_value = true,
          hide_possible_values = true)]
    pub fetch_cert: bool,

    /// Allow a Secret without data or stringData.
    #[arg(long, env = "SEALED_SECRETS_ALLOW_EMPTY_DATA", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new(), value_name = "BOOL", hide_default_value = true,
          hide_possible_values = true)]
    pub allow_empty_data: bool,

    /// Validate that the sealed secrets from the input can be decrypted by the controller
    /// (POST /v1/verify through the API server's service proxy).
    #[arg(long, env = "SEALED_SECRETS_VALIDATE", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new(), value_name = "BOOL", hide_default_value = true,
          hide_possible_values = true)]
    pub validate: bool,

    /// Merge the items of the input Secret into this existing SealedSecret file, sealed with the
    /// file's name, namespace and scope, and rewrite the file in place instead of writing to stdout.
    #[arg(long, env = "SEALED_SECRETS_MERGE_INTO", value_name = "FILE")]
    pub merge_into: Option<PathBuf>,

    /// Encrypt one raw value (stdin or --from-file) instead of a whole Secret; prints its base64.
    /// Needs --namespace unless cluster-wide, and --name when strict.
    #[arg(long, env = "SEALED_SECRETS_RAW", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new(), value_name = "BOOL", hide_default_value = true,
          hide_possible_values = true)]
    pub raw: bool,

    /// Name of the sealed secret: overrides the input Secret's name; required with --raw and the
    /// strict scope.
    #[arg(
        long,
        env = "SEALED_SECRETS_NAME",
        default_value = "",
        hide_default_value = true
    )]
    pub name: String,

    /// (only with --raw) Read the value from this file, kubectl syntax [key=]path (the key is
    /// ignored); /dev/stdin reads a pipe.
    #[arg(
        long,
        env = "SEALED_SECRETS_FROM_FILE",
        value_delimiter = ',',
        value_name = "[KEY=]PATH"
    )]
    pub from_file: Vec<String>,

    /// Scope of the sealed secret: strict, namespace-wide or cluster-wide. Mandatory for --raw;
    /// otherwise the sealedsecrets.bitnami.com/cluster-wide and .../namespace-wide annotations of
    /// the input Secret can select it (strict does not override them).
    #[arg(
        long,
        env = "SEALED_SECRETS_SCOPE",
        default_value = "strict",
        value_parser = parse_scope,
        value_name = "SCOPE"
    )]
    pub scope: Scope,

    /// Re-encrypt the input sealed secrets with the controller's newest key (POST /v1/rotate);
    /// with only -f, the file is rewritten in place.
    #[arg(long, env = "SEALED_SECRETS_RE_ENCRYPT", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new(), value_name = "BOOL", hide_default_value = true,
          hide_possible_values = true)]
    pub re_encrypt: bool,

    /// Deprecated spelling of --re-encrypt.
    #[arg(long, env = "SEALED_SECRETS_ROTATE", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new(), hide = true)]
    pub rotate: bool,

    /// Decrypt the sealed secrets from the input offline with --recovery-private-key and print the
    /// Secrets. For disaster recovery.
    #[arg(long, env = "SEALED_SECRETS_RECOVERY_UNSEAL", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new(), value_name = "BOOL", hide_default_value = true,
          hide_possible_values = true)]
    pub recovery_unseal: bool,

    /// Private key file for --recovery-unseal; repeat the flag or separate with commas. Each file
    /// is a PEM private key (PKCS#1 or PKCS#8) or a JSON/YAML Secret or v1 List of Secrets (the
    /// controller's key backup), read from data["tls.key"].
    #[arg(
        long,
        env = "SEALED_SECRETS_RECOVERY_PRIVATE_KEY",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub recovery_private_key: Vec<PathBuf>,

    /// Path to a kubeconfig [default: $KUBECONFIG, ~/.kube/config, then in-cluster].
    #[arg(long, env = "SEALED_SECRETS_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use.
    #[arg(long, env = "SEALED_SECRETS_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,

    /// The kubeconfig cluster to use.
    #[arg(long, env = "SEALED_SECRETS_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,

    /// The kubeconfig user to use.
    #[arg(long, env = "SEALED_SECRETS_USER", value_name = "NAME")]
    pub user: Option<String>,

    /// The address of the Kubernetes API server.
    #[arg(short = 's', long, env = "SEALED_SECRETS_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// Bearer token for the API server.
    #[arg(long, env = "SEALED_SECRETS_TOKEN", value_name = "TOKEN")]
    pub token: Option<String>,

    /// Username to impersonate.
    #[arg(long = "as", env = "SEALED_SECRETS_AS", value_name = "USER")]
    pub impersonate: Option<String>,

    /// Group to impersonate; repeat for several.
    #[arg(
        long = "as-group",
        env = "SEALED_SECRETS_AS_GROUP",
        value_name = "GROUP"
    )]
    pub impersonate_groups: Vec<String>,

    /// Do not verify the API server's certificate (insecure).
    #[arg(long, env = "SEALED_SECRETS_INSECURE_SKIP_TLS_VERIFY", action = ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          value_name = "BOOL", hide_default_value = true,
          hide_possible_values = true)]
    pub insecure_skip_tls_verify: bool,

    /// Server name to check the API server's certificate against.
    #[arg(long, env = "SEALED_SECRETS_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// Namespace of the Secret [default: the input's, else the kubeconfig context's, else
    /// "default"]; an input Secret in another namespace is an error. Never guessed for --raw.
    #[arg(
        short = 'n',
        long,
        env = "SEALED_SECRETS_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub namespace: Option<String>,

    /// Print version information and exit.
    #[arg(long, action = ArgAction::SetTrue)]
    pub version: bool,
}

/// The parsed command line, plus what only the raw matches know.
pub struct Invocation {
    /// The flags.
    pub cli: Cli,
    /// Whether `-o` was given (command line or environment) rather than defaulted.
    pub format_given: bool,
}

/// The command; environment values never show in `--help` (they may hold a token).
pub fn command() -> clap::Command {
    Cli::command().mut_args(|arg| arg.hide_env_values(true))
}

/// Parses the process arguments (exits on `--help` and usage errors, as clap does).
pub fn parse() -> Invocation {
    let matches = command().get_matches();
    let format_given = matches
        .value_source("format")
        .is_some_and(|source| source != ValueSource::DefaultValue);
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => Invocation { cli, format_given },
        Err(error) => error.exit(),
    }
}

/// `-o`: upstream lower-cases the value and accepts json or yaml only.
fn parse_format(value: &str) -> Result<Format, String> {
    match value.to_ascii_lowercase().as_str() {
        "json" | "" => Ok(Format::Json),
        "yaml" => Ok(Format::Yaml),
        _ => Err(format!("unsupported output format: {value}")),
    }
}

/// `--scope`: upstream treats an empty value as the default (strict).
fn parse_scope(value: &str) -> Result<Scope, String> {
    if value.is_empty() {
        return Ok(Scope::Strict);
    }
    value
        .parse()
        .map_err(|_| "must be one of: strict, namespace-wide, cluster-wide".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn formats_and_scopes_parse_like_upstream() {
        assert_eq!(parse_format("YAML"), Ok(Format::Yaml));
        assert_eq!(parse_format("json"), Ok(Format::Json));
        assert!(parse_format("toml").is_err());
        assert_eq!(parse_scope(""), Ok(Scope::Strict));
        assert_eq!(parse_scope("cluster-wide"), Ok(Scope::ClusterWide));
        assert!(parse_scope("wide").is_err());
    }

    #[test]
    fn boolean_flags_take_go_style_values() {
        let cli = Cli::try_parse_from(["kubeseal", "--raw=false", "--allow-empty-data"]).unwrap();
        assert!(!cli.raw);
        assert!(cli.allow_empty_data);
        let cli = Cli::try_parse_from(["kubeseal", "--recovery-private-key", "a,b"]).unwrap();
        assert_eq!(
            cli.recovery_private_key,
            vec![PathBuf::from("a"), PathBuf::from("b")]
        );
    }
}
