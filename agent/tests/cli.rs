//! The `mooring` binary as a process: version, health endpoints, and a clean stop on SIGTERM.
//! No cluster is needed: the API server it points at is deliberately unreachable.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn mooring() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mooring"))
}

#[test]
fn version_is_the_crate_version() {
    let output = mooring().arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim(),
        format!("mooring {}", env!("CARGO_PKG_VERSION"))
    );
}

/// A kubeconfig for an API server on a port nothing listens on.
fn unreachable_kubeconfig(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n\
             users:\n- name: u\n  user:\n    token: test\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn serves_health_not_ready_until_the_api_server_answers_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = mooring()
        .args([
            "--log-format",
            "json",
            "run",
            "--http-addr",
            "127.0.0.1:0",
            "--kubeconfig",
        ])
        .arg(unreachable_kubeconfig(&dir))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = logs.next().expect("agent logs its address").unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(addr) = entry["fields"]["addr"].as_str() {
            break addr.to_string();
        }
    };

    let get = |path: &str| {
        let url = format!("http://{addr}{path}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async { reqwest::get(url).await.unwrap().status().as_u16() })
    };
    assert_eq!(get("/healthz"), 200);
    assert_eq!(
        get("/readyz"),
        503,
        "not ready while the API server is unreachable"
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "agent did not stop within 10s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit on SIGTERM, got {status:?}");
    let rest: Vec<String> = logs.map_while(Result::ok).collect();
    assert!(
        rest.iter()
            .any(|line| line.contains("mooring agent stopped")),
        "{rest:?}"
    );
}
