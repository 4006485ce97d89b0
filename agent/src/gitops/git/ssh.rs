//! ssh for gix: the system `ssh` with a private configuration of its own per fetch.
//!
//! The key and known_hosts are written to a fresh directory only this process can read, which
//! is deleted when the fetch ends. The configuration file given with `-F` replaces the system
//! and user ones entirely: only the repository's key is offered, only the repository's
//! known_hosts are trusted (StrictHostKeyChecking=yes, no global known_hosts), nothing
//! interactive. ssh's messages go to a log file (`-E`) so errors can say *why* ssh failed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{GitError, RepoCredentials};

/// A private directory with the key, known_hosts, ssh_config and ssh's log for one fetch.
pub(super) struct Session {
    dir: tempfile::TempDir,
}

impl Session {
    /// Writes the files into the system's temporary directory, never into the long-lived cache.
    pub fn new(credentials: Option<&RepoCredentials>) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("mooring-ssh-").tempdir()?;
        let path = dir.path();
        if path
            .to_string_lossy()
            .contains(['\'', '"', ' ', '\\', '\n'])
        {
            return Err(std::io::Error::other(
                "the temporary directory's path is not safe to pass to ssh",
            ));
        }
        let key = credentials.and_then(|c| c.ssh_private_key.as_ref());
        let identity = match key {
            Some(key) => {
                let mut text = zeroize::Zeroizing::new(key.replace("\r\n", "\n"));
                if !text.ends_with('\n') {
                    // OpenSSH rejects a key without its final line break.
                    text.push('\n');
                }
                write_private(&path.join("key"), text.as_bytes())?;
                format!("IdentityFile {}", path.join("key").display())
            }
            None => "IdentityFile none".to_string(),
        };
        let known_hosts = credentials
            .and_then(|c| c.known_hosts.clone())
            .unwrap_or_default();
        write_private(&path.join("known_hosts"), known_hosts.as_bytes())?;
        let config = format!(
            "Host *\n\
             \x20 {identity}\n\
             \x20 IdentitiesOnly yes\n\
             \x20 IdentityAgent none\n\
             \x20 StrictHostKeyChecking yes\n\
             \x20 UserKnownHostsFile {known_hosts}\n\
             \x20 GlobalKnownHostsFile /dev/null\n\
             \x20 CheckHostIP no\n\
             \x20 UpdateHostKeys no\n\
             \x20 BatchMode yes\n\
             \x20 PasswordAuthentication no\n\
             \x20 KbdInteractiveAuthentication no\n\
             \x20 PreferredAuthentications publickey\n\
             \x20 ConnectTimeout 30\n\
             \x20 ServerAliveInterval 15\n\
             \x20 ServerAliveCountMax 4\n\
             \x20 LogLevel ERROR\n",
            known_hosts = path.join("known_hosts").display(),
        );
        write_private(&path.join("config"), config.as_bytes())?;
        Ok(Session { dir })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// gix's ssh options: our command, run through `sh -c` (it has arguments), OpenSSH flavour.
    pub fn connect_options(
        &self,
    ) -> gix::protocol::transport::client::blocking_io::ssh::connect::Options {
        let command = format!(
            "ssh -F '{}' -E '{}'",
            self.dir.path().join("config").display(),
            self.log_path().display()
        );
        gix::protocol::transport::client::blocking_io::ssh::connect::Options {
            command: Some(command.into()),
            disallow_shell: false,
            kind: Some(gix::protocol::transport::client::blocking_io::ssh::ProgramKind::Ssh),
        }
    }

    /// Turns a transport error into what ssh said went wrong, when its log says it.
    pub fn explain(&self, error: GitError, url: &str) -> GitError {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let line = |needle: &str| {
            log.lines()
                .find(|l| l.contains(needle))
                .map(|l| l.trim().to_string())
        };
        let url = url.to_string();
        if let Some(detail) = line("REMOTE HOST IDENTIFICATION HAS CHANGED")
            .or_else(|| line("host key is known for"))
            .or_else(|| line("Host key verification failed"))
        {
            return GitError::HostKeyMismatch { url, detail };
        }
        if let Some(detail) = line("Permission denied")
            .or_else(|| line("Load key"))
            .or_else(|| line("invalid format"))
        {
            return GitError::AuthenticationFailed { url, detail };
        }
        if let Some(detail) = line("Connection refused")
            .or_else(|| line("Could not resolve hostname"))
            .or_else(|| line("Connection timed out"))
            .or_else(|| line("Connection closed"))
        {
            return GitError::Unreachable { url, detail };
        }
        error
    }
}

/// Creates `path` readable by this user only (ssh refuses a key others can read).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
