//! Rendering a source path of a checkout into Kubernetes objects.
//!
//! The tool is chosen as Argo CD chooses it: an explicit `source.helm`, `source.kustomize`,
//! `source.directory` or `source.plugin` wins (two of them is an error); otherwise a
//! `Chart.yaml` makes a Helm chart (not rendered yet: refused by name), a `kustomization.yaml`
//! (or `.yml`, or `Kustomization`) a **Kustomize** source, run as the pinned `kustomize` binary
//! with a timeout and a concurrency limit; anything else is a **directory**: YAML/JSON files
//! (multi-document, recursive when asked, include/exclude globs as Argo CD) and `*.jsonnet`
//! files, evaluated in-process ([`jsonnet`]). Config-management plugins are refused by name.
//!
//! The checkout is a jail: `path` may not be absolute or contain `..`; symlinks may not lead out
//! of the checkout; no file over [`RenderLimits::max_file_bytes`] is read. Errors name the file,
//! and the line for malformed YAML.

mod directory;
mod glob;
pub mod jsonnet;
mod kustomize;
pub mod sandbox;
mod yaml;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use kube::api::DynamicObject;

pub use glob::{Glob, GlobError};
pub use jsonnet::{BuildEnv, BuildIdentity, Jsonnet, JsonnetOptions, JsonnetVar};
pub use kustomize::Kustomize;
pub use sandbox::{Sandbox, SandboxMode};

/// Argo CD's `spec.source.directory`: which files of a plain directory are manifests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryOptions {
    /// Read subdirectories too.
    pub recurse: bool,
    /// Only files whose path (relative to the source path) matches this glob.
    pub include: Option<String>,
    /// Not the files whose relative path matches this glob (wins over `include`).
    pub exclude: Option<String>,
}

/// Argo CD's `spec.source.kustomize`: changes applied on top of the kustomization.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KustomizeOptions {
    /// Prepended to every object's name.
    pub name_prefix: Option<String>,
    /// Appended to every object's name.
    pub name_suffix: Option<String>,
    /// Image overrides in Argo CD's forms: `name:tag`, `name@digest`, `name=new-name:tag`.
    pub images: Vec<String>,
    /// Labels added to every object, its selectors and its templates (kustomize commonLabels).
    pub common_labels: BTreeMap<String, String>,
}

impl KustomizeOptions {
    fn is_empty(&self) -> bool {
        self.name_prefix.as_deref().is_none_or(str::is_empty)
            && self.name_suffix.as_deref().is_none_or(str::is_empty)
            && self.images.is_empty()
            && self.common_labels.is_empty()
    }
}

/// A tool named by the Application itself (`source.helm`, `source.kustomize`,
/// `source.directory`, `source.plugin`; `source.chart` means Helm too), as Argo CD's
/// `ExplicitType`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceType {
    /// `source.directory`: YAML/JSON and Jsonnet files, even next to a kustomization.
    Directory,
    /// `source.kustomize`.
    Kustomize,
    /// `source.helm` or `source.chart`.
    Helm,
    /// `source.plugin`, with the plugin's name when it has one.
    Plugin(Option<String>),
}

impl SourceType {
    fn name(&self) -> &'static str {
        match self {
            SourceType::Directory => "Directory",
            SourceType::Kustomize => "Kustomize",
            SourceType::Helm => "Helm",
            SourceType::Plugin(_) => "Plugin",
        }
    }
}

/// What one render may cost, and the kustomize runner the agent shares between renders.
#[derive(Clone, Debug)]
pub struct RenderLimits {
    /// The largest manifest file read (a plain directory's files; kustomize's whole output is
    /// bounded by `max_total_bytes`).
    pub max_file_bytes: u64,
    /// All manifests of one render together.
    pub max_total_bytes: u64,
    /// Objects in one render.
    pub max_objects: usize,
    /// The pinned `kustomize` binary, its timeout and the agent-wide concurrency limit. Clone
    /// one instance into every render so the limit is shared.
    pub kustomize: Kustomize,
    /// The Jsonnet evaluator's timeout, stack limit and concurrency limit, shared like
    /// `kustomize`.
    pub jsonnet: Jsonnet,
}

impl Default for RenderLimits {
    fn default() -> Self {
        RenderLimits {
            // etcd stores objects up to ~1.5 MiB; a file may hold many of them.
            max_file_bytes: 8 * 1024 * 1024,
            max_total_bytes: 64 * 1024 * 1024,
            max_objects: 10_000,
            kustomize: Kustomize::default(),
            jsonnet: Jsonnet::default(),
        }
    }
}

/// How to render one Application's source.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// Plain-directory settings (ignored for a kustomization).
    pub directory: DirectoryOptions,
    /// Kustomize settings (ignored for a plain directory).
    pub kustomize: KustomizeOptions,
    /// Jsonnet settings of a directory (`directory.jsonnet`).
    pub jsonnet: JsonnetOptions,
    /// The tools the Application names itself; empty: detected from the files.
    pub explicit: Vec<SourceType>,
    /// Argo CD's build environment, substituted into Jsonnet variables.
    pub env: BuildEnv,
    /// Bounds and the kustomize runner.
    pub limits: RenderLimits,
}

/// Why a source could not be rendered. Paths are relative to the checkout.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// `spec.source.path` is absolute or climbs out with `..`.
    #[error("invalid source path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// `spec.source.path` does not exist in the commit.
    #[error("source path {path:?} does not exist in the repository")]
    PathNotFound {
        /// The path as given.
        path: String,
    },
    /// A file was refused: a symlink out of the checkout, or over the size limit.
    #[error("refused {file}: {reason}")]
    Jail {
        /// The file, relative to the checkout.
        file: String,
        /// Why.
        reason: String,
    },
    /// A file could not be read.
    #[error("failed to read {file}")]
    Read {
        /// The file, relative to the checkout.
        file: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file (or kustomize's output) is not valid YAML/JSON.
    #[error("failed to parse {file}{}: {message}", location(*.line, *.column))]
    Yaml {
        /// The file, relative to the checkout.
        file: String,
        /// 1-based line in the file, when the parser knows it.
        line: Option<u64>,
        /// 1-based column, when the parser knows it.
        column: Option<u64>,
        /// The parser's message (never a snippet of the input).
        message: String,
    },
    /// A document is valid YAML but not a Kubernetes object.
    #[error("{file}:{line}: not a Kubernetes object: {reason}")]
    NotAnObject {
        /// The file, relative to the checkout.
        file: String,
        /// The line the document starts on.
        line: u64,
        /// What is missing or wrong.
        reason: String,
    },
    /// `directory.include` or `directory.exclude` is not a valid glob.
    #[error("invalid directory {field} pattern {pattern:?}")]
    InvalidGlob {
        /// `include` or `exclude`.
        field: &'static str,
        /// The pattern.
        pattern: String,
        /// What is wrong.
        #[source]
        source: GlobError,
    },
    /// An image override of `kustomize.images` cannot be parsed.
    #[error("invalid kustomize image override {image:?}: {reason}")]
    InvalidImage {
        /// The override.
        image: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A kustomization refers to a remote base, and remote bases are off.
    #[error(
        "{file}: remote base {reference:?} refused: the render must not fetch from the network (remote bases are off)"
    )]
    RemoteBase {
        /// The kustomization file, relative to the checkout.
        file: String,
        /// The entry.
        reference: String,
    },
    /// The kustomize binary could not be started.
    #[error("failed to run kustomize ({binary})")]
    KustomizeUnavailable {
        /// The configured binary.
        binary: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `kustomize build` failed.
    #[error("kustomize build of {path} failed: {message}")]
    Kustomize {
        /// The source path.
        path: String,
        /// kustomize's error output (trimmed).
        message: String,
    },
    /// `kustomize build` ran longer than allowed.
    #[error("kustomize build of {path} timed out after {after:?}")]
    KustomizeTimeout {
        /// The source path.
        path: String,
        /// The limit.
        after: Duration,
    },
    /// The render is over [`RenderLimits::max_total_bytes`] or [`RenderLimits::max_objects`].
    #[error("the render of {path} is too large: {reason}")]
    TooLarge {
        /// The source path.
        path: String,
        /// Which limit.
        reason: String,
    },
    /// The source is of a kind mooring does not render yet.
    #[error("source path {path} holds a {kind}, which mooring does not render yet")]
    UnsupportedSource {
        /// The source path.
        path: String,
        /// What was found.
        kind: &'static str,
    },
    /// The source uses a config-management plugin.
    #[error(
        "source path {path} uses the config-management plugin {}, and mooring runs no plugins (spec.source.plugin)",
        name.as_deref().unwrap_or("(unnamed)")
    )]
    UnsupportedPlugin {
        /// The source path.
        path: String,
        /// `source.plugin.name`.
        name: Option<String>,
    },
    /// More than one of `helm`, `kustomize`, `directory`, `plugin` is set.
    #[error("multiple application sources defined: {types} (set only one of them)")]
    MultipleSourceTypes {
        /// The types, comma-separated, as Argo CD names them.
        types: String,
    },
    /// A Jsonnet file failed to parse or evaluate, or its output is not objects.
    #[error("failed to evaluate Jsonnet {file}{}: {message}", location(*.line, *.column))]
    Jsonnet {
        /// The file where it failed, relative to the checkout.
        file: String,
        /// 1-based line, when known.
        line: Option<u64>,
        /// 1-based column, when known.
        column: Option<u64>,
        /// What went wrong (values of the program are not quoted).
        message: String,
    },
    /// A Jsonnet file ran longer than allowed.
    #[error("Jsonnet evaluation of {file} timed out after {after:?}")]
    JsonnetTimeout {
        /// The file, relative to the checkout.
        file: String,
        /// The limit.
        after: Duration,
    },
    /// A temporary file for kustomize could not be written.
    #[error("failed to prepare the kustomize build")]
    Workspace(#[source] std::io::Error),
}

fn location(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

impl RenderError {
    /// Whether trying again without a new commit may help (a busy machine, a missing binary being
    /// installed); content errors need a new commit.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RenderError::KustomizeTimeout { .. }
                | RenderError::JsonnetTimeout { .. }
                | RenderError::KustomizeUnavailable { .. }
                | RenderError::Workspace(_)
                | RenderError::Read { .. }
        )
    }

    /// A CamelCase word for condition reasons, events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            RenderError::InvalidPath { .. } => "InvalidSourcePath",
            RenderError::PathNotFound { .. } => "SourcePathNotFound",
            RenderError::Jail { .. } => "FileRefused",
            RenderError::Read { .. } => "ReadFailed",
            RenderError::Yaml { .. } => "MalformedManifest",
            RenderError::NotAnObject { .. } => "MalformedManifest",
            RenderError::InvalidGlob { .. } => "InvalidDirectoryPattern",
            RenderError::InvalidImage { .. } => "InvalidKustomizeImage",
            RenderError::RemoteBase { .. } => "RemoteBaseRefused",
            RenderError::KustomizeUnavailable { .. } => "KustomizeUnavailable",
            RenderError::Kustomize { .. } => "KustomizeFailed",
            RenderError::KustomizeTimeout { .. } => "KustomizeTimeout",
            RenderError::TooLarge { .. } => "RenderTooLarge",
            RenderError::UnsupportedSource { .. } => "UnsupportedSource",
            RenderError::UnsupportedPlugin { .. } => "UnsupportedSource",
            RenderError::MultipleSourceTypes { .. } => "MultipleSourceTypes",
            RenderError::Jsonnet { .. } => "JsonnetFailed",
            RenderError::JsonnetTimeout { .. } => "JsonnetTimeout",
            RenderError::Workspace(_) => "RenderFailed",
        }
    }
}

/// Renders `path` of the checkout at `checkout_root` into objects, in file order (plain
/// directories: files sorted by path, documents in file order; kustomize: its output order).
pub async fn render(
    checkout_root: &Path,
    path: &str,
    options: &RenderOptions,
) -> Result<Vec<DynamicObject>, RenderError> {
    let relative = confine(path)?;
    let jail = Jail::new(checkout_root)?;
    let source = checkout_root.join(&relative);
    let shown = display_path(&relative);
    // Any component of the path may be a symlink: resolve them all, then check.
    let real = source
        .canonicalize()
        .map_err(|_| RenderError::PathNotFound {
            path: path.to_string(),
        })?;
    if !real.starts_with(&jail.real_root) {
        return Err(RenderError::Jail {
            file: shown,
            reason: "the source path leads outside the repository checkout".into(),
        });
    }
    if !real.is_dir() {
        return Err(RenderError::PathNotFound {
            path: path.to_string(),
        });
    }
    let objects = match detect(&source, &options.explicit)? {
        SourceType::Helm => {
            // Helm is a later arm of this dispatch; until then a chart is named as such rather
            // than read as a directory of broken manifests.
            return Err(RenderError::UnsupportedSource {
                path: shown,
                kind: "Helm chart",
            });
        }
        SourceType::Plugin(name) => {
            return Err(RenderError::UnsupportedPlugin { path: shown, name });
        }
        SourceType::Kustomize => {
            let checkout = checkout_root.to_path_buf();
            let owned = options.clone();
            let relative = relative.clone();
            // The graph walk and symlink check touch the disk: off the async threads.
            let prepared = tokio::task::spawn_blocking(move || {
                kustomize::prepare(&checkout, &relative, &owned)
            })
            .await
            .map_err(|e| RenderError::Workspace(std::io::Error::other(e.to_string())))??;
            options
                .limits
                .kustomize
                .build(prepared, &shown, &options.limits)
                .await?
        }
        SourceType::Directory => render_directory(jail, relative, options).await?,
    };
    if objects.len() > options.limits.max_objects {
        return Err(RenderError::TooLarge {
            path: shown,
            reason: format!(
                "{} objects, more than the limit of {}",
                objects.len(),
                options.limits.max_objects
            ),
        });
    }
    Ok(objects)
}

/// The tool for `source` (the directory, inside the checkout), as Argo CD: what the Application
/// names, else a kustomization file, else a `Chart.yaml`, else a directory.
fn detect(source: &Path, explicit: &[SourceType]) -> Result<SourceType, RenderError> {
    match explicit {
        [] => {}
        [only] => return Ok(only.clone()),
        several => {
            return Err(RenderError::MultipleSourceTypes {
                types: several
                    .iter()
                    .map(SourceType::name)
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
    }
    if kustomize::is_kustomization(source) {
        Ok(SourceType::Kustomize)
    } else if source.join("Chart.yaml").is_file() {
        Ok(SourceType::Helm)
    } else {
        Ok(SourceType::Directory)
    }
}

/// A directory: its YAML/JSON files read (on a blocking thread), its Jsonnet files evaluated,
/// the objects in file order.
async fn render_directory(
    jail: Jail,
    relative: PathBuf,
    options: &RenderOptions,
) -> Result<Vec<DynamicObject>, RenderError> {
    let parts = {
        let options = options.clone();
        let jail = jail.clone();
        let relative = relative.clone();
        tokio::task::spawn_blocking(move || directory::render(&jail, &relative, &options))
            .await
            .map_err(|e| RenderError::Workspace(std::io::Error::other(e.to_string())))??
    };
    let has_jsonnet = parts
        .iter()
        .any(|part| matches!(part, directory::Part::Jsonnet(_)));
    let search = if has_jsonnet {
        jsonnet::search_path(&jail, &relative, &options.jsonnet.libs)?
    } else {
        Vec::new()
    };
    let substituted = |vars: &[JsonnetVar]| {
        vars.iter()
            .map(|var| JsonnetVar {
                value: options.env.substitute(&var.value),
                ..var.clone()
            })
            .collect::<Vec<_>>()
    };
    let mut objects = Vec::new();
    for part in parts {
        match part {
            directory::Part::Objects(found) => objects.extend(found),
            directory::Part::Jsonnet(file) => {
                let shown = jail.relative(&jail.root.join(&file));
                let evaluation = jsonnet::Evaluation {
                    root: jail.root.clone(),
                    file,
                    search: search.clone(),
                    ext_vars: substituted(&options.jsonnet.ext_vars),
                    tlas: substituted(&options.jsonnet.tlas),
                    max_stack: options.limits.jsonnet.max_stack(),
                    max_file_bytes: options.limits.max_file_bytes,
                    max_total_bytes: options.limits.max_total_bytes,
                };
                let output = options.limits.jsonnet.evaluate(evaluation).await?;
                objects.extend(jsonnet::objects(&shown, output)?);
                if objects.len() > options.limits.max_objects {
                    break;
                }
            }
        }
    }
    Ok(objects)
}

/// `path` as a relative path with no `..`: the source path may not leave the checkout.
fn confine(path: &str) -> Result<PathBuf, RenderError> {
    let invalid = |reason| RenderError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    let candidate = Path::new(path);
    if candidate.is_absolute() {
        return Err(invalid("it is absolute; give a path inside the repository"));
    }
    let mut relative = PathBuf::new();
    for component in candidate.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid("`..` is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid("it is absolute; give a path inside the repository"));
            }
        }
    }
    Ok(relative)
}

fn display_path(relative: &Path) -> String {
    if relative.as_os_str().is_empty() {
        ".".to_string()
    } else {
        relative.to_string_lossy().into_owned()
    }
}

/// The checkout's real location, to decide whether a path resolves inside it.
#[derive(Clone, Debug)]
struct Jail {
    root: PathBuf,
    real_root: PathBuf,
}

impl Jail {
    fn new(root: &Path) -> Result<Jail, RenderError> {
        let real_root = root.canonicalize().map_err(|source| RenderError::Read {
            file: ".".into(),
            source,
        })?;
        Ok(Jail {
            root: root.to_path_buf(),
            real_root,
        })
    }

    /// The path relative to the checkout, for messages.
    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .or_else(|_| path.strip_prefix(&self.real_root))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| path.to_string_lossy().into_owned())
    }

    /// Refuses a symlink (or a chain of them) that resolves outside the checkout.
    fn check_symlink(&self, path: &Path) -> Result<PathBuf, RenderError> {
        let file = self.relative(path);
        let target = path.canonicalize().map_err(|_| RenderError::Jail {
            file: file.clone(),
            reason: "the symlink is dangling or loops".into(),
        })?;
        if !target.starts_with(&self.real_root) {
            return Err(RenderError::Jail {
                file,
                reason: "the symlink leads outside the repository checkout".into(),
            });
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod jsonnet_tests;
