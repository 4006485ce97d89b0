//! Reaching the controller as upstream kubeseal does: through the API server's service proxy.
//!
//! GET the Service `<controller-name>` in `<controller-namespace>`, take the name of its first
//! port, then call `/api/v1/namespaces/<ns>/services/http:<name>:<port-name>/proxy/<path>`:
//! `GET /v1/cert.pem`, `POST /v1/verify` and `POST /v1/rotate` (the SealedSecret as JSON).

use std::path::PathBuf;

use anyhow::{Context, bail};
use http::{Method, Request, StatusCode, header};
use k8s_openapi::api::core::v1::Service;
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use mooring_crds::SealedSecret;

use crate::cli::Cli;
use crate::documents;

/// How to reach the API server: the kubeconfig and the kubectl-style overrides.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// `--cluster`.
    pub cluster: Option<String>,
    /// `--user`.
    pub user: Option<String>,
    /// `--server`.
    pub server: Option<String>,
    /// `--token`.
    pub token: Option<String>,
    /// `--as`.
    pub impersonate: Option<String>,
    /// `--as-group`.
    pub impersonate_groups: Vec<String>,
    /// `--insecure-skip-tls-verify`.
    pub insecure_skip_tls_verify: bool,
    /// `--tls-server-name`.
    pub tls_server_name: Option<String>,
}

impl ClusterOptions {
    /// The cluster flags of `cli`.
    pub fn from_cli(cli: &Cli) -> Self {
        ClusterOptions {
            kubeconfig: cli.kubeconfig.clone(),
            context: cli.context.clone(),
            cluster: cli.cluster.clone(),
            user: cli.user.clone(),
            server: cli.server.clone(),
            token: cli.token.clone(),
            impersonate: cli.impersonate.clone(),
            impersonate_groups: cli.impersonate_groups.clone(),
            insecure_skip_tls_verify: cli.insecure_skip_tls_verify,
            tls_server_name: cli.tls_server_name.clone(),
        }
    }

    fn kubeconfig_options(&self) -> KubeConfigOptions {
        KubeConfigOptions {
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        }
    }

    /// The client configuration: `--kubeconfig`, else `$KUBECONFIG`/`~/.kube/config`, else
    /// `--server` alone, else in-cluster; then the overrides.
    pub async fn config(&self) -> anyhow::Result<kube::Config> {
        let options = self.kubeconfig_options();
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .with_context(|| format!("failed to read kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .with_context(|| format!("failed to load kubeconfig {}", path.display()))?
            }
            None => match kube::Config::from_kubeconfig(&options).await {
                Ok(config) => config,
                Err(error) if options.context.is_some() || options.cluster.is_some() || options.user.is_some() => {
                    return Err(error).context("failed to load the kubeconfig");
                }
                Err(kubeconfig_error) => match &self.server {
                    Some(server) => kube::Config::new(parse_server(server)?),
                    None => kube::Config::incluster().map_err(|in_cluster| {
                        anyhow::anyhow!(
                            "failed to find a cluster configuration: no kubeconfig ({kubeconfig_error}) and not in a cluster ({in_cluster})"
                        )
                    })?,
                },
            },
        };
        if let Some(server) = &self.server {
            config.cluster_url = parse_server(server)?;
        }
        if let Some(token) = &self.token {
            // kube keeps tokens in a secrecy::SecretString; its deserializer builds one.
            let auth: AuthInfo = serde_json::from_value(serde_json::json!({ "token": token }))
                .context("failed to use --token")?;
            config.auth_info.token = auth.token;
            config.auth_info.token_file = None;
            config.auth_info.exec = None;
            config.auth_info.auth_provider = None;
        }
        if let Some(user) = &self.impersonate {
            config.auth_info.impersonate = Some(user.clone());
        }
        if !self.impersonate_groups.is_empty() {
            config.auth_info.impersonate_groups = Some(self.impersonate_groups.clone());
        }
        if self.insecure_skip_tls_verify {
            config.accept_invalid_certs = true;
        }
        if let Some(name) = &self.tls_server_name {
            config.tls_server_name = Some(name.clone());
        }
        Ok(config)
    }

    /// A client for the API server; no request is made yet.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        kube::Client::try_from(self.config().await?)
            .context("failed to build the Kubernetes client")
    }

    /// The namespace of the selected kubeconfig context, read from the file only (no request).
    /// `None` without a kubeconfig or when the context names none.
    pub fn context_namespace(&self) -> anyhow::Result<Option<String>> {
        let kubeconfig = match &self.kubeconfig {
            Some(path) => Kubeconfig::read_from(path)
                .with_context(|| format!("failed to read kubeconfig {}", path.display()))?,
            None => match Kubeconfig::read() {
                Ok(kubeconfig) => kubeconfig,
                Err(_) => return Ok(None),
            },
        };
        let Some(context) = self.context.clone().or(kubeconfig.current_context.clone()) else {
            return Ok(None);
        };
        Ok(kubeconfig
            .contexts
            .iter()
            .find(|named| named.name == context)
            .and_then(|named| named.context.as_ref())
            .and_then(|context| context.namespace.clone())
            .filter(|namespace| !namespace.is_empty()))
    }
}

fn parse_server(server: &str) -> anyhow::Result<http::Uri> {
    server
        .parse()
        .with_context(|| format!("failed to parse --server {server:?} as a URL"))
}

/// The controller's Service, resolved to the port the proxy path names.
pub struct Controller {
    client: kube::Client,
    namespace: String,
    name: String,
    port_name: String,
}

impl Controller {
    /// Finds the controller's Service and its first port's name.
    pub async fn connect(
        client: kube::Client,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Self> {
        ensure_object_name("--controller-namespace", namespace)?;
        ensure_object_name("--controller-name", name)?;
        let service = kube::Api::<Service>::namespaced(client.clone(), namespace)
            .get(name)
            .await
            .with_context(|| {
                format!(
                    "failed to get the controller Service {namespace}/{name}; set --controller-name and --controller-namespace to the Service of the sealed secrets controller"
                )
            })?;
        let port_name = port_name_of(&service, namespace, name)?;
        Ok(Controller {
            client,
            namespace: namespace.to_string(),
            name: name.to_string(),
            port_name,
        })
    }

    /// `GET /v1/cert.pem`: the PEM certificate of the controller's newest key.
    pub async fn certificate(&self) -> anyhow::Result<Vec<u8>> {
        let (status, body) = self
            .call(self.request(Method::GET, "/v1/cert.pem", None)?)
            .await?;
        certificate_from_response(status, body, &self.namespace, &self.name)
    }

    /// `POST /v1/verify`: whether the controller can open `sealed`.
    pub async fn verify(&self, sealed: &SealedSecret) -> anyhow::Result<()> {
        let body = serde_json::to_vec(sealed).context("failed to serialize the sealed secret")?;
        let (status, response) = self
            .call(self.request(Method::POST, "/v1/verify", Some(body))?)
            .await?;
        verify_outcome(status, &response, &object_name(sealed))
    }

    /// `POST /v1/rotate`: `sealed` re-encrypted with the controller's newest key.
    pub async fn rotate(&self, sealed: &SealedSecret) -> anyhow::Result<SealedSecret> {
        let body = serde_json::to_vec(sealed).context("failed to serialize the sealed secret")?;
        let (status, response) = self
            .call(self.request(Method::POST, "/v1/rotate", Some(body))?)
            .await?;
        rotate_outcome(status, &response, &object_name(sealed))
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Request<Vec<u8>>> {
        proxy_request(
            method,
            &self.namespace,
            &self.name,
            &self.port_name,
            path,
            body,
        )
    }

    async fn call(&self, request: Request<Vec<u8>>) -> anyhow::Result<(StatusCode, Vec<u8>)> {
        let uri = request.uri().to_string();
        let response = self
            .client
            .send(request.map(kube::client::Body::from))
            .await
            .with_context(|| format!("failed to call the controller at {uri}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .with_context(|| format!("failed to read the controller's answer from {uri}"))?;
        Ok((status, body.to_vec()))
    }
}

/// The API-server path that proxies `path` to port `port_name` of Service `namespace/name`,
/// as client-go's `ProxyGet("http", name, port, path)` builds it.
pub fn proxy_path(namespace: &str, name: &str, port_name: &str, path: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/services/http:{name}:{port_name}/proxy{path}")
}

/// A request through the service proxy; a body is sent as JSON.
pub fn proxy_request(
    method: Method,
    namespace: &str,
    name: &str,
    port_name: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<Request<Vec<u8>>> {
    let builder = Request::builder()
        .method(method)
        .uri(proxy_path(namespace, name, port_name, path))
        // What upstream asks for when fetching the certificate; harmless elsewhere.
        .header(
            header::ACCEPT,
            "application/x-pem-file, application/json, */*",
        );
    let request = match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(body),
        None => builder.body(Vec::new()),
    };
    request.context("failed to build the request to the controller")
}

/// The name of the Service's first port (may be empty for an unnamed single port).
pub fn port_name_of(service: &Service, namespace: &str, name: &str) -> anyhow::Result<String> {
    let port_name = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .and_then(|ports| ports.first())
        .map(|port| port.name.clone().unwrap_or_default())
        .with_context(|| {
            format!("failed to find a port on the controller Service {namespace}/{name}")
        })?;
    if !port_name
        .bytes()
        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
    {
        bail!(
            "failed to use port {port_name:?} of the controller Service {namespace}/{name}: not a port name"
        );
    }
    Ok(port_name)
}

/// The certificate from a `/v1/cert.pem` answer.
pub fn certificate_from_response(
    status: StatusCode,
    body: Vec<u8>,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Vec<u8>> {
    if status != StatusCode::OK {
        bail!(
            "failed to fetch the certificate from the controller {namespace}/{name}: {}",
            describe(status, &body)
        );
    }
    Ok(body)
}

/// The meaning of a `/v1/verify` answer: 200 opens, 409 does not.
pub fn verify_outcome(status: StatusCode, body: &[u8], name: &str) -> anyhow::Result<()> {
    match status {
        StatusCode::OK => Ok(()),
        // Upstream's exact message; scripts look for it.
        StatusCode::CONFLICT => bail!("unable to decrypt sealed secret: {name}"),
        _ => bail!(
            "failed to validate sealed secret {name}: {}",
            describe(status, body)
        ),
    }
}

/// The re-encrypted SealedSecret of a `/v1/rotate` answer, cleaned as upstream does
/// (no creationTimestamp, deletionTimestamp or generation).
pub fn rotate_outcome(status: StatusCode, body: &[u8], name: &str) -> anyhow::Result<SealedSecret> {
    if status != StatusCode::OK {
        bail!(
            "failed to re-encrypt sealed secret {name}: {}",
            describe(status, body)
        );
    }
    let document: serde_json::Value = serde_json::from_slice(body).with_context(|| {
        format!("failed to re-encrypt sealed secret {name}: the controller answered no JSON")
    })?;
    let mut sealed = documents::sealed_secret_from_document(document, 1)?;
    sealed.metadata.creation_timestamp = None;
    sealed.metadata.deletion_timestamp = None;
    sealed.metadata.generation = None;
    Ok(sealed)
}

/// `409 Conflict: <first part of the body>` for messages.
fn describe(status: StatusCode, body: &[u8]) -> String {
    const LIMIT: usize = 512;
    let text = String::from_utf8_lossy(&body[..body.len().min(LIMIT)]);
    let text = text.trim();
    if text.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {text}")
    }
}

fn object_name(sealed: &SealedSecret) -> String {
    sealed.metadata.name.clone().unwrap_or_default()
}

/// Names go into a URL path: refuse anything that is not a DNS name.
fn ensure_object_name(flag: &str, value: &str) -> anyhow::Result<()> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'.'
        });
    if !valid {
        bail!("failed to use {flag} {value:?}: not a Kubernetes object name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};

    fn service(ports: Vec<Option<&str>>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                ports: Some(
                    ports
                        .into_iter()
                        .map(|name| ServicePort {
                            name: name.map(str::to_string),
                            port: 8080,
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    #[test]
    fn requests_go_through_the_service_proxy() {
        let request = proxy_request(
            Method::GET,
            "mooring-system",
            "mooring",
            "http",
            "/v1/cert.pem",
            None,
        )
        .unwrap();
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.uri().path(),
            "/api/v1/namespaces/mooring-system/services/http:mooring:http/proxy/v1/cert.pem"
        );
        assert!(
            request.headers()[header::ACCEPT]
                .to_str()
                .unwrap()
                .contains("application/x-pem-file")
        );
        assert!(request.body().is_empty());

        let request = proxy_request(
            Method::POST,
            "ns",
            "svc",
            "",
            "/v1/verify",
            Some(b"{}".to_vec()),
        )
        .unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.uri().path(),
            "/api/v1/namespaces/ns/services/http:svc:/proxy/v1/verify"
        );
        assert_eq!(request.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(request.body(), b"{}");
    }

    #[test]
    fn the_first_ports_name_is_used() {
        assert_eq!(
            port_name_of(&service(vec![Some("http"), Some("metrics")]), "n", "s").unwrap(),
            "http"
        );
        assert_eq!(port_name_of(&service(vec![None]), "n", "s").unwrap(), "");
        assert!(port_name_of(&service(vec![]), "n", "s").is_err());
        assert!(port_name_of(&service(vec![Some("a/b")]), "n", "s").is_err());
        assert!(ensure_object_name("--controller-name", "../x").is_err());
        assert!(ensure_object_name("--controller-name", "sealed-secrets").is_ok());
    }

    #[test]
    fn verify_answers_map_to_upstream_messages() {
        assert!(verify_outcome(StatusCode::OK, b"", "db").is_ok());
        assert_eq!(
            verify_outcome(StatusCode::CONFLICT, b"", "db")
                .unwrap_err()
                .to_string(),
            "unable to decrypt sealed secret: db"
        );
        let other = verify_outcome(StatusCode::TOO_MANY_REQUESTS, b"slow down", "db").unwrap_err();
        assert_eq!(
            other.to_string(),
            "failed to validate sealed secret db: 429 Too Many Requests: slow down"
        );
    }

    #[test]
    fn rotate_answers_are_parsed_and_cleaned() {
        let body = serde_json::json!({
            "metadata": {"name": "db", "namespace": "prod", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "generation": 4, "uid": "u"},
            "spec": {"encryptedData": {"k": "AQ=="}}
        });
        let sealed = rotate_outcome(StatusCode::OK, body.to_string().as_bytes(), "db").unwrap();
        assert_eq!(sealed.metadata.creation_timestamp, None);
        assert_eq!(sealed.metadata.generation, None);
        assert_eq!(sealed.metadata.uid.as_deref(), Some("u"));
        assert_eq!(sealed.spec.encrypted_data["k"], "AQ==");
        let error = rotate_outcome(StatusCode::INTERNAL_SERVER_ERROR, b"no key", "db").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("500 Internal Server Error: no key")
        );
        assert!(rotate_outcome(StatusCode::OK, b"<html>", "db").is_err());
    }

    #[test]
    fn certificate_answers_must_be_ok() {
        assert_eq!(
            certificate_from_response(StatusCode::OK, b"PEM".to_vec(), "n", "s").unwrap(),
            b"PEM"
        );
        let error = certificate_from_response(
            StatusCode::SERVICE_UNAVAILABLE,
            b"no endpoints".to_vec(),
            "n",
            "s",
        );
        assert!(
            error
                .unwrap_err()
                .to_string()
                .contains("503 Service Unavailable: no endpoints")
        );
    }

    /// A kubeconfig with contexts `a` (namespace `from-a`) and `b` (none).
    fn kubeconfig(dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n\
             users: [{name: u, user: {token: from-file}}]\ncontexts:\n- {name: a, context: {cluster: c, user: u, namespace: from-a}}\n\
             - {name: b, context: {cluster: c, user: u}}\n",
        )
        .unwrap();
        path
    }

    #[test]
    fn context_namespace_comes_from_the_selected_context() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = ClusterOptions {
            kubeconfig: Some(kubeconfig(&dir)),
            ..ClusterOptions::default()
        };
        assert_eq!(
            options.context_namespace().unwrap().as_deref(),
            Some("from-a")
        );
        options.context = Some("b".into());
        assert_eq!(options.context_namespace().unwrap(), None);
        options.kubeconfig = Some(dir.path().join("missing"));
        assert!(
            options.context_namespace().is_err(),
            "an explicit kubeconfig must exist"
        );
    }

    #[tokio::test]
    async fn overrides_apply_to_the_loaded_config() {
        let dir = tempfile::tempdir().unwrap();
        let plain = ClusterOptions {
            kubeconfig: Some(kubeconfig(&dir)),
            ..ClusterOptions::default()
        };
        let config = plain.config().await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "http://127.0.0.1:1/");
        assert_eq!(config.default_namespace, "from-a");
        assert!(!config.accept_invalid_certs);

        let options = ClusterOptions {
            server: Some("https://10.0.0.1:6443".into()),
            token: Some("t0ken".into()),
            impersonate: Some("alice".into()),
            impersonate_groups: vec!["admins".into()],
            insecure_skip_tls_verify: true,
            tls_server_name: Some("api".into()),
            context: Some("b".into()),
            ..plain
        };
        let config = options.config().await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://10.0.0.1:6443/");
        let token = serde_json::to_value(&config.auth_info).unwrap();
        assert_eq!(token["token"], "t0ken", "--token replaces the kubeconfig's");
        assert_eq!(config.auth_info.impersonate.as_deref(), Some("alice"));
        assert_eq!(
            config.auth_info.impersonate_groups,
            Some(vec!["admins".to_string()])
        );
        assert!(config.accept_invalid_certs);
        assert_eq!(config.tls_server_name.as_deref(), Some("api"));
        assert_eq!(
            config.default_namespace, "default",
            "context b names no namespace"
        );
    }
}
