//! Git hosts' webhook requests, signed as they sign them.

use serde_json::json;

/// The lowercase hex HMAC-SHA256 of `body` under `secret` (GitHub's `X-Hub-Signature-256`
/// after `sha256=`, Gitea's and Bitbucket Server's signatures).
pub fn hmac_sha256_hex(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    aws_lc_rs::hmac::sign(&key, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The URL as a Git host's web page names it: no `.git`, the host in capitals.
pub fn web_url(url: &str) -> String {
    url.trim_end_matches(".git")
        .replace("127.0.0.1", "127.0.0.1".to_uppercase().as_str())
}

/// A GitHub `push` payload for `url`: `git_ref` moved to `after`, one commit changing `files`.
pub fn github_payload(url: &str, git_ref: &str, after: &str, files: &[&str]) -> Vec<u8> {
    let payload = json!({
        "ref": git_ref, "before": "0".repeat(40), "after": after,
        "repository": {"html_url": web_url(url), "clone_url": url, "default_branch": "main"},
        "commits": [{"id": after, "added": [], "modified": files, "removed": []}],
    });
    payload.to_string().into_bytes()
}

/// The headers GitHub sends with `body`, signed with `secret`.
pub fn github_push_headers(secret: &str, body: &[u8]) -> [(&'static str, String); 2] {
    [
        ("x-github-event", "push".to_owned()),
        (
            "x-hub-signature-256",
            format!("sha256={}", hmac_sha256_hex(secret, body)),
        ),
    ]
}
