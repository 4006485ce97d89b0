//! The cluster paths (`--fetch-cert`, sealing without `--cert`, `--validate`, `--re-encrypt`)
//! against a fake API server on loopback that answers the Service GET and the service-proxy
//! calls and records every request. The real agent behind a real API server is the e2e suite's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::support::{Keys, failure, kubeseal, run_with, sealed_secrets, secret_yaml, success};

/// One request the fake API server saw.
#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// An answer for `method path`.
struct Route {
    method: &'static str,
    path: String,
    status: u16,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 server: one request per connection, answers from `routes`, 404 otherwise.
struct FakeApiServer {
    url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeApiServer {
    fn start(routes: Vec<Route>) -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        // Serves until the test process exits; each connection is handled to completion.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(request) = serve(stream, &routes) {
                    recorded.lock().unwrap().push(request);
                }
            }
        });
        FakeApiServer { url, requests }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// A kubeconfig for this server with a bearer token.
    fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
                 clusters: [{{name: fake, cluster: {{server: '{}'}}}}]\n\
                 users: [{{name: fake, user: {{token: test-token}}}}]\n\
                 contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n",
                self.url
            ),
        )
        .unwrap();
        path
    }
}

fn serve(stream: TcpStream, routes: &[Route]) -> Option<Recorded> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;

    let route = routes.iter().find(|route| {
        route.method == method && route.path == path.split('?').next().unwrap_or_default()
    });
    let (status, answer) = match route {
        Some(route) => (route.status, route.body.clone()),
        None => (
            404,
            br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_vec(),
        ),
    };
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        answer.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(&answer).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

/// The Service GET of `namespace/name`, with first port `port`.
fn service_route(namespace: &str, name: &str, port: &str) -> Route {
    Route {
        method: "GET",
        path: format!("/api/v1/namespaces/{namespace}/services/{name}"),
        status: 200,
        body: serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": port, "port": 8080}, {"name": "metrics", "port": 8081}]}
        }))
        .unwrap(),
    }
}

/// A service-proxy call to `path` on `namespace/name:port`.
fn proxy_route(
    method: &'static str,
    namespace: &str,
    name: &str,
    port: &str,
    path: &str,
    status: u16,
    body: &[u8],
) -> Route {
    Route {
        method,
        path: format!("/api/v1/namespaces/{namespace}/services/http:{name}:{port}/proxy{path}"),
        status,
        body: body.to_vec(),
    }
}

fn kubeseal_for(server: &FakeApiServer, dir: &Path, args: &[&str]) -> std::process::Command {
    let mut command = kubeseal();
    command
        .arg("--kubeconfig")
        .arg(server.kubeconfig(dir))
        .args(args);
    command
}

#[test]
fn the_certificate_comes_through_the_service_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let server = FakeApiServer::start(vec![
        service_route("mooring-system", "mooring", "http"),
        proxy_route(
            "GET",
            "mooring-system",
            "mooring",
            "http",
            "/v1/cert.pem",
            200,
            keys.cert_pem.as_bytes(),
        ),
    ]);

    let fetched = success(&run_with(
        kubeseal_for(&server, dir.path(), &["--fetch-cert"]),
        b"",
    ));
    assert_eq!(fetched, keys.cert_pem);
    let requests = server.requests();
    assert_eq!(
        requests
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("GET", "/api/v1/namespaces/mooring-system/services/mooring"),
            (
                "GET",
                "/api/v1/namespaces/mooring-system/services/http:mooring:http/proxy/v1/cert.pem"
            ),
        ]
    );
    assert_eq!(
        requests[1].header("authorization"),
        Some("Bearer test-token")
    );
    assert!(
        requests[1]
            .header("accept")
            .unwrap()
            .contains("application/x-pem-file")
    );

    // Sealing without --cert uses the fetched certificate.
    let input = secret_yaml("db", Some("prod"), "stringData:\n  k: v\n");
    let stdout = success(&run_with(
        kubeseal_for(&server, dir.path(), &[]),
        input.as_bytes(),
    ));
    assert_eq!(keys.open(&sealed_secrets(&stdout)[0], "k", "prod/db"), b"v");
}

#[test]
fn controller_flags_pick_the_service_and_a_missing_one_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let server = FakeApiServer::start(vec![
        service_route("kube-system", "sealed-secrets-controller", ""),
        proxy_route(
            "GET",
            "kube-system",
            "sealed-secrets-controller",
            "",
            "/v1/cert.pem",
            200,
            keys.cert_pem.as_bytes(),
        ),
    ]);
    let args = [
        "--fetch-cert",
        "--controller-namespace",
        "kube-system",
        "--controller-name",
        "sealed-secrets-controller",
    ];
    assert_eq!(
        success(&run_with(kubeseal_for(&server, dir.path(), &args), b"")),
        keys.cert_pem
    );

    let stderr = failure(&run_with(
        kubeseal_for(&server, dir.path(), &["--fetch-cert"]),
        b"",
    ));
    assert!(
        stderr.contains("failed to get the controller Service mooring-system/mooring"),
        "{stderr}"
    );
    assert!(stderr.contains("--controller-name"), "{stderr}");
}

#[test]
fn validate_posts_each_sealed_secret_and_maps_conflict_to_upstreams_message() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let input = secret_yaml("db", Some("prod"), "stringData:\n  k: v\n");
    let mut seal = kubeseal();
    seal.args(["--cert", keys.cert_arg()]);
    let sealed = success(&run_with(seal, input.as_bytes()));

    let ok = FakeApiServer::start(vec![
        service_route("mooring-system", "mooring", "http"),
        proxy_route(
            "POST",
            "mooring-system",
            "mooring",
            "http",
            "/v1/verify",
            200,
            b"",
        ),
    ]);
    assert_eq!(
        success(&run_with(
            kubeseal_for(&ok, dir.path(), &["--validate"]),
            sealed.as_bytes()
        )),
        ""
    );
    let verify = &ok.requests()[1];
    assert_eq!(verify.method, "POST");
    assert_eq!(verify.header("content-type"), Some("application/json"));
    let posted: serde_json::Value = serde_json::from_slice(&verify.body).unwrap();
    assert_eq!(posted["kind"], "SealedSecret");
    assert_eq!(posted["metadata"]["name"], "db");

    let conflict = FakeApiServer::start(vec![
        service_route("mooring-system", "mooring", "http"),
        proxy_route(
            "POST",
            "mooring-system",
            "mooring",
            "http",
            "/v1/verify",
            409,
            b"",
        ),
    ]);
    let stderr = failure(&run_with(
        kubeseal_for(&conflict, dir.path(), &["--validate"]),
        sealed.as_bytes(),
    ));
    assert_eq!(stderr, "error: unable to decrypt sealed secret: db\n");
}

#[test]
fn re_encrypt_with_only_an_input_file_rewrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let file = dir.path().join("sealed.yaml");
    let input = secret_yaml("db", Some("prod"), "stringData:\n  k: v\n");
    let mut seal = kubeseal();
    seal.args(["--cert", keys.cert_arg(), "-w", file.to_str().unwrap()]);
    success(&run_with(seal, input.as_bytes()));

    // What /v1/rotate answers: no apiVersion/kind, server fields that kubeseal drops.
    let rotated = serde_json::json!({
        "metadata": {"name": "db", "namespace": "prod", "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 2},
        "spec": {"template": {"metadata": {"name": "db", "namespace": "prod"}}, "encryptedData": {"k": "QUJD"}}
    });
    let server = FakeApiServer::start(vec![
        service_route("mooring-system", "mooring", "http"),
        proxy_route(
            "POST",
            "mooring-system",
            "mooring",
            "http",
            "/v1/rotate",
            200,
            &serde_json::to_vec(&rotated).unwrap(),
        ),
    ]);
    let args = ["--re-encrypt", "-f", file.to_str().unwrap()];
    assert_eq!(
        success(&run_with(kubeseal_for(&server, dir.path(), &args), b"")),
        ""
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("---\napiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\n"),
        "{text}"
    );
    assert!(
        !text.contains("creationTimestamp") && !text.contains("generation"),
        "{text}"
    );
    assert_eq!(sealed_secrets(&text)[0].spec.encrypted_data["k"], "QUJD");
    let posted: serde_json::Value = serde_json::from_slice(&server.requests()[1].body).unwrap();
    assert_eq!(posted["metadata"]["name"], "db");
}

#[test]
fn certificates_are_fetched_from_http_urls() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let server = FakeApiServer::start(vec![Route {
        method: "GET",
        path: "/certs/cert.pem".into(),
        status: 200,
        body: keys.cert_pem.clone().into_bytes(),
    }]);
    let url = format!("{}/certs/cert.pem", server.url);
    let input = secret_yaml("db", Some("prod"), "stringData:\n  k: v\n");
    let mut command = kubeseal();
    command.args(["--cert", &url]);
    let stdout = success(&run_with(command, input.as_bytes()));
    assert_eq!(keys.open(&sealed_secrets(&stdout)[0], "k", "prod/db"), b"v");

    let mut command = kubeseal();
    command.args(["--cert", &format!("{}/missing.pem", server.url)]);
    let stderr = failure(&run_with(command, input.as_bytes()));
    assert!(
        stderr.contains("failed to fetch certificate") && stderr.contains("404"),
        "{stderr}"
    );
}

#[test]
fn the_deprecated_rotate_flag_still_re_encrypts_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let rotated =
        serde_json::json!({"metadata": {"name": "db"}, "spec": {"encryptedData": {"k": "QUJD"}}});
    let server = FakeApiServer::start(vec![
        service_route("mooring-system", "mooring", "http"),
        proxy_route(
            "POST",
            "mooring-system",
            "mooring",
            "http",
            "/v1/rotate",
            200,
            &serde_json::to_vec(&rotated).unwrap(),
        ),
    ]);
    let input = r#"{"apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret", "metadata": {"name": "db"}, "spec": {"encryptedData": {"k": "AQ=="}}}"#;
    let output = run_with(
        kubeseal_for(&server, dir.path(), &["--rotate"]),
        input.as_bytes(),
    );
    let stdout = success(&output);
    assert!(String::from_utf8_lossy(&output.stderr).contains("--rotate has been deprecated"));
    assert!(stdout.starts_with('{'), "JSON by default: {stdout}");
    assert_eq!(sealed_secrets(&stdout)[0].spec.encrypted_data["k"], "QUJD");
}
