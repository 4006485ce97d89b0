//! Repository credentials from labelled Secrets, as Argo CD's repository and repo-creds Secrets.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::ListParams;
use zeroize::Zeroizing;

use super::{GitError, RepoCredentials};

/// The label keys that mark a credentials Secret: mooring's own and Argo CD's.
const TYPE_LABELS: [&str; 2] = ["mooring.dev/secret-type", "argocd.argoproj.io/secret-type"];

/// The credentials for `url` from the Secrets of `namespace` labelled
/// `mooring.dev/secret-type` or `argocd.argoproj.io/secret-type` with value `repository` (one
/// repository) or `repo-creds` (a URL prefix, a credential template).
///
/// Keys as Argo CD's: `url`, `username`, `password`, `sshPrivateKey`; plus `known_hosts` (or
/// `knownHosts`) for ssh, since mooring checks host keys per repository; without them, the
/// `ssh_known_hosts` of ConfigMap `mooring-ssh-known-hosts` or Argo CD's
/// `argocd-ssh-known-hosts-cm` in the same namespace. A `repository` Secret
/// whose URL equals `url` (ignoring case, a trailing `/` and `.git`) wins; otherwise the longest
/// matching prefix. Unlike Argo CD a prefix must end at a path boundary, so credentials for
/// `https://git.example.com` are never sent to `https://git.example.com.evil.test`.
pub async fn credentials_for(
    client: &kube::Client,
    namespace: &str,
    url: &str,
) -> Result<Option<RepoCredentials>, GitError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut candidates = Vec::new();
    for label in TYPE_LABELS {
        let params = ListParams::default().labels(&format!("{label} in (repository,repo-creds)"));
        let list = secrets
            .list(&params)
            .await
            .map_err(|source| GitError::ListSecrets {
                namespace: namespace.to_string(),
                source,
            })?;
        for secret in list.items {
            let kind = secret
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(label))
                .cloned()
                .unwrap_or_default();
            candidates.push((kind, secret));
        }
    }
    let chosen = choose(
        candidates
            .iter()
            .map(|(kind, secret)| (kind.as_str(), secret)),
        url,
    )?
    .map(|secret| from_secret(secret, namespace))
    .transpose()?;
    if !is_ssh(url) || chosen.as_ref().is_some_and(|c| c.known_hosts.is_some()) {
        return Ok(chosen);
    }
    // ssh without known_hosts in its Secret: the namespace-wide list, as Argo CD's ConfigMap.
    let Some(known_hosts) = shared_known_hosts(client, namespace).await? else {
        return Ok(chosen);
    };
    let mut credentials = chosen.unwrap_or_default();
    credentials.known_hosts = Some(known_hosts);
    Ok(Some(credentials))
}

/// ConfigMaps with known_hosts for every ssh repository of a namespace: mooring's own, then
/// Argo CD's (same key, `ssh_known_hosts`), so an Argo CD installation's list keeps working.
const KNOWN_HOSTS_CONFIG_MAPS: [&str; 2] = ["mooring-ssh-known-hosts", "argocd-ssh-known-hosts-cm"];

async fn shared_known_hosts(
    client: &kube::Client,
    namespace: &str,
) -> Result<Option<String>, GitError> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in KNOWN_HOSTS_CONFIG_MAPS {
        let found = config_maps
            .get_opt(name)
            .await
            .map_err(|source| GitError::ReadKnownHosts {
                config_map: format!("{namespace}/{name}"),
                source,
            })?;
        if let Some(text) = found
            .and_then(|config_map| config_map.data)
            .and_then(|mut data| data.remove("ssh_known_hosts"))
        {
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// `ssh://…`, or the scp-like `user@host:path`.
fn is_ssh(url: &str) -> bool {
    let url = url.trim();
    url.starts_with("ssh://")
        || url.starts_with("git+ssh://")
        || (!url.contains("://") && url.contains('@') && url.contains(':'))
}

/// The Secret for `url`: an exact `repository` match first, then the longest prefix.
fn choose<'a>(
    candidates: impl Iterator<Item = (&'a str, &'a Secret)>,
    url: &str,
) -> Result<Option<&'a Secret>, GitError> {
    let wanted = normalize(url);
    let mut exact = None;
    let mut best: Option<(usize, &Secret)> = None;
    for (kind, secret) in candidates {
        let Some(secret_url) = text(secret, "url") else {
            continue;
        };
        // Argo CD's `type: helm` Secrets are for chart repositories.
        if text(secret, "type").is_some_and(|t| t != "git") {
            continue;
        }
        let prefix = normalize(&secret_url);
        if kind == "repository" && prefix == wanted {
            exact = Some(secret);
            break;
        }
        if kind == "repo-creds" && is_prefix_at_boundary(&prefix, &wanted) {
            let longer = best.is_none_or(|(length, _)| prefix.len() > length);
            if longer {
                best = Some((prefix.len(), secret));
            }
        }
    }
    Ok(exact.or(best.map(|(_, secret)| secret)))
}

fn is_prefix_at_boundary(prefix: &str, url: &str) -> bool {
    url.strip_prefix(prefix).is_some_and(|rest| {
        rest.is_empty() || rest.starts_with(['/', ':']) || prefix.ends_with(['/', ':'])
    })
}

/// Lower case, without a trailing `/` or `.git`, scp-like `git@host:path` as
/// `ssh://git@host/path`: how Argo CD compares repository URLs.
fn normalize(url: &str) -> String {
    let url = url.trim().to_ascii_lowercase();
    let url = match url.split_once(':') {
        // scp-like: `user@host:path` (no scheme, no port syntax).
        Some((authority, path))
            if !url.contains("://") && authority.contains('@') && !path.starts_with('/') =>
        {
            format!("ssh://{authority}/{path}")
        }
        _ => url,
    };
    let url = url.trim_end_matches('/');
    url.strip_suffix(".git").unwrap_or(url).to_string()
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|value| String::from_utf8_lossy(&value.0).into_owned())
}

fn secret_text(
    secret: &Secret,
    key: &str,
    name: &str,
) -> Result<Option<Zeroizing<String>>, GitError> {
    let Some(value) = secret.data.as_ref().and_then(|data| data.get(key)) else {
        return Ok(None);
    };
    let bytes = Zeroizing::new(value.0.clone());
    let text = std::str::from_utf8(&bytes).map_err(|_| GitError::InvalidCredentials {
        secret: name.to_string(),
        reason: format!("key {key} is not UTF-8 text"),
    })?;
    Ok(Some(Zeroizing::new(text.to_string())))
}

/// Argo CD credential keys mooring cannot honour yet: refusing them says why a fetch would
/// fail, instead of an anonymous attempt ending in "authentication failed".
const UNSUPPORTED_KEYS: [&str; 8] = [
    "githubAppID",
    "githubAppInstallationID",
    "githubAppPrivateKey",
    "tlsClientCertData",
    "tlsClientCertKey",
    "gcpServiceAccountKey",
    "bearerToken",
    "proxy",
];

fn from_secret(secret: &Secret, namespace: &str) -> Result<RepoCredentials, GitError> {
    let name = format!(
        "{namespace}/{}",
        secret.metadata.name.as_deref().unwrap_or_default()
    );
    let unsupported: Vec<&str> = UNSUPPORTED_KEYS
        .into_iter()
        .filter(|key| {
            secret
                .data
                .as_ref()
                .is_some_and(|data| data.contains_key(*key))
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(GitError::InvalidCredentials {
            secret: name,
            reason: format!(
                "mooring does not support the key(s) {} yet; use username/password (https) or sshPrivateKey",
                unsupported.join(", ")
            ),
        });
    }
    let credentials = RepoCredentials {
        username: secret_text(secret, "username", &name)?,
        password: secret_text(secret, "password", &name)?,
        ssh_private_key: secret_text(secret, "sshPrivateKey", &name)?,
        known_hosts: text(secret, "known_hosts").or_else(|| text(secret, "knownHosts")),
    };
    if credentials.username.is_some() && credentials.password.is_none() {
        return Err(GitError::InvalidCredentials {
            secret: name,
            reason: "key username is set but key password is missing".into(),
        });
    }
    Ok(credentials)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    use super::*;

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    fn pick<'a>(candidates: &'a [(&'a str, Secret)], url: &str) -> Option<String> {
        choose(candidates.iter().map(|(k, s)| (*k, s)), url)
            .unwrap()
            .and_then(|s| s.metadata.name.clone())
    }

    #[test]
    fn exact_repository_wins_over_prefixes_and_longest_prefix_wins_among_them() {
        let candidates = [
            (
                "repo-creds",
                secret("org", &[("url", "https://git.example.com/org")]),
            ),
            (
                "repo-creds",
                secret("team", &[("url", "https://git.example.com/org/team/")]),
            ),
            (
                "repository",
                secret("exact", &[("url", "https://GIT.example.com/org/team/app")]),
            ),
        ];
        assert_eq!(
            pick(&candidates, "https://git.example.com/org/team/app.git").as_deref(),
            Some("exact")
        );
        assert_eq!(
            pick(&candidates, "https://git.example.com/org/team/other").as_deref(),
            Some("team")
        );
        assert_eq!(
            pick(&candidates, "https://git.example.com/org/x").as_deref(),
            Some("org")
        );
        assert_eq!(pick(&candidates, "https://elsewhere.test/org/x"), None);
    }

    #[test]
    fn scp_like_and_ssh_urls_are_the_same_repository() {
        let candidates = [(
            "repository",
            secret("ssh", &[("url", "git@git.example.com:org/app.git")]),
        )];
        assert_eq!(
            pick(&candidates, "ssh://git@git.example.com/org/app").as_deref(),
            Some("ssh")
        );
        assert_eq!(
            pick(&candidates, "git@git.example.com:org/app.git").as_deref(),
            Some("ssh")
        );
    }

    #[test]
    fn a_prefix_must_end_at_a_path_boundary() {
        let candidates = [(
            "repo-creds",
            secret("host", &[("url", "https://git.example.com")]),
        )];
        assert_eq!(
            pick(&candidates, "https://git.example.com/a/b").as_deref(),
            Some("host")
        );
        assert_eq!(
            pick(&candidates, "https://git.example.com.evil.test/a"),
            None
        );
    }

    #[test]
    fn a_repository_secret_is_not_a_prefix_and_helm_secrets_are_skipped() {
        let candidates = [
            (
                "repository",
                secret("repo", &[("url", "https://git.example.com/org")]),
            ),
            (
                "repo-creds",
                secret(
                    "helm",
                    &[("url", "https://git.example.com/org"), ("type", "helm")],
                ),
            ),
        ];
        assert_eq!(pick(&candidates, "https://git.example.com/org/app"), None);
    }

    #[test]
    fn reads_argo_keys_and_known_hosts_and_never_prints_them() {
        let source = secret(
            "repo",
            &[
                ("url", "ssh://git@example.com/app.git"),
                ("username", "bot"),
                ("password", "hunter2-token"),
                (
                    "sshPrivateKey",
                    "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-key\n",
                ),
                ("known_hosts", "example.com ssh-ed25519 AAAA\n"),
            ],
        );
        let credentials = from_secret(&source, "ns").unwrap();
        assert_eq!(
            credentials.password.as_deref().map(String::as_str),
            Some("hunter2-token")
        );
        assert!(credentials.ssh_private_key.is_some());
        assert_eq!(
            credentials.known_hosts.as_deref(),
            Some("example.com ssh-ed25519 AAAA\n")
        );
        let shown = format!("{credentials:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("secret-key") && !shown.contains("bot")
        );
    }

    #[test]
    fn unsupported_argo_keys_are_named() {
        let error = from_secret(
            &secret(
                "app",
                &[("url", "https://x"), ("githubAppPrivateKey", "-----BEGIN")],
            ),
            "ns",
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("githubAppPrivateKey") && message.contains("ns/app"),
            "{message}"
        );
        assert!(!message.contains("BEGIN"));
    }

    #[test]
    fn a_username_without_password_names_the_secret() {
        let error = from_secret(
            &secret("repo", &[("url", "https://x"), ("username", "u")]),
            "ns",
        )
        .unwrap_err();
        assert_eq!(error.reason(), "InvalidRepositoryCredentials");
        assert!(error.to_string().contains("ns/repo"), "{error}");
    }
}
