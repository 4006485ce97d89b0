//! Which Applications a push concerns: the same repository (URLs normalised), the ref their
//! `targetRevision` follows, and a changed file under their paths.

use std::collections::BTreeSet;

use mooring_crds::application::Application;

use super::providers::{GitRef, Push};

/// Argo CD's annotation listing the paths an Application's manifests come from (`;`-separated,
/// relative to `spec.source.path`, or absolute from the repository root).
pub const MANIFEST_GENERATE_PATHS: &str = "argocd.argoproj.io/manifest-generate-paths";

/// A repository URL reduced to what names the repository: host (lower case, no `ssh.`/`altssh.`
/// prefix, no user, no port) and path (lower case, no `.git`, no surrounding slashes), so
/// `git@github.com:Org/Repo.git`, `ssh://git@github.com:22/org/repo` and
/// `https://GitHub.com/org/repo/` are one repository. Ports are ignored as Argo CD does: https and
/// ssh of one host rarely share one, and a false match costs one refresh.
pub fn normalize_repo_url(url: &str) -> String {
    let url = url.trim();
    let (host_part, path) = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').unwrap_or((rest, "")),
        // scp-like `user@host:path` (a `:` before any `/`).
        None => match url.split_once(':') {
            Some((host, path)) if !host.contains('/') => (host, path),
            _ => url.split_once('/').unwrap_or((url, "")),
        },
    };
    let host = host_part.rsplit_once('@').map_or(host_part, |(_, h)| h);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.to_ascii_lowercase();
    let host = host
        .strip_prefix("altssh.")
        .or_else(|| host.strip_prefix("ssh."))
        .unwrap_or(&host)
        .to_owned();
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_matches('/').to_ascii_lowercase();
    let path = path.strip_suffix(".git").unwrap_or(&path).to_owned();
    // Azure DevOps: https `org/project/_git/repo`, ssh `v3/org/project/repo`.
    let path = if host == "dev.azure.com" {
        let path = path.strip_prefix("v3/").unwrap_or(&path);
        path.replace("/_git/", "/")
    } else {
        path
    };
    format!("{host}/{path}")
}

/// Whether `target_revision` follows the ref `push` moved. `HEAD` (or none) follows the default
/// branch; when the payload does not name it, any branch push counts (a refresh too many is
/// cheap, one too few is not). `refs/heads/x` and `refs/tags/x` name their kind; a bare name
/// matches a branch or a tag of that name. A commit SHA never moves.
pub fn follows_ref(target_revision: Option<&str>, push: &Push) -> bool {
    let target = target_revision.map(str::trim).unwrap_or_default();
    match (&push.git_ref, target) {
        (GitRef::Branch(branch), "" | "HEAD") => push
            .default_branch
            .as_deref()
            .is_none_or(|default| default == branch),
        (GitRef::Tag(_), "" | "HEAD") => false,
        (pushed, target) => match GitRef::parse(target) {
            Some(wanted) => &wanted == pushed,
            None => match pushed {
                GitRef::Branch(name) | GitRef::Tag(name) => name == target,
            },
        },
    }
}

/// The paths (relative to the repository root, `""` = all of it) whose changes concern `app`:
/// its `manifest-generate-paths` annotation, or else its `spec.source.path`.
pub fn watched_paths(app: &Application) -> Vec<String> {
    let source_path = app.spec.source.path.as_deref().unwrap_or(".");
    let annotation = app
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MANIFEST_GENERATE_PATHS));
    match annotation {
        Some(list) => list
            .split(';')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| match entry.strip_prefix('/') {
                Some(absolute) => clean_path(absolute),
                None => clean_path(&format!("{source_path}/{entry}")),
            })
            .collect(),
        None => vec![clean_path(source_path)],
    }
}

/// `a/./b/../c/` → `a/c`; `..` above the root stays at the root (argo-cd#25366 left absolute
/// entries uncleaned).
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// Whether one of `files` lies at or under one of `paths`, or matches one as a glob (`*` within
/// a segment, `**` across segments, `?` one character).
pub fn touches(paths: &[String], files: &BTreeSet<String>) -> bool {
    paths.iter().any(|path| {
        if path.is_empty() {
            return true;
        }
        let glob = path
            .contains(['*', '?', '['])
            .then(|| glob_regex(path))
            .flatten();
        files.iter().any(|file| {
            let file = file.trim_start_matches('/');
            file == path
                || file
                    .strip_prefix(path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
                || glob.as_ref().is_some_and(|g| g.is_match(file))
        })
    })
}

/// A glob as an anchored regex (linear time, whatever the pattern).
fn glob_regex(glob: &str) -> Option<regex::Regex> {
    let mut pattern = String::from("^");
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                pattern.push_str(".*");
            }
            '*' => pattern.push_str("[^/]*"),
            '?' => pattern.push_str("[^/]"),
            c => pattern.push_str(&regex::escape(&c.to_string())),
        }
    }
    // A directory glob covers what is under it.
    pattern.push_str("(/.*)?$");
    regex::Regex::new(&pattern).ok()
}

/// Whether `push` concerns `app`: same repository, followed ref, a watched path touched (or no
/// file list), and not a commit the Application already synced.
pub fn concerns(app: &Application, push: &Push, push_repos: &BTreeSet<String>) -> bool {
    let source = &app.spec.source;
    if !push_repos.contains(&normalize_repo_url(&source.repo_url)) {
        return false;
    }
    if !follows_ref(source.target_revision.as_deref(), push) {
        return false;
    }
    let synced = app
        .status
        .as_ref()
        .and_then(|s| s.sync.as_ref())
        .and_then(|s| s.revision.as_deref());
    if push.after.is_some() && synced == push.after.as_deref() {
        return false;
    }
    match &push.changed_files {
        None => true,
        Some(files) => touches(&watched_paths(app), files),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_are_normalised() {
        let one = normalize_repo_url("https://github.com/org/repo");
        for url in [
            "git@github.com:org/repo.git",
            "ssh://git@github.com:22/org/repo.git",
            "https://GitHub.com/Org/Repo/",
            "https://user:token@github.com:443/org/repo.git",
            "ssh://git@ssh.github.com:443/org/repo",
        ] {
            assert_eq!(normalize_repo_url(url), one, "{url}");
        }
        assert_ne!(normalize_repo_url("https://github.com/org/other"), one);
        assert_eq!(
            normalize_repo_url("git@ssh.dev.azure.com:v3/o/p/r"),
            normalize_repo_url("https://o@dev.azure.com/o/p/_git/r")
        );
    }

    fn push(git_ref: GitRef, default_branch: Option<&str>) -> Push {
        Push {
            repo_urls: vec![],
            git_ref,
            after: None,
            default_branch: default_branch.map(str::to_owned),
            changed_files: None,
        }
    }

    #[test]
    fn refs_are_matched_to_target_revisions() {
        let main = push(GitRef::Branch("main".into()), Some("main"));
        let dev = push(GitRef::Branch("dev".into()), Some("main"));
        let tag = push(GitRef::Tag("v1.2".into()), Some("main"));
        assert!(follows_ref(None, &main));
        assert!(follows_ref(Some("HEAD"), &main));
        assert!(!follows_ref(Some("HEAD"), &dev));
        assert!(follows_ref(
            Some("HEAD"),
            &push(GitRef::Branch("x".into()), None)
        ));
        assert!(follows_ref(Some("dev"), &dev));
        assert!(follows_ref(Some("refs/heads/dev"), &dev));
        assert!(!follows_ref(Some("refs/tags/dev"), &dev));
        assert!(follows_ref(Some("v1.2"), &tag));
        assert!(follows_ref(Some("refs/tags/v1.2"), &tag));
        assert!(!follows_ref(Some("HEAD"), &tag));
        assert!(!follows_ref(
            Some("0123456789abcdef0123456789abcdef01234567"),
            &main
        ));
    }

    fn app(path: &str, annotation: Option<&str>) -> Application {
        let mut app: Application = serde_json::from_value(serde_json::json!({
            "apiVersion": "mooring.dev/v1alpha1", "kind": "Application",
            "metadata": {"name": "a", "namespace": "n"},
            "spec": {"project": "default",
                     "source": {"repoURL": "https://h/o/r", "targetRevision": "main", "path": path},
                     "destination": {"server": "https://kubernetes.default.svc", "namespace": "n"}}
        }))
        .unwrap();
        if let Some(value) = annotation {
            app.metadata.annotations = Some(
                [(MANIFEST_GENERATE_PATHS.to_owned(), value.to_owned())]
                    .into_iter()
                    .collect(),
            );
        }
        app
    }

    fn files(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn paths_decide_which_apps_a_push_touches() {
        let a = app("apps/a", None);
        assert!(touches(&watched_paths(&a), &files(&["apps/a/x.yaml"])));
        assert!(!touches(&watched_paths(&a), &files(&["apps/b/x.yaml"])));
        assert!(!touches(&watched_paths(&a), &files(&["apps/ab/x.yaml"])));
        let with = app("apps/a", Some(".; ../shared ;/charts/*.tgz"));
        assert_eq!(
            watched_paths(&with),
            vec!["apps/a", "apps/shared", "charts/*.tgz"]
        );
        assert!(touches(
            &watched_paths(&with),
            &files(&["apps/shared/c.yaml"])
        ));
        assert!(touches(&watched_paths(&with), &files(&["charts/x.tgz"])));
        assert!(!touches(&watched_paths(&with), &files(&["charts/x.yaml"])));
        let root = app(".", None);
        assert!(touches(&watched_paths(&root), &files(&["anything"])));
    }

    #[test]
    fn a_push_concerns_the_matching_app_only() {
        let repos: BTreeSet<String> = [normalize_repo_url("git@h:o/r.git")].into();
        let a = app("apps/a", None);
        let mut p = push(GitRef::Branch("main".into()), Some("main"));
        assert!(concerns(&a, &p, &repos), "no file list refreshes");
        p.changed_files = Some(files(&["apps/b/x.yaml"]));
        assert!(!concerns(&a, &p, &repos));
        p.changed_files = Some(files(&["apps/a/x.yaml"]));
        assert!(concerns(&a, &p, &repos));
        let other: BTreeSet<String> = [normalize_repo_url("git@h:o/other.git")].into();
        assert!(!concerns(&a, &p, &other));
    }
}
