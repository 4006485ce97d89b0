//! The render sandbox: a renderer (kustomize today) runs with only what it needs in reach.
//!
//! A kustomization (or a chart) is code from Git, and the agent's ServiceAccount token, its
//! sealing keys' Secrets in memory and everything else on its filesystem are what an attacker
//! who can push to a repository would want. The renderer is therefore started through
//! `mooring render-exec`: the agent's own binary restricts itself with Landlock (unprivileged,
//! inherited across `exec`) to reading the system directories, the renderer's binary and the
//! checkout, and writing its scratch directory, then executes the renderer. The token at
//! `/var/run/secrets/kubernetes.io/serviceaccount/` is not among them. Landlock needs Linux 5.13
//! or later with it enabled; `--render-sandbox required` refuses to render without it,
//! `best-effort` (the default) renders unconfined there, and the agent says so in its log when it
//! starts (it tries the sandbox once).

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, path_beneath_rules,
};

/// Directories a renderer may read (and execute from), besides its checkout: the system's
/// programs, libraries and certificates. Missing ones are skipped.
const SYSTEM_READ: [&str; 8] = [
    "/usr",
    "/lib",
    "/lib64",
    "/bin",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/resolv.conf",
    "/etc/hosts",
];

/// Files a renderer may read and write.
const SYSTEM_WRITE: [&str; 2] = ["/dev/null", "/dev/zero"];

/// How renderers are confined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    /// Confined where the kernel supports it; unconfined, with a warning, where it does not.
    #[default]
    BestEffort,
    /// Confined, or the render fails.
    Required,
    /// Not confined.
    Off,
}

/// Runs renderers through `<exe> render-exec`, the agent's own binary.
#[derive(Clone, Debug)]
pub struct Sandbox {
    exe: PathBuf,
    required: bool,
}

impl Sandbox {
    /// A sandbox started through `exe` (the `mooring` binary); `None` when `mode` is off.
    pub fn new(mode: SandboxMode, exe: PathBuf) -> Option<Sandbox> {
        (mode != SandboxMode::Off).then_some(Sandbox {
            exe,
            required: mode == SandboxMode::Required,
        })
    }

    /// Whether renderers are really confined here: runs the agent's binary through the sandbox
    /// once (`render-exec --required -- <exe> --version`).
    pub fn is_enforced(&self) -> bool {
        std::process::Command::new(&self.exe)
            .args(["render-exec", "--required", "--"])
            .arg(&self.exe)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// The command that runs `program` confined to reading `read` and writing `write`.
    pub fn command(
        &self,
        program: &Path,
        read: &[&Path],
        write: &[&Path],
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.exe);
        command.arg("render-exec");
        if self.required {
            command.arg("--required");
        }
        for path in read {
            command.arg("--read").arg(path);
        }
        for path in write {
            command.arg("--write").arg(path);
        }
        command.arg("--").arg(program);
        command
    }
}

/// Why the sandbox could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The kernel refused or does not support the ruleset.
    #[error("failed to confine the renderer with Landlock")]
    Landlock(#[source] landlock::RulesetError),
    /// Landlock is not available and the sandbox is required.
    #[error(
        "the renderer cannot be confined: this kernel does not enforce Landlock (--render-sandbox required)"
    )]
    NotEnforced,
    /// The renderer could not be executed.
    #[error("failed to execute the renderer {program}")]
    Exec {
        /// The renderer.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// `mooring render-exec`: confines this process to reading `read` (plus the system directories
/// and `program`) and writing `write`, then replaces it with `program args`. Returns only on
/// failure.
pub fn exec(
    read: &[PathBuf],
    write: &[PathBuf],
    required: bool,
    program: &Path,
    args: &[String],
) -> SandboxError {
    match confine(read, write, program) {
        Ok(RulesetStatus::NotEnforced) if required => return SandboxError::NotEnforced,
        Ok(_) => {}
        Err(error) => return SandboxError::Landlock(error),
    }
    let source =
        std::os::unix::process::CommandExt::exec(std::process::Command::new(program).args(args));
    SandboxError::Exec {
        program: program.to_path_buf(),
        source,
    }
}

/// Restricts this process (and what it executes) to the given paths.
fn confine(
    read: &[PathBuf],
    write: &[PathBuf],
    program: &Path,
) -> Result<RulesetStatus, landlock::RulesetError> {
    let abi = ABI::V3;
    let existing = |paths: Vec<PathBuf>| -> Vec<PathBuf> {
        paths.into_iter().filter(|p| p.exists()).collect()
    };
    let readable = existing(
        SYSTEM_READ
            .iter()
            .map(PathBuf::from)
            .chain(read.iter().cloned())
            .chain(std::iter::once(program.to_path_buf()))
            .collect(),
    );
    let writable = existing(
        SYSTEM_WRITE
            .iter()
            .map(PathBuf::from)
            .chain(write.iter().cloned())
            .collect(),
    );
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(&readable, AccessFs::from_read(abi)))?
        .add_rules(path_beneath_rules(&writable, AccessFs::from_all(abi)))?
        .restrict_self()?;
    Ok(status.ruleset)
}
