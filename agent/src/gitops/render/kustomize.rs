//! Kustomize sources: the pinned `kustomize` binary, with a timeout and a concurrency limit.
//!
//! Before the build the kustomization graph (`resources`, `bases`, `components`) is walked:
//! remote bases are refused with the file that names them (unless the agent allows them), and
//! so are local references that leave the checkout; every symlink of the checkout must stay
//! inside it, since kustomize follows links anywhere. kustomize itself keeps patches and
//! generator files inside each kustomization root (`LoadRestrictionsRootOnly`). With remote bases
//! off, kustomize also runs with an empty environment, no `git` on its PATH and a dead proxy, so
//! a remote reference the walk did not see still cannot reach the network.
//!
//! Argo CD's `kustomize` options (namePrefix, nameSuffix, images, commonLabels) are applied by a
//! generated kustomization in a temporary directory that has the source path as its only
//! resource: the read-only checkout is never edited.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kube::api::DynamicObject;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::{Jail, RenderError, RenderLimits, RenderOptions, Sandbox, yaml};

/// File names that make a directory a kustomization, as kustomize and Argo CD.
const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The kustomize runner the agent shares between renders: which binary (`kustomize`, or
/// `kubectl`, which then runs `kubectl kustomize`), how long one build may take, how many run at
/// once, and whether remote bases are allowed.
#[derive(Clone, Debug)]
pub struct Kustomize {
    binary: PathBuf,
    timeout: Duration,
    permits: Arc<tokio::sync::Semaphore>,
    allow_remote_bases: bool,
    sandbox: Option<Sandbox>,
}

impl Default for Kustomize {
    /// `kustomize` from PATH, 90 s (Argo CD's exec timeout), 4 at once, no remote bases.
    fn default() -> Self {
        Kustomize::new(PathBuf::from("kustomize"), Duration::from_secs(90), 4)
    }
}

impl Kustomize {
    /// A runner for `binary`; at most `concurrency` builds at once (at least one).
    pub fn new(binary: PathBuf, timeout: Duration, concurrency: usize) -> Kustomize {
        Kustomize {
            binary,
            timeout,
            permits: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
            allow_remote_bases: false,
            sandbox: None,
        }
    }

    /// Allows kustomizations to fetch remote bases (off by default: a render then depends on
    /// more than the commit, and kustomize would reach the network with the agent's identity).
    pub fn with_remote_bases(mut self, allow: bool) -> Kustomize {
        self.allow_remote_bases = allow;
        self
    }

    /// Runs kustomize through `sandbox` (see [`Sandbox`]), so it reads only its checkout.
    pub fn with_sandbox(mut self, sandbox: Option<Sandbox>) -> Kustomize {
        self.sandbox = sandbox;
        self
    }

    /// The binary run.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Runs `kustomize build` for a prepared source.
    pub(super) async fn build(
        &self,
        prepared: Prepared,
        shown: &str,
        limits: &RenderLimits,
    ) -> Result<Vec<DynamicObject>, RenderError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| RenderError::Workspace(std::io::Error::other(e.to_string())))?;
        let mut command = match &self.sandbox {
            Some(sandbox) => sandbox.command(
                &self.binary,
                &[prepared.checkout.as_path(), prepared.build_dir.as_path()],
                &[prepared.home.path()],
            ),
            None => tokio::process::Command::new(&self.binary),
        };
        // `kubectl kustomize DIR` is the same build where kubectl is what the machine has.
        let is_kubectl = self
            .binary
            .file_name()
            .is_some_and(|name| name == "kubectl");
        command
            .arg(if is_kubectl { "kustomize" } else { "build" })
            .arg(&prepared.build_dir)
            .args(["--load-restrictor", "LoadRestrictionsRootOnly"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if !self.allow_remote_bases {
            let home = prepared.home.path();
            // Nothing from the agent's environment; no git to clone with; any HTTP(S) request
            // goes to a proxy on the discard port, which refuses it.
            command
                .env_clear()
                .env("PATH", "/nonexistent")
                .env("HOME", home)
                .env("XDG_CONFIG_HOME", home)
                .env("TMPDIR", home);
            for proxy in [
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "ALL_PROXY",
                "http_proxy",
                "https_proxy",
            ] {
                command.env(proxy, "http://127.0.0.1:9");
            }
            command.env("NO_PROXY", "").env("no_proxy", "");
        }
        let run = async {
            let mut child =
                command
                    .spawn()
                    .map_err(|source| RenderError::KustomizeUnavailable {
                        binary: self.binary.clone(),
                        source,
                    })?;
            let mut stdout = child
                .stdout
                .take()
                .ok_or_else(|| RenderError::Workspace(std::io::Error::other("no stdout")))?;
            let mut stderr = child
                .stderr
                .take()
                .ok_or_else(|| RenderError::Workspace(std::io::Error::other("no stderr")))?;
            let mut output = Vec::new();
            let mut errors = Vec::new();
            let limit = limits.max_total_bytes;
            let mut stdout = (&mut stdout).take(limit + 1);
            let mut stderr = (&mut stderr).take(64 * 1024);
            let (read_out, read_err) = tokio::join!(
                stdout.read_to_end(&mut output),
                stderr.read_to_end(&mut errors),
            );
            read_out.map_err(RenderError::Workspace)?;
            read_err.map_err(RenderError::Workspace)?;
            if output.len() as u64 > limit {
                let _ = child.kill().await;
                return Err(RenderError::TooLarge {
                    path: shown.to_string(),
                    reason: format!("kustomize printed more than {limit} bytes"),
                });
            }
            let status = child.wait().await.map_err(RenderError::Workspace)?;
            Ok((status, output, errors))
        };
        let (status, output, errors) =
            tokio::time::timeout(self.timeout, run)
                .await
                .map_err(|_| RenderError::KustomizeTimeout {
                    path: shown.to_string(),
                    after: self.timeout,
                })??;
        if !status.success() {
            return Err(RenderError::Kustomize {
                path: shown.to_string(),
                message: summarize(&String::from_utf8_lossy(&errors), &prepared.checkout),
            });
        }
        let text = String::from_utf8(output).map_err(|_| RenderError::Yaml {
            file: format!("{shown} (kustomize output)"),
            line: None,
            column: None,
            message: "the output is not UTF-8 text".into(),
        })?;
        let mut alias_allowance = yaml::ALIAS_EXPANSION_BYTES;
        yaml::parse_objects(
            &format!("{shown} (kustomize output)"),
            &text,
            &mut alias_allowance,
        )
    }
}

/// kustomize's error lines, with the checkout's location removed, at most 2000 characters.
fn summarize(stderr: &str, checkout: &Path) -> String {
    let checkout = format!("{}/", checkout.display());
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("Error"))
        .collect();
    let text = if lines.is_empty() {
        stderr.trim().to_string()
    } else {
        lines.join("; ")
    };
    let text = text.replace(&checkout, "");
    text.chars().take(2000).collect()
}

/// Whether `dir` holds a kustomization file.
pub(super) fn is_kustomization(dir: &Path) -> bool {
    KUSTOMIZATION_FILES
        .iter()
        .any(|name| dir.join(name).is_file())
}

/// A source checked and ready to build.
pub(super) struct Prepared {
    /// The directory given to `kustomize build`.
    build_dir: PathBuf,
    /// The checkout (to shorten paths in messages).
    checkout: PathBuf,
    /// The generated kustomization with Argo CD's options, when there are any.
    _overlay: Option<tempfile::TempDir>,
    /// An empty HOME for kustomize.
    home: tempfile::TempDir,
}

/// Checks the checkout and the kustomization graph and writes the option overlay.
pub(super) fn prepare(
    checkout: &Path,
    relative: &Path,
    options: &RenderOptions,
) -> Result<Prepared, RenderError> {
    let jail = Jail::new(checkout)?;
    check_symlinks(&jail, checkout)?;
    let source = checkout.join(relative);
    let mut visited = HashSet::new();
    check_graph(
        &jail,
        &source,
        options.limits.kustomize.allow_remote_bases,
        &mut visited,
    )?;
    let home = tempfile::Builder::new()
        .prefix("mooring-kustomize-")
        .tempdir()
        .map_err(RenderError::Workspace)?;
    let (build_dir, overlay) = if options.kustomize.is_empty() {
        (source, None)
    } else {
        let overlay = tempfile::Builder::new()
            .prefix("mooring-kustomize-overlay-")
            .tempdir()
            .map_err(RenderError::Workspace)?;
        let real_source = source.canonicalize().map_err(|source| RenderError::Read {
            file: super::display_path(relative),
            source,
        })?;
        let real_overlay = overlay
            .path()
            .canonicalize()
            .map_err(RenderError::Workspace)?;
        // kustomize refuses an absolute path as a base: climb from the overlay to `/` instead.
        let climb = "../".repeat(real_overlay.components().count().saturating_sub(1));
        let reference = format!(
            "{climb}{}",
            real_source
                .strip_prefix("/")
                .unwrap_or(&real_source)
                .display()
        );
        let kustomization = overlay_kustomization(&reference, options)?;
        std::fs::write(
            overlay.path().join("kustomization.yaml"),
            serde_json::to_vec_pretty(&kustomization)
                .map_err(|e| RenderError::Workspace(std::io::Error::other(e)))?,
        )
        .map_err(RenderError::Workspace)?;
        (overlay.path().to_path_buf(), Some(overlay))
    };
    Ok(Prepared {
        build_dir,
        checkout: checkout.to_path_buf(),
        _overlay: overlay,
        home,
    })
}

/// The generated kustomization (JSON is YAML) that applies Argo CD's options to `source`.
fn overlay_kustomization(source: &str, options: &RenderOptions) -> Result<Value, RenderError> {
    let settings = &options.kustomize;
    let mut kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [source],
    });
    if let Some(prefix) = settings.name_prefix.as_deref().filter(|p| !p.is_empty()) {
        kustomization["namePrefix"] = json!(prefix);
    }
    if let Some(suffix) = settings.name_suffix.as_deref().filter(|s| !s.is_empty()) {
        kustomization["nameSuffix"] = json!(suffix);
    }
    if !settings.images.is_empty() {
        let images = settings
            .images
            .iter()
            .map(|image| parse_image(image))
            .collect::<Result<Vec<_>, _>>()?;
        kustomization["images"] = Value::Array(images);
    }
    if !settings.common_labels.is_empty() {
        kustomization["commonLabels"] = json!(settings.common_labels);
    }
    Ok(kustomization)
}

/// An Argo CD image override (`name:tag`, `name@digest`, `name=new-name[:tag|@digest]`) as a
/// kustomize `images` entry.
fn parse_image(image: &str) -> Result<Value, RenderError> {
    let invalid = |reason| RenderError::InvalidImage {
        image: image.to_string(),
        reason,
    };
    let image = image.trim();
    if image.is_empty() {
        return Err(invalid("it is empty"));
    }
    let (name, replacement) = match image.split_once('=') {
        Some((name, replacement)) => (Some(name.trim()), replacement.trim()),
        None => (None, image),
    };
    let (reference, digest) = match replacement.split_once('@') {
        Some((reference, digest)) => (reference, Some(digest)),
        None => (replacement, None),
    };
    // A tag follows the last `:` after the last `/` (`host:5000/app` has a port, not a tag).
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    let (new_name, tag) = match reference[last_slash..].rfind(':') {
        Some(colon) => (
            &reference[..last_slash + colon],
            Some(&reference[last_slash + colon + 1..]),
        ),
        None => (reference, None),
    };
    if new_name.is_empty() || name.is_some_and(str::is_empty) {
        return Err(invalid("the image name is empty"));
    }
    if tag.is_some_and(str::is_empty) || digest.is_some_and(str::is_empty) {
        return Err(invalid("the tag or digest is empty"));
    }
    let mut entry = serde_json::Map::new();
    match name {
        Some(name) => {
            entry.insert("name".into(), json!(name));
            if new_name != name {
                entry.insert("newName".into(), json!(new_name));
            }
        }
        None => {
            entry.insert("name".into(), json!(new_name));
        }
    }
    if let Some(tag) = tag {
        entry.insert("newTag".into(), json!(tag));
    }
    if let Some(digest) = digest {
        entry.insert("digest".into(), json!(digest));
    }
    if entry.len() == 1 {
        return Err(invalid(
            "it changes nothing: give a tag, a digest or a new name",
        ));
    }
    Ok(Value::Object(entry))
}

/// Every symlink in the checkout must resolve inside it: kustomize follows them anywhere.
fn check_symlinks(jail: &Jail, dir: &Path) -> Result<(), RenderError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RenderError::Read {
        file: jail.relative(dir),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| RenderError::Read {
            file: jail.relative(dir),
            source,
        })?;
        let file_type = entry.file_type().map_err(|source| RenderError::Read {
            file: jail.relative(&entry.path()),
            source,
        })?;
        if file_type.is_symlink() {
            jail.check_symlink(&entry.path())?;
        } else if file_type.is_dir() {
            check_symlinks(jail, &entry.path())?;
        }
    }
    Ok(())
}

/// Walks the kustomizations reachable from `dir` through `resources`, `bases` and `components`.
fn check_graph(
    jail: &Jail,
    dir: &Path,
    allow_remote: bool,
    visited: &mut HashSet<PathBuf>,
) -> Result<(), RenderError> {
    let Ok(real) = dir.canonicalize() else {
        return Ok(());
    };
    if !visited.insert(real) {
        return Ok(());
    }
    let Some(file) = KUSTOMIZATION_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
    else {
        return Ok(());
    };
    let shown = jail.relative(&file);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok(());
    };
    // A kustomization kustomize cannot read is reported by kustomize itself.
    let Ok(document) = serde_saphyr::from_str_with_options::<Value>(
        &text,
        serde_saphyr::options! { with_snippet: false },
    ) else {
        return Ok(());
    };
    for field in ["resources", "bases", "components"] {
        let Some(Value::Array(entries)) = document.get(field) else {
            continue;
        };
        for reference in entries.iter().filter_map(Value::as_str) {
            let local = dir.join(reference);
            let exists = std::fs::symlink_metadata(&local).is_ok();
            if !exists && looks_remote(reference) {
                if allow_remote {
                    continue;
                }
                return Err(RenderError::RemoteBase {
                    file: shown,
                    reference: reference.to_string(),
                });
            }
            if Path::new(reference).is_absolute() {
                return Err(RenderError::Jail {
                    file: shown,
                    reason: format!("{field} entry {reference:?} is an absolute path"),
                });
            }
            if !exists {
                // kustomize reports the missing file with its own message.
                continue;
            }
            let real = local.canonicalize().map_err(|_| RenderError::Jail {
                file: shown.clone(),
                reason: format!("{field} entry {reference:?} does not resolve"),
            })?;
            if !real.starts_with(&jail.real_root) {
                return Err(RenderError::Jail {
                    file: shown,
                    reason: format!(
                        "{field} entry {reference:?} leads outside the repository checkout"
                    ),
                });
            }
            if real.is_dir() {
                check_graph(jail, &real, allow_remote, visited)?;
            }
        }
    }
    Ok(())
}

/// kustomize's remote forms: URLs, `git@host:`, `host.tld/org/repo//path?ref=`.
fn looks_remote(reference: &str) -> bool {
    if reference.contains("://") || reference.starts_with("git@") || reference.contains("?ref=") {
        return true;
    }
    let first = reference.split('/').next().unwrap_or_default();
    !first.starts_with('.') && first.contains('.') && reference.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argo_cd_image_overrides_become_kustomize_images() {
        assert_eq!(
            parse_image("nginx:1.25").unwrap(),
            json!({"name": "nginx", "newTag": "1.25"})
        );
        assert_eq!(
            parse_image("nginx=registry.test:5000/team/nginx:1.26").unwrap(),
            json!({"name": "nginx", "newName": "registry.test:5000/team/nginx", "newTag": "1.26"})
        );
        assert_eq!(
            parse_image("ghcr.io/org/api@sha256:abc").unwrap(),
            json!({"name": "ghcr.io/org/api", "digest": "sha256:abc"})
        );
        assert_eq!(
            parse_image("api=ghcr.io/org/api").unwrap(),
            json!({"name": "api", "newName": "ghcr.io/org/api"})
        );
        assert!(
            parse_image("registry.test:5000/app").is_err(),
            "a port is not a tag"
        );
        assert!(parse_image("nginx:").is_err());
        assert!(parse_image("").is_err());
    }

    #[test]
    fn remote_forms_are_recognised() {
        for remote in [
            "https://github.com/org/repo//base?ref=v1",
            "github.com/org/repo/base?ref=main",
            "git@github.com:org/repo.git",
            "example.com/org/repo//deploy",
        ] {
            assert!(looks_remote(remote), "{remote}");
        }
        for local in [
            "../base",
            "./base",
            "base",
            "deployment.yaml",
            "../../apps/x.yaml",
        ] {
            assert!(!looks_remote(local), "{local}");
        }
    }
}
