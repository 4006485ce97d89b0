//! AppProject rules, checked on every object before apply and prune: pure functions with
//! Argo CD's semantics, so a project written for Argo CD means the same here.
//!
//! - `sourceRepos`, `destinations[].server|name|namespace` and `sourceNamespaces` are globs
//!   (`*` within a path segment for repositories, `**` across); a pattern starting with `!`
//!   denies what it matches, and one matching deny refuses even when another entry allows.
//! - Cluster-scoped kinds need `clusterResourceWhitelist` (empty: none allowed); namespaced
//!   kinds are all allowed when `namespaceResourceWhitelist` is absent, none when it is an empty
//!   list; a blacklist entry wins over the whitelist.
//! - A namespaced object's destination is its own `metadata.namespace` when it sets one, else
//!   the Application's destination namespace: both must be permitted.
//! - Applications outside the agent's namespace are admitted only by a project that lists
//!   their namespace in `sourceNamespaces` (Argo CD's "apps in any namespace").

use mooring_crds::app_project::{AppProjectSpec, GroupKind, ProjectDestination};
use mooring_crds::application::Application;

use crate::gitops::apply::object::ObjectKey;

/// The project an Application uses when `spec.project` is empty.
pub const DEFAULT_PROJECT: &str = "default";
/// The only cluster mooring syncs into, by URL and by name (Argo CD's in-cluster names).
pub const IN_CLUSTER_SERVER: &str = "https://kubernetes.default.svc";
/// See [`IN_CLUSTER_SERVER`].
pub const IN_CLUSTER_NAME: &str = "in-cluster";

/// The project an Application names.
pub fn project_name(app: &Application) -> &str {
    match app.spec.project.as_deref() {
        Some(name) if !name.is_empty() => name,
        _ => DEFAULT_PROJECT,
    }
}

/// Argo CD's built-in `default` project (used when no AppProject named `default` exists):
/// any repository, any namespace, any kind. It admits no namespace but the agent's.
pub fn builtin_default() -> AppProjectSpec {
    let everything = GroupKind {
        group: "*".into(),
        kind: "*".into(),
    };
    AppProjectSpec {
        source_repos: vec!["*".into()],
        destinations: vec![ProjectDestination {
            server: Some("*".into()),
            name: None,
            namespace: Some("*".into()),
        }],
        cluster_resource_whitelist: vec![everything],
        ..Default::default()
    }
}

/// A resolved project: its name and rules.
#[derive(Clone, Debug)]
pub struct Project {
    /// The AppProject's name.
    pub name: String,
    /// Its rules.
    pub spec: AppProjectSpec,
}

impl Project {
    /// Whether an Application in `app_namespace` may use this project: always in the agent's
    /// namespace, elsewhere only when `sourceNamespaces` lists the namespace.
    pub fn admits_namespace(&self, app_namespace: &str, agent_namespace: &str) -> bool {
        app_namespace == agent_namespace
            || self
                .spec
                .source_namespaces
                .iter()
                .any(|pattern| glob_match(pattern, app_namespace, None))
    }

    /// Whether the project allows syncing from `repo_url` (Argo CD's `IsSourcePermitted`).
    pub fn permits_source(&self, repo_url: &str) -> bool {
        let url = normalize_repo_url(repo_url);
        let mut any = false;
        for pattern in &self.spec.source_repos {
            let (deny, bare) = split_deny(pattern);
            let normalized = normalize_repo_url(bare);
            let matched = glob_match(&normalized, &url, Some('/'));
            if deny {
                if matched {
                    return false;
                }
            } else if matched {
                any = true;
            }
        }
        any
    }

    /// Whether objects may go to `namespace` of this cluster (Argo CD's
    /// `isDestinationMatched`: one entry must match, and no deny entry may fail to match).
    pub fn permits_destination(&self, namespace: &str) -> bool {
        let mut any = false;
        for entry in &self.spec.destinations {
            let server = entry.server.as_deref().unwrap_or_default();
            let name = entry.name.as_deref().unwrap_or_default();
            let entry_namespace = entry.namespace.as_deref().unwrap_or_default();
            let server_matched = matches_with_negation(server, IN_CLUSTER_SERVER);
            let name_matched = matches_with_negation(name, IN_CLUSTER_NAME);
            let namespace_matched = matches_with_negation(entry_namespace, namespace);
            if (server_matched || name_matched) && namespace_matched {
                any = true;
            } else if (!name_matched && is_deny(name))
                || (!server_matched && is_deny(server))
                || (!namespace_matched && is_deny(entry_namespace))
            {
                return false;
            }
        }
        any
    }

    /// Whether the project allows `group`/`kind` (Argo CD's `IsGroupKindPermitted`).
    pub fn permits_kind(&self, group: &str, kind: &str, namespaced: bool) -> bool {
        let spec = &self.spec;
        if namespaced {
            let allowed = spec
                .namespace_resource_whitelist
                .as_ref()
                .is_none_or(|list| in_list(list, group, kind));
            allowed && !in_list(&spec.namespace_resource_blacklist, group, kind)
        } else {
            in_list(&spec.cluster_resource_whitelist, group, kind)
                && !in_list(&spec.cluster_resource_blacklist, group, kind)
        }
    }

    /// Why `key` is not permitted, naming the object and the rule, or `Ok` when it is.
    /// `namespaced` is its kind's scope; a namespaced key carries its destination namespace.
    pub fn check_object(&self, key: &ObjectKey, namespaced: bool) -> Result<(), String> {
        if !self.permits_kind(&key.group, &key.kind, namespaced) {
            let list = if namespaced {
                "namespaceResourceWhitelist/namespaceResourceBlacklist"
            } else {
                "clusterResourceWhitelist/clusterResourceBlacklist"
            };
            return Err(format!(
                "{key}: resource {}:{} is not permitted in project {} ({list})",
                key.group, key.kind, self.name
            ));
        }
        if namespaced {
            let namespace = key.namespace.as_deref().unwrap_or_default();
            if !self.permits_destination(namespace) {
                return Err(format!(
                    "{key}: namespace {namespace} is not permitted in project {} (destinations)",
                    self.name
                ));
            }
        }
        Ok(())
    }

    /// Why the Application as written may not use this project (its repository or its
    /// destination namespace), in Argo CD's words, or `Ok`.
    pub fn check_application(&self, app: &Application) -> Result<(), String> {
        let repo = &app.spec.source.repo_url;
        if !self.permits_source(repo) {
            return Err(format!(
                "application repo {repo} is not permitted in project '{}'",
                self.name
            ));
        }
        if let Some(namespace) = app.spec.destination.namespace.as_deref()
            && !self.permits_destination(namespace)
        {
            return Err(format!(
                "application destination server '{IN_CLUSTER_SERVER}' and namespace '{namespace}' \
                 do not match any of the allowed destinations in project '{}'",
                self.name
            ));
        }
        Ok(())
    }

    /// The ServiceAccount the Application's syncs run as, as (namespace, name), or `None` to
    /// run as the agent. A matching `destinationServiceAccounts` entry wins (the first whose
    /// server and namespace globs match); a project that lists entries and matches none refuses
    /// the Application (Argo CD with impersonation on). Else `spec.serviceAccountName`, in the
    /// destination namespace (Flux's model).
    pub fn service_account(&self, app: &Application) -> Result<Option<(String, String)>, String> {
        let destination = app
            .spec
            .destination
            .namespace
            .as_deref()
            .unwrap_or_default();
        let entries = &self.spec.destination_service_accounts;
        if !entries.is_empty() {
            let entry = entries
                .iter()
                .find(|e| {
                    glob_match(&e.server, IN_CLUSTER_SERVER, None)
                        && glob_match(&e.namespace, destination, None)
                })
                .ok_or_else(|| {
                    format!(
                        "no matching service account found for destination server \
                         {IN_CLUSTER_SERVER} and namespace {destination} in project '{}' \
                         (destinationServiceAccounts)",
                        self.name
                    )
                })?;
            let account = entry.default_service_account.trim();
            if account.is_empty() || account.contains(char::is_whitespace) {
                return Err(format!(
                    "default service account contains invalid chars '{}' in project '{}'",
                    entry.default_service_account, self.name
                ));
            }
            return match account.split_once(':') {
                Some((namespace, name)) => Ok(Some((namespace.into(), name.into()))),
                None => {
                    in_destination(destination, account, "destinationServiceAccounts").map(Some)
                }
            };
        }
        match app.spec.service_account_name.as_deref() {
            None | Some("") => Ok(None),
            Some(name) => in_destination(destination, name, "spec.serviceAccountName").map(Some),
        }
    }

    /// Fields mooring accepts but does not implement, by their path (for the Application's
    /// `UnsupportedFields` condition).
    pub fn unsupported_fields(&self) -> Vec<String> {
        let spec = &self.spec;
        let mut found = Vec::new();
        let mut name = |set: bool, field: &str| {
            if set {
                found.push(format!("AppProject {} spec.{field}", self.name));
            }
        };
        name(spec.roles.as_ref().is_some_and(|r| !r.is_empty()), "roles");
        name(
            spec.sync_windows.as_ref().is_some_and(|w| !w.is_empty()),
            "syncWindows",
        );
        name(
            spec.signature_keys.as_ref().is_some_and(|k| !k.is_empty()),
            "signatureKeys",
        );
        name(spec.source_integrity.is_some(), "sourceIntegrity");
        found
    }
}

/// A ServiceAccount `name` in the destination namespace, which must be set.
fn in_destination(destination: &str, name: &str, field: &str) -> Result<(String, String), String> {
    if destination.is_empty() {
        return Err(format!(
            "{field} names ServiceAccount {name} but spec.destination.namespace is not set"
        ));
    }
    if !is_dns_label_like(name) {
        return Err(format!(
            "{field}: {name} is not a valid ServiceAccount name"
        ));
    }
    Ok((destination.to_string(), name.to_string()))
}

fn is_dns_label_like(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// Whether `group`/`kind` is in `list` (globs, as Argo CD's `filepath.Match`).
fn in_list(list: &[GroupKind], group: &str, kind: &str) -> bool {
    list.iter()
        .any(|item| glob_match(&item.kind, kind, None) && glob_match(&item.group, group, None))
}

fn is_deny(pattern: &str) -> bool {
    pattern.starts_with('!')
}

fn split_deny(pattern: &str) -> (bool, &str) {
    match pattern.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    }
}

/// Argo CD's `globMatch` with negation: `!p` matches what `p` does not.
fn matches_with_negation(pattern: &str, value: &str) -> bool {
    match pattern.strip_prefix('!') {
        Some(rest) => !glob_match(rest, value, None),
        None => glob_match(pattern, value, None),
    }
}

/// Lower-case, without surrounding space, a trailing `/` or `.git`: `https://x/a.git` and
/// `https://X/a/` are one repository (a light form of Argo CD's `NormalizeGitURL`).
fn normalize_repo_url(url: &str) -> String {
    let mut url = url.trim().to_ascii_lowercase();
    while url.ends_with('/') {
        url.pop();
    }
    if let Some(stripped) = url.strip_suffix(".git") {
        url = stripped.to_string();
    }
    url
}

/// A glob: `*` any run of characters (not crossing `separator` when given), `**` any run
/// (crossing it), `?` one character; everything else literal. An empty pattern matches only
/// the empty value; `*` alone matches everything, separators included (as Argo CD's
/// `globMatch`). Linear in pattern × value (no backtracking blow-up on hostile patterns).
pub fn glob_match(pattern: &str, value: &str, separator: Option<char>) -> bool {
    if pattern == "*" {
        return true;
    }
    #[derive(Clone, Copy)]
    enum Token {
        Literal(char),
        One,
        Star,
        DoubleStar,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                tokens.push(Token::DoubleStar);
                i += 2;
                continue;
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::One),
            c => tokens.push(Token::Literal(c)),
        }
        i += 1;
    }
    let value: Vec<char> = value.chars().collect();
    // reachable[j]: the tokens so far can match value[..j].
    let mut reachable = vec![false; value.len() + 1];
    reachable[0] = true;
    for token in tokens {
        let mut next = vec![false; value.len() + 1];
        match token {
            Token::Literal(c) => {
                for j in 0..value.len() {
                    next[j + 1] = reachable[j] && value[j] == c;
                }
            }
            Token::One => {
                for j in 0..value.len() {
                    next[j + 1] = reachable[j] && Some(value[j]) != separator;
                }
            }
            Token::Star | Token::DoubleStar => {
                let crosses = matches!(token, Token::DoubleStar) || separator.is_none();
                next[0] = reachable[0];
                for j in 0..value.len() {
                    next[j + 1] =
                        reachable[j + 1] || (next[j] && (crosses || Some(value[j]) != separator));
                }
            }
        }
        reachable = next;
    }
    reachable[value.len()]
}

#[cfg(test)]
mod tests {
    use mooring_crds::app_project::DestinationServiceAccount;
    use mooring_crds::application::ApplicationSpec;

    use super::*;

    fn project(spec: AppProjectSpec) -> Project {
        Project {
            name: "team".into(),
            spec,
        }
    }

    fn to(server: Option<&str>, name: Option<&str>, namespace: &str) -> ProjectDestination {
        ProjectDestination {
            server: server.map(str::to_string),
            name: name.map(str::to_string),
            namespace: Some(namespace.to_string()),
        }
    }

    fn kinds(list: &[(&str, &str)]) -> Vec<GroupKind> {
        list.iter()
            .map(|(group, kind)| GroupKind {
                group: (*group).into(),
                kind: (*kind).into(),
            })
            .collect()
    }

    fn key(group: &str, kind: &str, namespace: Option<&str>) -> ObjectKey {
        ObjectKey {
            group: group.into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_string),
            name: "x".into(),
        }
    }

    fn app(spec: ApplicationSpec) -> Application {
        Application::new("web", spec)
    }

    #[test]
    fn globs_match_as_argo_cd_does() {
        assert!(glob_match("*", "anything/at/all", None));
        assert!(glob_match("team-*", "team-a", None));
        assert!(!glob_match("team-*", "other", None));
        assert!(glob_match("t?am", "team", None));
        assert!(glob_match("", "", None));
        assert!(!glob_match("", "x", None));
        let sep = Some('/');
        assert!(glob_match(
            "https://git.example.com/team/*",
            "https://git.example.com/team/app",
            sep
        ));
        assert!(!glob_match(
            "https://git.example.com/team/*",
            "https://git.example.com/team/a/b",
            sep
        ));
        assert!(glob_match(
            "https://git.example.com/team/**",
            "https://git.example.com/team/a/b",
            sep
        ));
        // Hostile patterns stay linear.
        assert!(!glob_match(&"*a".repeat(200), &"a".repeat(199), None));
    }

    #[test]
    fn source_repos_allow_by_glob_and_deny_with_a_bang() {
        let p = project(AppProjectSpec {
            source_repos: vec![
                "https://git.example.com/team/*".into(),
                "!https://git.example.com/team/secret".into(),
            ],
            ..Default::default()
        });
        assert!(p.permits_source("https://git.example.com/team/app.git"));
        assert!(p.permits_source("https://GIT.example.com/team/app/"));
        assert!(!p.permits_source("https://git.example.com/team/secret.git"));
        assert!(!p.permits_source("https://git.example.com/other/app"));
        assert!(!project(AppProjectSpec::default()).permits_source("https://x/y"));
        assert!(project(builtin_default()).permits_source("file:///tmp/anything"));
    }

    #[test]
    fn destinations_match_server_or_name_and_namespace_and_deny_wins() {
        let p = project(AppProjectSpec {
            destinations: vec![
                to(Some(IN_CLUSTER_SERVER), None, "team-*"),
                to(None, Some("in-cluster"), "shared"),
                to(Some("*"), None, "!team-admin"),
            ],
            ..Default::default()
        });
        assert!(p.permits_destination("team-a"));
        assert!(p.permits_destination("shared"));
        assert!(!p.permits_destination("team-admin"), "the deny entry wins");
        // As in Argo CD, a deny entry also allows everything it does not deny.
        assert!(p.permits_destination("kube-system"));
        let narrow = project(AppProjectSpec {
            destinations: vec![to(Some(IN_CLUSTER_SERVER), None, "team-*")],
            ..Default::default()
        });
        assert!(!narrow.permits_destination("kube-system"));
        let elsewhere = project(AppProjectSpec {
            destinations: vec![to(Some("https://prod:6443"), None, "*")],
            ..Default::default()
        });
        assert!(
            !elsewhere.permits_destination("team-a"),
            "another cluster's entry"
        );
        assert!(!project(AppProjectSpec::default()).permits_destination("team-a"));
    }

    #[test]
    fn cluster_kinds_need_the_whitelist_and_namespaced_blacklist_wins() {
        let p = project(AppProjectSpec::default());
        assert!(
            p.permits_kind("apps", "Deployment", true),
            "no namespace whitelist: all"
        );
        assert!(
            !p.permits_kind("external-secrets.io", "ClusterSecretStore", false),
            "empty cluster whitelist: none"
        );
        let p = project(AppProjectSpec {
            cluster_resource_whitelist: kinds(&[
                ("", "Namespace"),
                ("rbac.authorization.k8s.io", "*"),
            ]),
            cluster_resource_blacklist: kinds(&[(
                "rbac.authorization.k8s.io",
                "ClusterRoleBinding",
            )]),
            namespace_resource_whitelist: Some(kinds(&[("", "*"), ("apps", "Deployment")])),
            namespace_resource_blacklist: kinds(&[("", "Secret")]),
            ..Default::default()
        });
        assert!(p.permits_kind("", "Namespace", false));
        assert!(p.permits_kind("rbac.authorization.k8s.io", "ClusterRole", false));
        assert!(!p.permits_kind("rbac.authorization.k8s.io", "ClusterRoleBinding", false));
        assert!(p.permits_kind("", "ConfigMap", true));
        assert!(!p.permits_kind("", "Secret", true), "blacklist wins");
        assert!(!p.permits_kind("batch", "Job", true), "not whitelisted");
        let none = project(AppProjectSpec {
            namespace_resource_whitelist: Some(Vec::new()),
            ..Default::default()
        });
        assert!(
            !none.permits_kind("", "ConfigMap", true),
            "empty namespace whitelist: none"
        );
    }

    #[test]
    fn an_object_is_checked_by_kind_and_by_its_own_namespace() {
        let p = project(AppProjectSpec {
            destinations: vec![to(Some("*"), None, "team-a")],
            ..Default::default()
        });
        assert!(
            p.check_object(&key("apps", "Deployment", Some("team-a")), true)
                .is_ok()
        );
        let error = p
            .check_object(&key("apps", "Deployment", Some("team-b")), true)
            .unwrap_err();
        assert!(
            error.contains("Deployment.apps team-b/x")
                && error.contains("namespace team-b is not permitted in project team"),
            "{error}"
        );
        let error = p
            .check_object(
                &key("external-secrets.io", "ClusterSecretStore", None),
                false,
            )
            .unwrap_err();
        assert!(error.contains("resource external-secrets.io:ClusterSecretStore is not permitted in project team (clusterResourceWhitelist"), "{error}");
        let default = project(builtin_default());
        assert!(
            default
                .check_object(
                    &key("external-secrets.io", "ClusterSecretStore", None),
                    false
                )
                .is_ok()
        );
        assert!(
            default
                .check_object(&key("apps", "Deployment", Some("anywhere")), true)
                .is_ok()
        );
    }

    #[test]
    fn other_namespaces_need_source_namespaces() {
        let builtin = project(builtin_default());
        assert!(builtin.admits_namespace("mooring-system", "mooring-system"));
        assert!(!builtin.admits_namespace("team-a", "mooring-system"));
        let p = project(AppProjectSpec {
            source_namespaces: vec!["team-*".into()],
            ..Default::default()
        });
        assert!(p.admits_namespace("team-a", "mooring-system"));
        assert!(!p.admits_namespace("other", "mooring-system"));
    }

    #[test]
    fn the_application_is_checked_in_argo_cd_words() {
        let p = project(AppProjectSpec {
            source_repos: vec!["https://git.example.com/*".into()],
            destinations: vec![to(Some("*"), None, "team-a")],
            ..Default::default()
        });
        let mut spec = ApplicationSpec::default();
        spec.source.repo_url = "https://evil.example.com/x".into();
        spec.destination.namespace = Some("team-a".into());
        assert_eq!(
            p.check_application(&app(spec.clone())).unwrap_err(),
            "application repo https://evil.example.com/x is not permitted in project 'team'"
        );
        spec.source.repo_url = "https://git.example.com/x".into();
        assert!(p.check_application(&app(spec.clone())).is_ok());
        spec.destination.namespace = Some("kube-system".into());
        assert!(
            p.check_application(&app(spec))
                .unwrap_err()
                .contains("namespace 'kube-system' do not match")
        );
    }

    #[test]
    fn the_service_account_comes_from_the_project_first_then_the_application() {
        let mut spec = ApplicationSpec::default();
        spec.destination.namespace = Some("team-a".into());
        spec.service_account_name = Some("own".into());
        let plain = project(AppProjectSpec::default());
        assert_eq!(
            plain.service_account(&app(spec.clone())),
            Ok(Some(("team-a".into(), "own".into())))
        );
        let sa = |namespace: &str, account: &str| DestinationServiceAccount {
            server: "*".into(),
            namespace: namespace.into(),
            default_service_account: account.into(),
        };
        let p = project(AppProjectSpec {
            destination_service_accounts: vec![sa("team-*", "deployer"), sa("*", "ops:root")],
            ..Default::default()
        });
        assert_eq!(
            p.service_account(&app(spec.clone())),
            Ok(Some(("team-a".into(), "deployer".into())))
        );
        spec.destination.namespace = Some("other".into());
        assert_eq!(
            p.service_account(&app(spec.clone())),
            Ok(Some(("ops".into(), "root".into())))
        );
        let strict = project(AppProjectSpec {
            destination_service_accounts: vec![sa("team-*", "deployer")],
            ..Default::default()
        });
        assert!(
            strict
                .service_account(&app(spec.clone()))
                .unwrap_err()
                .contains("no matching service account")
        );
        let blank = project(AppProjectSpec {
            destination_service_accounts: vec![sa("*", " ")],
            ..Default::default()
        });
        assert!(blank.service_account(&app(spec.clone())).is_err());
        spec.service_account_name = None;
        assert_eq!(plain.service_account(&app(spec.clone())), Ok(None));
        spec.service_account_name = Some("own".into());
        spec.destination.namespace = None;
        assert!(
            plain
                .service_account(&app(spec))
                .unwrap_err()
                .contains("spec.destination.namespace is not set")
        );
    }

    #[test]
    fn unsupported_project_fields_are_named() {
        let p = project(AppProjectSpec {
            sync_windows: Some(vec![serde_json::json!({"kind": "deny"})]),
            ..Default::default()
        });
        assert_eq!(p.unsupported_fields(), ["AppProject team spec.syncWindows"]);
        assert!(project(builtin_default()).unsupported_fields().is_empty());
    }
}
