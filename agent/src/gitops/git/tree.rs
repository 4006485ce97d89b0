//! Writes a commit's tree to disk, straight from the object database (no index, no worktree).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use gix::objs::tree::EntryKind;

use super::{GitError, GitLimits, StorageStep};

/// Writes tree `tree_id` into `root` (created next to it as `<root>.partial`, then renamed, so a
/// `root` that exists is always complete). Files are read-only, directories too once filled.
pub(super) fn check_out(
    repo: &gix::Repository,
    tree_id: gix::ObjectId,
    root: &Path,
    limits: &GitLimits,
    shown_url: &str,
) -> Result<(), GitError> {
    let partial = root.with_extension("partial");
    if partial.exists() {
        remove(&partial).map_err(|e| storage(StorageStep::Remove, &partial, e))?;
    }
    let mut budget = Budget {
        bytes: 0,
        entries: 0,
        limits,
        shown_url,
    };
    let result = write_tree(repo, tree_id, &partial, "", &mut budget);
    if let Err(error) = result {
        let _ = remove(&partial);
        return Err(error);
    }
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent).map_err(|e| storage(StorageStep::Create, parent, e))?;
    }
    std::fs::rename(&partial, root).map_err(|e| storage(StorageStep::RenameIntoPlace, root, e))
}

struct Budget<'a> {
    bytes: u64,
    entries: usize,
    limits: &'a GitLimits,
    shown_url: &'a str,
}

impl Budget<'_> {
    fn jail(&self, file: &str, reason: impl Into<String>) -> GitError {
        GitError::Jail {
            url: self.shown_url.to_string(),
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    fn count(&mut self, file: &str, bytes: u64) -> Result<(), GitError> {
        self.entries += 1;
        self.bytes += bytes;
        if self.entries > self.limits.max_checkout_entries {
            return Err(self.jail(
                file,
                format!(
                    "the checkout has more than {} files and directories",
                    self.limits.max_checkout_entries
                ),
            ));
        }
        if self.bytes > self.limits.max_checkout_bytes {
            return Err(self.jail(
                file,
                format!(
                    "the checkout is larger than {} bytes",
                    self.limits.max_checkout_bytes
                ),
            ));
        }
        Ok(())
    }
}

fn write_tree(
    repo: &gix::Repository,
    tree_id: gix::ObjectId,
    dir: &Path,
    prefix: &str,
    budget: &mut Budget<'_>,
) -> Result<(), GitError> {
    std::fs::create_dir_all(dir).map_err(|e| storage(StorageStep::Create, dir, e))?;
    let tree = repo
        .find_tree(tree_id)
        .map_err(|e| budget.jail(prefix, format!("unreadable tree: {e}")))?;
    let decoded = tree
        .decode()
        .map_err(|e| budget.jail(prefix, format!("unreadable tree: {e}")))?;
    // Owned copies: the decoded tree borrows the object buffer, which recursion reuses.
    let entries: Vec<(EntryKind, String, gix::ObjectId)> = decoded
        .entries
        .iter()
        .map(|entry| {
            (
                entry.mode.kind(),
                entry.filename.to_string(),
                entry.oid.to_owned(),
            )
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for (kind, name, id) in entries {
        let file = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        // A tree entry is one path component; anything else would write outside its directory.
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
            return Err(budget.jail(&file, "the tree entry name is not a plain file name"));
        }
        // Git never writes two entries of one name, but a crafted tree can: a symlink `a` then a
        // directory `a` would write through the link, outside the checkout.
        if !seen.insert(name.clone()) {
            return Err(budget.jail(&file, "the tree has two entries of this name"));
        }
        let path = dir.join(&name);
        match kind {
            EntryKind::Tree => {
                budget.count(&file, 0)?;
                // Never an existing path (`create_dir`, not `create_dir_all`): nothing is
                // written through a link.
                std::fs::create_dir(&path).map_err(|e| storage(StorageStep::Create, &path, e))?;
                write_tree(repo, id, &path, &file, budget)?;
            }
            EntryKind::Blob | EntryKind::BlobExecutable => {
                let blob = read_blob(repo, id, &file, budget, "file")?;
                write_new_file(&path, &blob.data)
                    .map_err(|e| storage(StorageStep::Write, &path, e))?;
                let mode = if kind == EntryKind::BlobExecutable {
                    0o555
                } else {
                    0o444
                };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| storage(StorageStep::MakeReadOnly, &path, e))?;
            }
            EntryKind::Link => {
                let blob = read_blob(repo, id, &file, budget, "symlink")?;
                let target = String::from_utf8(blob.data.clone())
                    .map_err(|_| budget.jail(&file, "the symlink target is not UTF-8"))?;
                if target.contains('\0') {
                    return Err(budget.jail(&file, "the symlink target is not a path"));
                }
                // Written as is: whether it leaves the checkout is decided where it is read
                // (`render`), so a stray link elsewhere in a monorepo does not block every app.
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| storage(StorageStep::CreateSymlink, &path, e))?;
            }
            // Submodules are not fetched; git leaves an empty directory, and so do we.
            EntryKind::Commit => {
                budget.count(&file, 0)?;
                std::fs::create_dir(&path).map_err(|e| storage(StorageStep::Create, &path, e))?;
                seal_dir(&path)?;
            }
        }
    }
    seal_dir(dir)
}

/// Reads a blob once its size, from the object header, fits the budget: a huge blob is refused
/// before it is loaded.
fn read_blob<'repo>(
    repo: &'repo gix::Repository,
    id: gix::ObjectId,
    file: &str,
    budget: &mut Budget<'_>,
    what: &str,
) -> Result<gix::Blob<'repo>, GitError> {
    let header = repo
        .find_header(id)
        .map_err(|e| budget.jail(file, format!("unreadable {what}: {e}")))?;
    budget.count(file, header.size())?;
    repo.find_blob(id)
        .map_err(|e| budget.jail(file, format!("unreadable {what}: {e}")))
}

/// Writes a file that must not exist yet (`O_EXCL`: an existing file or link is an error, never
/// followed).
fn write_new_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?
        .write_all(data)
}

fn seal_dir(dir: &Path) -> Result<(), GitError> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555))
        .map_err(|e| storage(StorageStep::MakeReadOnly, dir, e))
}

fn storage(step: StorageStep, path: &Path, source: std::io::Error) -> GitError {
    GitError::Storage {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// Deletes a checkout: its directories are read-only, so they are made writable first.
pub(super) fn remove(root: &Path) -> std::io::Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let metadata = std::fs::symlink_metadata(&dir)?;
        if !metadata.is_dir() {
            continue;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    std::fs::remove_dir_all(root)
}
