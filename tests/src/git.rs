//! Git repositories of a test's own, served by the realenv's git servers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;

use crate::RealEnv;

/// Runs `git args` in `dir` (no system or global configuration, never prompting); returns its
/// trimmed standard output.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .context("failed to run git")?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// A bare repository of a test's own under `GIT_REPO_ROOT` (served by both git servers), and a
/// work tree that pushes to it through the file system. The bare repository is deleted when
/// dropped.
pub struct GitRepo {
    /// The bare repository's directory name (unique per test and process).
    pub name: String,
    bare: PathBuf,
    work: tempfile::TempDir,
}

impl GitRepo {
    /// An empty repository with branch `main`, named after `prefix`.
    pub fn create(env: &RealEnv, prefix: &str) -> anyhow::Result<GitRepo> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let mut random = [0u8; 4];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!(
            "{prefix}-{}-{}-{suffix}.git",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        );
        let bare = Path::new(env.var("GIT_REPO_ROOT")?).join(&name);
        let work = tempfile::tempdir()?;
        git(work.path(), &["init", "-q", "-b", "main"])?;
        git(work.path(), &["config", "user.name", "mooring-e2e"])?;
        git(
            work.path(),
            &["config", "user.email", "e2e@mooring.invalid"],
        )?;
        let bare_text = bare.to_str().context("the repository path is not UTF-8")?;
        git(
            work.path(),
            &["init", "-q", "--bare", "-b", "main", bare_text],
        )?;
        git(work.path(), &["remote", "add", "origin", bare_text])?;
        Ok(GitRepo { name, bare, work })
    }

    /// Its URL on the smart-HTTP server.
    pub fn http_url(&self, env: &RealEnv) -> anyhow::Result<String> {
        Ok(format!("{}/{}", env.var("GIT_HTTP_URL")?, self.name))
    }

    /// Its URL on the ssh server.
    pub fn ssh_url(&self, env: &RealEnv) -> anyhow::Result<String> {
        Ok(format!(
            "{}{}",
            env.var("GIT_SSH_URL")?,
            self.bare.display()
        ))
    }

    /// Its `file://` URL.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// The work tree.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Writes `text` to `path` in the work tree (not committed yet).
    pub fn write(&self, path: &str, text: &str) -> anyhow::Result<()> {
        let file = self.work.path().join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        Ok(std::fs::write(file, text)?)
    }

    /// Deletes `path` from the work tree (not committed yet).
    pub fn remove(&self, path: &str) -> anyhow::Result<()> {
        Ok(std::fs::remove_file(self.work.path().join(path))?)
    }

    /// Commits everything in the work tree and pushes; returns the commit SHA.
    pub fn commit(&self, message: &str) -> anyhow::Result<String> {
        git(self.work.path(), &["add", "-A"])?;
        git(self.work.path(), &["commit", "-q", "-m", message])?;
        git(self.work.path(), &["push", "-q", "origin", "main"])?;
        git(self.work.path(), &["rev-parse", "HEAD"])
    }

    /// Writes `files`, then commits and pushes them.
    pub fn commit_files(&self, files: &[(&str, &str)], message: &str) -> anyhow::Result<String> {
        for (path, text) in files {
            self.write(path, text)?;
        }
        self.commit(message)
    }
}

impl Drop for GitRepo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bare);
    }
}
