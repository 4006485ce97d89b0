//! Writing objects as upstream kubeseal does, and writing files atomically.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// An output format (`-o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Pretty JSON (two-space indent) and a trailing newline.
    Json,
    /// YAML with sorted keys, each document prefixed with `---`.
    Yaml,
}

impl Format {
    /// The format a file's extension forces (`.yaml`/`.yml` → YAML), as upstream's `-w`.
    pub fn forced_by_extension(path: &Path) -> Option<Format> {
        match path.extension().and_then(|extension| extension.to_str()) {
            Some("yaml" | "yml") => Some(Format::Yaml),
            _ => None,
        }
    }

    /// The format an existing document is written in: JSON if it starts with `{`, else YAML.
    pub fn of_document(text: &str) -> Format {
        if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// Appends `object` to `out` in `format`.
pub fn write_object<T: Serialize>(
    out: &mut Vec<u8>,
    format: Format,
    object: &T,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, object)
                .context("failed to write JSON output")?;
            out.push(b'\n');
        }
        Format::Yaml => {
            // Through a JSON value: its map is sorted, like the YAML upstream writes.
            let value = serde_json::to_value(object).context("failed to write YAML output")?;
            // Long base64 values stay plain one-line scalars, as upstream writes them (and as
            // line-based diffs of sealed files want them).
            let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
            let yaml = serde_saphyr::to_string_with_options(&value, options)
                .context("failed to write YAML output")?;
            out.extend_from_slice(b"---\n");
            out.extend_from_slice(yaml.as_bytes());
            if !yaml.ends_with('\n') {
                out.push(b'\n');
            }
        }
    }
    Ok(())
}

/// Replaces `path` with `contents` atomically: a temporary file in the same directory, renamed
/// over the target. New files get mode 0600 like upstream's; `keep_permissions_of` copies the
/// permissions of the file being replaced.
pub fn write_atomically(
    path: &Path,
    contents: &[u8],
    keep_permissions: bool,
) -> anyhow::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(directory).with_context(|| {
        format!(
            "failed to create a temporary file next to {}",
            path.display()
        )
    })?;
    file.write_all(contents)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("failed to write {}", path.display()))?;
    if keep_permissions && let Ok(metadata) = std::fs::metadata(path) {
        file.as_file()
            .set_permissions(metadata.permissions())
            .with_context(|| format!("failed to keep the permissions of {}", path.display()))?;
    }
    file.persist(path)
        .with_context(|| format!("failed to replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_pretty_with_a_trailing_newline_and_yaml_starts_with_a_separator() {
        let object =
            serde_json::json!({"kind": "Secret", "apiVersion": "v1", "data": {"b": "1", "a": "2"}});
        let mut out = Vec::new();
        write_object(&mut out, Format::Json, &object).unwrap();
        let json = String::from_utf8(out).unwrap();
        assert!(json.starts_with("{\n  \""), "{json}");
        assert!(json.ends_with("}\n"));
        let mut out = Vec::new();
        write_object(&mut out, Format::Yaml, &object).unwrap();
        let yaml = String::from_utf8(out).unwrap();
        assert!(yaml.starts_with("---\napiVersion: v1\n"), "{yaml}");
        assert!(
            yaml.find("a: ").unwrap() < yaml.find("b: ").unwrap(),
            "sorted keys"
        );
        assert!(!yaml.ends_with("---\n"));
        let long = serde_json::json!({"k": "A".repeat(300)});
        let mut out = Vec::new();
        write_object(&mut out, Format::Yaml, &long).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("---\nk: {}\n", "A".repeat(300))
        );
    }

    #[test]
    fn formats_come_from_extensions_and_documents() {
        assert_eq!(
            Format::forced_by_extension(Path::new("a.yml")),
            Some(Format::Yaml)
        );
        assert_eq!(Format::forced_by_extension(Path::new("a.json")), None);
        assert_eq!(Format::of_document("  {\"kind\": 1}"), Format::Json);
        assert_eq!(Format::of_document("---\nkind: x"), Format::Yaml);
    }

    #[test]
    fn atomic_writes_replace_the_file_and_can_keep_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_atomically(&path, b"one", false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&path, b"two", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
