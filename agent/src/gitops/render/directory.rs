//! Directories of YAML/JSON manifests and Jsonnet files, as Argo CD's directory sources.

use std::path::{Path, PathBuf};

use kube::api::DynamicObject;

use super::glob::Glob;
use super::{Jail, RenderError, RenderOptions, yaml};

/// File extensions read as manifests, as Argo CD (`.libsonnet` files are only imported).
const EXTENSIONS: [&str; 4] = ["yaml", "yml", "json", "jsonnet"];

/// One manifest file's contribution, in file order.
#[derive(Debug)]
pub(super) enum Part {
    /// The objects of a YAML/JSON file.
    Objects(Vec<DynamicObject>),
    /// A Jsonnet file to evaluate (relative to the checkout; symlinks checked).
    Jsonnet(PathBuf),
}

/// Reads the manifests under `relative` (a directory of the checkout), sorted by path; Jsonnet
/// files are left for the evaluator, in their place.
pub(super) fn render(
    jail: &Jail,
    relative: &Path,
    options: &RenderOptions,
) -> Result<Vec<Part>, RenderError> {
    let compile = |field, pattern: &Option<String>| {
        pattern
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| {
                Glob::new(p).map_err(|source| RenderError::InvalidGlob {
                    field,
                    pattern: p.to_string(),
                    source,
                })
            })
            .transpose()
    };
    let include = compile("include", &options.directory.include)?;
    let exclude = compile("exclude", &options.directory.exclude)?;
    let base = jail.root.join(relative);
    let limits = &options.limits;

    let mut files = Vec::new();
    collect(jail, &base, &base, options.directory.recurse, &mut files)?;
    files.sort();

    let mut parts = Vec::new();
    let mut total = 0u64;
    let mut alias_allowance = yaml::ALIAS_EXPANSION_BYTES;
    for (relative_to_source, path) in files {
        if exclude
            .as_ref()
            .is_some_and(|g| g.matches(&relative_to_source))
        {
            continue;
        }
        if include
            .as_ref()
            .is_some_and(|g| !g.matches(&relative_to_source))
        {
            continue;
        }
        let file = jail.relative(&path);
        let metadata = std::fs::symlink_metadata(&path).map_err(|source| RenderError::Read {
            file: file.clone(),
            source,
        })?;
        let real = if metadata.file_type().is_symlink() {
            jail.check_symlink(&path)?
        } else {
            path.clone()
        };
        if is_jsonnet(&path) {
            // Bounded by the evaluator (its reads and output), as Argo CD leaves Jsonnet files
            // out of the combined manifest size.
            let inside = path.strip_prefix(&jail.root).unwrap_or(&path).to_path_buf();
            parts.push(Part::Jsonnet(inside));
            continue;
        }
        let size = std::fs::metadata(&real)
            .map_err(|source| RenderError::Read {
                file: file.clone(),
                source,
            })?
            .len();
        if size > limits.max_file_bytes {
            return Err(RenderError::Jail {
                file,
                reason: format!(
                    "the file is {size} bytes, more than the limit of {}",
                    limits.max_file_bytes
                ),
            });
        }
        total += size;
        if total > limits.max_total_bytes {
            return Err(RenderError::TooLarge {
                path: super::display_path(relative),
                reason: format!(
                    "the manifests are more than {} bytes together",
                    limits.max_total_bytes
                ),
            });
        }
        let bytes = std::fs::read(&real).map_err(|source| RenderError::Read {
            file: file.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| RenderError::Yaml {
            file: file.clone(),
            line: None,
            column: None,
            message: "the file is not UTF-8 text".into(),
        })?;
        parts.push(Part::Objects(yaml::parse_objects(
            &file,
            &text,
            &mut alias_allowance,
        )?));
    }
    Ok(parts)
}

fn is_jsonnet(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonnet"))
}

/// The manifest files under `dir`: (path relative to the source path with `/`, full path).
/// Dot-files and dot-directories are skipped (`.gitlab-ci.yml` is not a manifest); symlinked
/// directories are not followed (as Argo CD's walk).
fn collect(
    jail: &Jail,
    base: &Path,
    dir: &Path,
    recurse: bool,
    files: &mut Vec<(String, PathBuf)>,
) -> Result<(), RenderError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RenderError::Read {
        file: jail.relative(dir),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| RenderError::Read {
            file: jail.relative(dir),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type().map_err(|source| RenderError::Read {
            file: jail.relative(&path),
            source,
        })?;
        if file_type.is_dir() {
            if recurse {
                collect(jail, base, &path, recurse, files)?;
            }
            continue;
        }
        let is_manifest = Path::new(&name)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if !is_manifest {
            continue;
        }
        // A symlink to a directory named like a manifest is not a file.
        if file_type.is_symlink() && path.is_dir() {
            continue;
        }
        let relative = path
            .strip_prefix(base)
            .map(|p| {
                p.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_else(|_| name.clone());
        files.push((relative, path));
    }
    Ok(())
}
