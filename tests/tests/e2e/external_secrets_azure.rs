//! ExternalSecrets from Azure Key Vault (the realenv's Key Vault test server, whose fidelity
//! Microsoft's Python and Go clients prove at `up`): service principals, workload identity with
//! real ServiceAccount tokens, managed identity over IMDS on loopback, ClusterSecretStores, find
//! by tags, disabled secrets and principals without access; and token reuse counted by the
//! server. Each test seeds its own principals and secret names (prefixed with its namespace), so
//! tests share the one server without resetting it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use mooring_crds::secret_store::{ClusterSecretStore, SecretStore};
use mooring_e2e::external_secrets::wait_for_store_ready;
use mooring_e2e::{RealEnv, RunningAgent, TestNamespace, wait_for};
use mooring_provider::conformance::{self, Seed};
use serde_json::{Value, json};

/// The Key Vault test server's admin API and data.
struct Vault {
    env: RealEnv,
    http: reqwest::Client,
}

impl Vault {
    fn new(env: &RealEnv) -> Vault {
        let pem = std::fs::read(env.var("AZURE_KEYVAULT_CA").unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .no_proxy()
            .build()
            .unwrap();
        Vault {
            env: env.clone(),
            http,
        }
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/{path}", self.env.var("AZURE_KV_ADMIN_URL").unwrap());
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(self.env.var("AZURE_KV_ADMIN_TOKEN").unwrap());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Adds a version of secret `name`; returns its version.
    async fn put(&self, name: &str, value: &str, tags: &BTreeMap<String, String>) -> String {
        let answer = self
            .admin(
                reqwest::Method::PUT,
                &format!("secrets/{name}"),
                Some(json!({"value": value, "tags": tags})),
            )
            .await;
        answer["id"]
            .as_str()
            .and_then(|id| id.rsplit('/').next())
            .unwrap_or_default()
            .to_string()
    }

    async fn disable(&self, name: &str) {
        self.admin(
            reqwest::Method::PATCH,
            &format!("secrets/{name}"),
            Some(json!({"attributes": {"enabled": false}})),
        )
        .await;
    }

    async fn remove(&self, name: &str) {
        self.admin(reqwest::Method::DELETE, &format!("secrets/{name}"), None)
            .await;
    }

    /// Creates principal `client_id` (JSON as the server's README has it).
    async fn principal(&self, client_id: &str, principal: Value) {
        self.admin(
            reqwest::Method::PUT,
            &format!("principals/{client_id}"),
            Some(principal),
        )
        .await;
    }

    async fn stats(&self) -> Value {
        self.admin(reqwest::Method::GET, "stats", None).await
    }

    fn tenant(&self) -> &str {
        self.env.var("AZURE_TENANT_ID").unwrap()
    }
}

/// A counter of the server's stats (0 when absent).
fn counter(stats: &Value, kind: &str, key: &str) -> u64 {
    stats[kind][key].as_u64().unwrap_or(0)
}

/// A unique name (client ids, secrets): letters, digits and dashes.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// The agent for `namespace`, trusting the realenv CA for Azure, IMDS on loopback.
fn agent_args(env: &RealEnv, namespace: &str) -> mooring_agent::cli::RunArgs {
    let mut args = mooring_e2e::agent(env, namespace).unwrap();
    args.azure_ca_file = Some(env.var("AZURE_KEYVAULT_CA").unwrap().into());
    args.azure_imds_endpoint = Some(env.var("AZURE_IMDS_ENDPOINT").unwrap().into());
    args
}

/// `spec.provider` of a store at `vault_url` with `auth` merged in (authority: the test server).
fn azure_provider(env: &RealEnv, vault_url: &str, auth: Value) -> Value {
    let mut azurekv = json!({
        "vaultUrl": vault_url,
        "tenantId": env.var("AZURE_TENANT_ID").unwrap(),
        "customCloudConfig": {"activeDirectoryEndpoint": env.var("AZURE_AUTHORITY_HOST").unwrap()},
    });
    if let (Some(target), Value::Object(auth)) = (azurekv.as_object_mut(), auth) {
        target.extend(auth);
    }
    json!({"azurekv": azurekv})
}

/// Service-principal auth from Secret `azure-sp` (keys `client-id`, `client-secret`).
fn service_principal() -> Value {
    json!({"authSecretRef": {
        "clientId": {"name": "azure-sp", "key": "client-id"},
        "clientSecret": {"name": "azure-sp", "key": "client-secret"},
    }})
}

async fn create_sp_secret(ns: &TestNamespace, client_id: &str, secret: &str) {
    ns.create_secret(
        "azure-sp",
        &[("client-id", client_id), ("client-secret", secret)],
    )
    .await
    .unwrap();
}

/// A new principal of the test tenant with a client secret, reading `read`.
async fn new_principal(vault: &Vault, prefix: &str, read: Value) -> (String, String) {
    let client_id = unique(prefix);
    let secret = unique("secret");
    vault
        .principal(
            &client_id,
            json!({"secret": secret, "tenant": vault.tenant(), "read": read}),
        )
        .await;
    (client_id, secret)
}

/// An ExternalSecret reading `key` (with `property` if any) into `value`, refreshing every
/// `refresh`.
fn reading(store: &str, key: &str, property: Option<&str>, refresh: &str) -> Value {
    let mut remote = json!({"key": key});
    if let Some(property) = property {
        remote["property"] = json!(property);
    }
    json!({"secretStoreRef": {"name": store}, "refreshInterval": refresh,
           "data": [{"secretKey": "value", "remoteRef": remote}]})
}

async fn store_ready(
    ns: &TestNamespace,
    name: &str,
    status: &str,
) -> mooring_crds::conditions::Condition {
    wait_for_store_ready(&ns.api::<SecretStore>(), name, |c| {
        mooring_e2e::external_secrets::has_status(c, status)
    })
    .await
    .unwrap()
}

async fn secret_value(ns: &TestNamespace, name: &str, key: &str) -> Option<Vec<u8>> {
    let secret = ns.api::<Secret>().get_opt(name).await.ok()??;
    secret.data?.get(key).map(|b| b.0.clone())
}

/// A loopback TCP forwarder to the vault that can be closed (connections refused, open ones
/// cut) and opened again on the same port: "the server stopped" for one test only, while other
/// tests keep using the server.
struct Gate {
    port: u16,
    target: String,
    running: Mutex<Option<tokio::task::JoinHandle<()>>>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Gate {
    async fn open(target: &str) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let gate = Gate {
            port,
            target: target.into(),
            running: Mutex::new(None),
            connections: Arc::default(),
        };
        gate.serve(listener);
        gate
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let target = self.target.clone();
        let connections = Arc::clone(&self.connections);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let forward = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections.lock().unwrap().push(forward);
            }
        });
        *self.running.lock().unwrap() = Some(task);
    }

    /// Refuses new connections and cuts the open ones.
    fn close(&self) {
        if let Some(task) = self.running.lock().unwrap().take() {
            task.abort();
        }
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Listens again on the same port.
    async fn reopen(&self) {
        let address: std::net::SocketAddr = ([127, 0, 0, 1], self.port).into();
        let listener = wait_for("the gate's port again", Duration::from_secs(30), || async {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.set_reuseaddr(true).ok()?;
            socket.bind(address).ok()?;
            socket.listen(64).ok()
        })
        .await
        .unwrap();
        self.serve(listener);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
    }
}

/// `host:port` of the vault URL.
fn vault_address(env: &RealEnv) -> String {
    env.var("AZURE_KEYVAULT_URL")
        .unwrap()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

/// Service principal: create → the Secret has the bytes; a remote change arrives within the
/// refresh; a remote delete keeps the Secret and says NotFound; the server stopped keeps the
/// Secret and says Unavailable, then recovers. A wrong client secret makes the store
/// Ready=False naming tenant and client, never the secret.
#[tokio::test]
async fn service_principal_reads_updates_and_keeps_the_secret_when_the_vault_fails() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let vault = Vault::new(&env);
    let ns = TestNamespace::create(&env, "es-azsp").await.unwrap();
    let (client_id, secret) = new_principal(&vault, "sp", json!("all")).await;
    let name = unique(ns.name());
    vault
        .put(&name, r#"{"password":"first-az"}"#, &BTreeMap::new())
        .await;
    create_sp_secret(&ns, &client_id, &secret).await;
    let gate = Gate::open(&vault_address(&env)).await;
    ns.create_secret_store(
        "store",
        azure_provider(&env, &gate.url(), service_principal()),
    )
    .await
    .unwrap();
    // The wrong secret, in a second store.
    ns.create_secret(
        "azure-sp-wrong",
        &[
            ("client-id", &client_id),
            ("client-secret", "not-the-secret-xyzzy"),
        ],
    )
    .await
    .unwrap();
    ns.create_secret_store(
        "wrong",
        azure_provider(
            &env,
            env.var("AZURE_KEYVAULT_URL").unwrap(),
            json!({"authSecretRef": {
                "clientId": {"name": "azure-sp-wrong", "key": "client-id"},
                "clientSecret": {"name": "azure-sp-wrong", "key": "client-secret"}}}),
        ),
    )
    .await
    .unwrap();
    let agent = RunningAgent::start_with(agent_args(&env, ns.name()))
        .await
        .unwrap();
    let ready = store_ready(&ns, "store", "True").await;
    assert_eq!(ready.reason, "Valid");
    let refused = store_ready(&ns, "wrong", "False").await;
    println!(
        "a wrong client secret: {}: {}",
        refused.reason, refused.message
    );
    assert!(refused.message.contains(&client_id), "{}", refused.message);
    assert!(
        refused.message.contains(vault.tenant()),
        "{}",
        refused.message
    );
    assert!(
        refused.message.contains("AADSTS7000215"),
        "{}",
        refused.message
    );
    assert!(!refused.message.contains("xyzzy"), "{}", refused.message);

    ns.create_external_secret("db", reading("store", &name, Some("password"), "1s"))
        .await
        .unwrap();
    ns.wait_for_secret("db", "value", b"first-az")
        .await
        .unwrap();
    vault
        .put(&name, r#"{"password":"second-az"}"#, &BTreeMap::new())
        .await;
    ns.wait_for_secret("db", "value", b"second-az")
        .await
        .unwrap();

    // The server goes away: the Secret is kept, Unavailable; back: it recovers.
    gate.close();
    ns.wait_for_condition("db", "Fetched", "False", "Unavailable")
        .await
        .unwrap();
    assert_eq!(
        secret_value(&ns, "db", "value").await.as_deref(),
        Some(&b"second-az"[..])
    );
    gate.reopen().await;
    vault
        .put(&name, r#"{"password":"third-az"}"#, &BTreeMap::new())
        .await;
    ns.wait_for_secret("db", "value", b"third-az")
        .await
        .unwrap();

    // Deleted remotely: kept, NotFound.
    vault.remove(&name).await;
    let gone = ns
        .wait_for_condition("db", "Fetched", "False", "NotFound")
        .await
        .unwrap();
    assert!(gone.message.contains("SecretNotFound"), "{}", gone.message);
    assert_eq!(
        secret_value(&ns, "db", "value").await.as_deref(),
        Some(&b"third-az"[..])
    );
    agent.stop().await.unwrap();
    // One token for this principal, for all of it (the stop and start included: the cached
    // token stayed valid).
    let stats = vault.stats().await;
    assert_eq!(counter(&stats, "tokens_issued", &client_id), 1, "{stats}");
}

/// A principal without access is Forbidden (the server's ForbiddenByRbac); a disabled secret is
/// Forbidden (SecretDisabled) and skipped by find; find by tag returns only the tagged, enabled
/// secrets; cert/ and key/ read certificates and keys.
#[tokio::test]
async fn forbidden_disabled_find_by_tags_certificates_and_keys() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let vault = Vault::new(&env);
    let ns = TestNamespace::create(&env, "es-azfind").await.unwrap();
    let prefix = unique(ns.name());
    let team = BTreeMap::from([("team".to_string(), prefix.clone())]);
    let other = BTreeMap::from([("team".to_string(), "someone-else".to_string())]);
    let (a, b, c, off) = (
        format!("{prefix}-a"),
        format!("{prefix}-b"),
        format!("{prefix}-c"),
        format!("{prefix}-off"),
    );
    vault.put(&a, "alpha", &team).await;
    vault.put(&b, "beta", &team).await;
    vault.put(&c, "gamma", &other).await;
    vault.put(&off, "off-value-xyzzy", &team).await;
    vault.disable(&off).await;
    let cert = format!("{prefix}-cert");
    vault
        .admin(
            reqwest::Method::PUT,
            &format!("certificates/{cert}"),
            Some(json!({"subject": "CN=e2e", "contentType": "application/x-pem-file"})),
        )
        .await;
    let key = format!("{prefix}-key");
    vault
        .admin(
            reqwest::Method::PUT,
            &format!("keys/{key}"),
            Some(json!({"kty": "EC"})),
        )
        .await;
    let (reader, reader_secret) = new_principal(&vault, "reader", json!("all")).await;
    let (nobody, nobody_secret) = new_principal(&vault, "nobody", json!("none")).await;
    create_sp_secret(&ns, &reader, &reader_secret).await;
    ns.create_secret(
        "azure-nobody",
        &[("client-id", &nobody), ("client-secret", &nobody_secret)],
    )
    .await
    .unwrap();
    let url = env.var("AZURE_KEYVAULT_URL").unwrap();
    ns.create_secret_store("store", azure_provider(&env, url, service_principal()))
        .await
        .unwrap();
    ns.create_secret_store(
        "nobody",
        azure_provider(
            &env,
            url,
            json!({"authSecretRef": {
                "clientId": {"name": "azure-nobody", "key": "client-id"},
                "clientSecret": {"name": "azure-nobody", "key": "client-secret"}}}),
        ),
    )
    .await
    .unwrap();
    let agent = RunningAgent::start_with(agent_args(&env, ns.name()))
        .await
        .unwrap();
    store_ready(&ns, "store", "True").await;
    ns.create_external_secret(
        "found",
        json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1h",
               "dataFrom": [{"find": {"tags": {"team": prefix}}}]}),
    )
    .await
    .unwrap();
    ns.create_external_secret("denied", reading("nobody", &a, None, "1h"))
        .await
        .unwrap();
    ns.create_external_secret("off", reading("store", &off, None, "1h"))
        .await
        .unwrap();
    ns.create_external_secret(
        "objects",
        json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1h",
               "data": [{"secretKey": "cer", "remoteRef": {"key": format!("cert/{cert}")}},
                        {"secretKey": "crv", "remoteRef": {"key": format!("key/{key}"), "property": "crv"}},
                        {"secretKey": "pem", "remoteRef": {"key": format!("secret/{cert}")}}]}),
    )
    .await
    .unwrap();

    ns.create_external_secret(
        "tags",
        json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1h",
               "data": [{"secretKey": "a-team",
                         "remoteRef": {"key": a, "property": "team", "metadataPolicy": "Fetch"}}],
               "dataFrom": [{"extract": {"key": c, "metadataPolicy": "Fetch"}}]}),
    )
    .await
    .unwrap();
    let tags = ns
        .wait_for_secret("tags", "a-team", prefix.as_bytes())
        .await
        .unwrap();
    // The tags of `c` as keys (extract), not its value.
    let tag_keys: Vec<&String> = tags.data.as_ref().unwrap().keys().collect();
    assert_eq!(tag_keys, ["a-team", "team"]);
    assert_eq!(tags.data.as_ref().unwrap()["team"].0, b"someone-else");
    let found = ns.wait_for_secret("found", &a, b"alpha").await.unwrap();
    let keys: Vec<&String> = found.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, [&a, &b], "tagged and enabled only");
    let denied = ns
        .wait_for_condition("denied", "Fetched", "False", "Forbidden")
        .await
        .unwrap();
    assert!(
        denied.message.contains("ForbiddenByRbac"),
        "{}",
        denied.message
    );
    let disabled = ns
        .wait_for_condition("off", "Fetched", "False", "Forbidden")
        .await
        .unwrap();
    assert!(
        disabled.message.contains("SecretDisabled"),
        "{}",
        disabled.message
    );
    assert!(!disabled.message.contains("xyzzy"), "{}", disabled.message);
    let objects = wait_for("cert/ and key/ read", Duration::from_secs(60), || async {
        let secret = ns.api::<Secret>().get_opt("objects").await.ok()??;
        secret.data
    })
    .await
    .unwrap();
    // The certificate's DER (an X.509 SEQUENCE), the JWK's curve, the backing secret's PEM.
    assert_eq!(objects["cer"].0.first(), Some(&0x30));
    assert_eq!(objects["crv"].0, b"P-256");
    assert!(String::from_utf8_lossy(&objects["pem"].0).contains("-----BEGIN CERTIFICATE-----"));
    agent.stop().await.unwrap();
}

/// A service principal with a client certificate (ESO's `authSecretRef.clientCertificate`):
/// the agent signs the assertion with the certificate's key; the server verifies it with the
/// certificate.
#[tokio::test]
async fn a_client_certificate_signs_the_assertion() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let vault = Vault::new(&env);
    let ns = TestNamespace::create(&env, "es-azcert").await.unwrap();
    let name = unique(ns.name());
    vault
        .put(&name, "certificate-value", &BTreeMap::new())
        .await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["mooring-e2e".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let client_id = unique("cert");
    let token_url = format!(
        "{}/{}/oauth2/v2.0/token",
        env.var("AZURE_AUTHORITY_HOST").unwrap(),
        vault.tenant()
    );
    vault
        .principal(
            &client_id,
            json!({"tenant": vault.tenant(), "read": [name],
                   "federated": [{"issuer": client_id, "subject": client_id,
                                  "audience": token_url, "pem": certificate.pem()}]}),
        )
        .await;
    let bundle = format!("{}{}", certificate.pem(), key.serialize_pem());
    ns.create_secret(
        "azure-cert",
        &[
            ("client-id", client_id.as_str()),
            ("certificate", bundle.as_str()),
        ],
    )
    .await
    .unwrap();
    ns.create_secret_store(
        "store",
        azure_provider(
            &env,
            env.var("AZURE_KEYVAULT_URL").unwrap(),
            json!({"authSecretRef": {
                "clientId": {"name": "azure-cert", "key": "client-id"},
                "clientCertificate": {"name": "azure-cert", "key": "certificate"}}}),
        ),
    )
    .await
    .unwrap();
    let agent = RunningAgent::start_with(agent_args(&env, ns.name()))
        .await
        .unwrap();
    store_ready(&ns, "store", "True").await;
    ns.create_external_secret("cert", reading("store", &name, None, "1h"))
        .await
        .unwrap();
    ns.wait_for_secret("cert", "value", b"certificate-value")
        .await
        .unwrap();
    agent.stop().await.unwrap();
    let stats = vault.stats().await;
    assert_eq!(counter(&stats, "tokens_issued", &client_id), 1, "{stats}");
}

/// Workload identity: the ServiceAccount's annotations give client and tenant, the API server
/// mints the token (audience api://AzureADTokenExchange), the server checks its signature
/// against the API server's key and its subject against the federated credential.
#[tokio::test]
async fn workload_identity_exchanges_a_service_account_token() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let vault = Vault::new(&env);
    let ns = TestNamespace::create(&env, "es-azwi").await.unwrap();
    let name = unique(ns.name());
    vault.put(&name, "federated-value", &BTreeMap::new()).await;
    let client_id = unique("wi");
    let pem =
        std::fs::read_to_string(format!("{}/pki/sa.pub", env.var("REALENV_DIR").unwrap())).unwrap();
    vault
        .principal(
            &client_id,
            json!({"tenant": vault.tenant(), "read": [name],
                   "federated": [{"issuer": "https://kubernetes.default.svc.cluster.local",
                                  "subject": format!("system:serviceaccount:{}:app", ns.name()),
                                  "audience": "api://AzureADTokenExchange", "pem": pem}]}),
        )
        .await;
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("app".into()),
            annotations: Some(BTreeMap::from([
                (
                    "azure.workload.identity/client-id".into(),
                    client_id.clone(),
                ),
                (
                    "azure.workload.identity/tenant-id".into(),
                    vault.tenant().into(),
                ),
            ])),
            ..Default::default()
        },
        ..Default::default()
    };
    ns.api::<ServiceAccount>()
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    // The tenant from the annotation only.
    let mut provider = azure_provider(
        &env,
        env.var("AZURE_KEYVAULT_URL").unwrap(),
        json!({"authType": "WorkloadIdentity", "serviceAccountRef": {"name": "app"}}),
    );
    provider["azurekv"]
        .as_object_mut()
        .unwrap()
        .remove("tenantId");
    ns.create_secret_store("store", provider.clone())
        .await
        .unwrap();
    // The client id twice (annotation and authSecretRef.clientId) is refused, as ESO does.
    ns.create_secret("azure-wi", &[("client-id", client_id.as_str())])
        .await
        .unwrap();
    let mut both = provider;
    both["azurekv"]["authSecretRef"] =
        json!({"clientId": {"name": "azure-wi", "key": "client-id"}});
    ns.create_secret_store("both", both).await.unwrap();
    let agent = RunningAgent::start_with(agent_args(&env, ns.name()))
        .await
        .unwrap();
    store_ready(&ns, "store", "True").await;
    let twice = store_ready(&ns, "both", "False").await;
    assert!(twice.message.contains("set one"), "{}", twice.message);
    ns.create_external_secret("wi", reading("store", &name, None, "1s"))
        .await
        .unwrap();
    ns.wait_for_secret("wi", "value", b"federated-value")
        .await
        .unwrap();
    vault.put(&name, "federated-second", &BTreeMap::new()).await;
    ns.wait_for_secret("wi", "value", b"federated-second")
        .await
        .unwrap();
    agent.stop().await.unwrap();
    let stats = vault.stats().await;
    assert_eq!(counter(&stats, "tokens_issued", &client_id), 1, "{stats}");
    assert_eq!(counter(&stats, "token_failures", &client_id), 0, "{stats}");
}

/// The agent as a process with exactly the deployed RBAC (a bound token of its ServiceAccount):
/// a service principal's Secret and a workload identity's ServiceAccount token are all it
/// needs, and it reads through both.
#[tokio::test]
async fn service_principal_and_workload_identity_work_with_exactly_the_deployed_rbac() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let vault = Vault::new(&env);
    let ns = TestNamespace::create(&env, "es-azrbac").await.unwrap();
    crate::rbac::install_rbac(&ns, |_, _| {}).await;
    let name = unique(ns.name());
    vault.put(&name, "rbac-value", &BTreeMap::new()).await;
    let (sp, sp_secret) = new_principal(&vault, "rbac-sp", json!([name])).await;
    create_sp_secret(&ns, &sp, &sp_secret).await;
    let wi = unique("rbac-wi");
    let pem =
        std::fs::read_to_string(format!("{}/pki/sa.pub", env.var("REALENV_DIR").unwrap())).unwrap();
    vault
        .principal(
            &wi,
            json!({"tenant": vault.tenant(), "read": [name],
                   "federated": [{"issuer": "https://kubernetes.default.svc.cluster.local",
                                  "subject": format!("system:serviceaccount:{}:app", ns.name()),
                                  "pem": pem}]}),
        )
        .await;
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("app".into()),
            annotations: Some(BTreeMap::from([(
                "azure.workload.identity/client-id".into(),
                wi.clone(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    ns.api::<ServiceAccount>()
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let url = env.var("AZURE_KEYVAULT_URL").unwrap();
    ns.create_secret_store("sp", azure_provider(&env, url, service_principal()))
        .await
        .unwrap();
    ns.create_secret_store(
        "wi",
        azure_provider(
            &env,
            url,
            json!({"authType": "WorkloadIdentity", "serviceAccountRef": {"name": "app"}}),
        ),
    )
    .await
    .unwrap();
    for store in ["sp", "wi"] {
        ns.create_external_secret(store, reading(store, &name, None, "1h"))
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let token = ns.service_account_token("mooring").await.unwrap();
    let kubeconfig = mooring_e2e::token_kubeconfig(&env, &token, dir.path()).unwrap();
    let ca = env.var("AZURE_KEYVAULT_CA").unwrap();
    let agent = mooring_e2e::AgentProcess::start(&kubeconfig, ns.name(), &["--azure-ca-file", ca])
        .await
        .unwrap();
    ns.wait_for_secret("sp", "value", b"rbac-value")
        .await
        .unwrap();
    ns.wait_for_secret("wi", "value", b"rbac-value")
        .await
        .unwrap();
    store_ready(&ns, "sp", "True").await;
    store_ready(&ns, "wi", "True").await;
    let log = agent.stop().await.unwrap();
    assert!(
        !log.contains(&sp_secret),
        "the client secret is in the agent's log"
    );
    assert!(!log.contains("rbac-value"), "a value is in the agent's log");
}

/// Managed identity over IMDS (on loopback, by `--azure-imds-endpoint`): a user-assigned
/// identity by its client id, and the system-assigned one, from ClusterSecretStores; a
/// namespace's SecretStore may not use the agent's own identity.
#[tokio::test]
async fn managed_identity_reads_through_imds_from_cluster_secret_stores_only() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let vault = Vault::new(&env);
    let ns = TestNamespace::create(&env, "es-azmi").await.unwrap();
    let name = unique(ns.name());
    vault.put(&name, "managed-value", &BTreeMap::new()).await;
    let identity = unique("mi");
    vault
        .principal(
            &identity,
            json!({"tenant": vault.tenant(), "managed_identity": true, "read": [name]}),
        )
        .await;
    let url = env.var("AZURE_KEYVAULT_URL").unwrap();
    let stores: Api<ClusterSecretStore> = Api::all(ns.client());
    let label = ("e2e.mooring.dev/azure-mi", ns.name());
    let mut created = Vec::new();
    for (suffix, auth) in [
        (
            "user",
            json!({"authType": "ManagedIdentity", "identityId": identity}),
        ),
        ("system", json!({"authType": "ManagedIdentity"})),
    ] {
        let css_name = format!("e2e-{}-{suffix}", ns.name());
        let css: ClusterSecretStore = serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "ClusterSecretStore",
            "metadata": {"name": css_name, "labels": {label.0: label.1}},
            "spec": {"provider": azure_provider(&env, url, auth)},
        }))
        .unwrap();
        stores.create(&PostParams::default(), &css).await.unwrap();
        ns.create_external_secret(
            suffix,
            json!({"secretStoreRef": {"name": css_name, "kind": "ClusterSecretStore"},
                   "refreshInterval": "1h",
                   "data": [{"secretKey": "value", "remoteRef": {"key": name}}]}),
        )
        .await
        .unwrap();
        created.push(css_name);
    }
    ns.create_secret_store(
        "namespaced",
        azure_provider(&env, url, json!({"authType": "ManagedIdentity"})),
    )
    .await
    .unwrap();
    let mut args = agent_args(&env, ns.name());
    args.cluster_secret_store_selector = Some(format!("{}={}", label.0, label.1));
    let agent = RunningAgent::start_with(args).await.unwrap();
    for css_name in &created {
        wait_for_store_ready(&stores, css_name, |c| c.reason == "Valid")
            .await
            .unwrap();
    }
    ns.wait_for_secret("user", "value", b"managed-value")
        .await
        .unwrap();
    ns.wait_for_secret("system", "value", b"managed-value")
        .await
        .unwrap();
    let refused = store_ready(&ns, "namespaced", "False").await;
    assert!(
        refused.message.contains("only a ClusterSecretStore"),
        "{}",
        refused.message
    );
    agent.stop().await.unwrap();
    for css_name in &created {
        let _ = stores.delete(css_name, &Default::default()).await;
    }
    let stats = vault.stats().await;
    assert_eq!(counter(&stats, "tokens_issued", &identity), 1, "{stats}");
}

/// A ClusterSecretStore whose credentials live in one namespace, used from two namespaces (one
/// agent each; only the first validates the store).
#[tokio::test]
async fn a_cluster_secret_store_serves_two_namespaces() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let vault = Vault::new(&env);
    let first = TestNamespace::create(&env, "es-azcss").await.unwrap();
    let second = TestNamespace::create(&env, "es-azcss").await.unwrap();
    let name = unique(first.name());
    vault.put(&name, "cluster-value", &BTreeMap::new()).await;
    let (client_id, secret) = new_principal(&vault, "css", json!([name])).await;
    create_sp_secret(&first, &client_id, &secret).await;
    let css_name = format!("e2e-{}", first.name());
    let label = format!("e2e.mooring.dev/azure-css={}", first.name());
    let mut auth = service_principal();
    for key in ["clientId", "clientSecret"] {
        auth["authSecretRef"][key]["namespace"] = json!(first.name());
    }
    let css: ClusterSecretStore = serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ClusterSecretStore",
        "metadata": {"name": css_name, "labels": {"e2e.mooring.dev/azure-css": first.name()}},
        "spec": {"provider": azure_provider(&env, env.var("AZURE_KEYVAULT_URL").unwrap(), auth)},
    }))
    .unwrap();
    let stores: Api<ClusterSecretStore> = Api::all(first.client());
    stores.create(&PostParams::default(), &css).await.unwrap();
    let mut first_args = agent_args(&env, first.name());
    first_args.cluster_secret_store_selector = Some(label);
    let first_agent = RunningAgent::start_with(first_args).await.unwrap();
    let second_agent = RunningAgent::start_with(agent_args(&env, second.name()))
        .await
        .unwrap();
    wait_for_store_ready(&stores, &css_name, |c| c.reason == "Valid")
        .await
        .unwrap();
    for ns in [&first, &second] {
        ns.create_external_secret(
            "shared",
            json!({"secretStoreRef": {"name": css_name, "kind": "ClusterSecretStore"},
                   "refreshInterval": "1h",
                   "data": [{"secretKey": "value", "remoteRef": {"key": name}}]}),
        )
        .await
        .unwrap();
    }
    first
        .wait_for_secret("shared", "value", b"cluster-value")
        .await
        .unwrap();
    second
        .wait_for_secret("shared", "value", b"cluster-value")
        .await
        .unwrap();
    first_agent.stop().await.unwrap();
    second_agent.stop().await.unwrap();
    let _ = stores.delete(&css_name, &Default::default()).await;
}

/// 100 ExternalSecrets over 20 secrets, one principal, three refresh cycles: one token, and
/// the reads the server counted (printed for the notes).
#[tokio::test]
async fn one_token_per_principal_across_100_external_secrets_and_refreshes() {
    const SECRETS: usize = 20;
    const EXTERNAL_SECRETS: usize = 100;
    const CYCLES: u64 = 3;
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let vault = Vault::new(&env);
    let ns = TestNamespace::create(&env, "es-aztok").await.unwrap();
    let prefix = unique(ns.name());
    let names: Vec<String> = (0..SECRETS).map(|i| format!("{prefix}-s{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        vault
            .put(name, &format!("value-{i}"), &BTreeMap::new())
            .await;
    }
    let (client_id, secret) = new_principal(&vault, "many", json!(names)).await;
    create_sp_secret(&ns, &client_id, &secret).await;
    ns.create_secret_store(
        "store",
        azure_provider(
            &env,
            env.var("AZURE_KEYVAULT_URL").unwrap(),
            service_principal(),
        ),
    )
    .await
    .unwrap();
    let agent = RunningAgent::start_with(agent_args(&env, ns.name()))
        .await
        .unwrap();
    store_ready(&ns, "store", "True").await;
    let started = std::time::Instant::now();
    for i in 0..EXTERNAL_SECRETS {
        ns.create_external_secret(
            &format!("es-{i}"),
            reading("store", &names[i % SECRETS], None, "10s"),
        )
        .await
        .unwrap();
    }
    for i in 0..EXTERNAL_SECRETS {
        ns.wait_for_secret(
            &format!("es-{i}"),
            "value",
            format!("value-{}", i % SECRETS).as_bytes(),
        )
        .await
        .unwrap();
    }
    // The first read plus `CYCLES` refreshes of every secret.
    wait_for(
        "every secret read through three refreshes",
        Duration::from_secs(120),
        || async {
            let stats = vault.stats().await;
            names
                .iter()
                .all(|n| counter(&stats, "secret_reads", n) > CYCLES)
                .then_some(())
        },
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    agent.stop().await.unwrap();
    let stats = vault.stats().await;
    let reads: u64 = names
        .iter()
        .map(|n| counter(&stats, "secret_reads", n))
        .sum();
    let tokens = counter(&stats, "token_requests", &client_id);
    println!(
        "azure token reuse: {EXTERNAL_SECRETS} ExternalSecrets over {SECRETS} secrets, {:.0} s: token_requests={tokens} tokens_issued={} secret_reads={reads} (per secret {:?})",
        elapsed.as_secs_f64(),
        counter(&stats, "tokens_issued", &client_id),
        names
            .iter()
            .map(|n| counter(&stats, "secret_reads", n))
            .collect::<Vec<_>>()
    );
    assert_eq!(tokens, 1, "one token request for the principal: {stats}");
    // Shared reads: one read per secret per refresh window, not one per ExternalSecret.
    assert!(
        reads < (EXTERNAL_SECRETS as u64) * (CYCLES + 1),
        "{reads} reads"
    );
}

/// Writes through the admin API for the conformance suite: names are flat (`scope-name`).
struct KeyVaultSeed {
    vault: Vault,
    scope: String,
}

#[async_trait::async_trait]
impl Seed for KeyVaultSeed {
    fn scope(&self) -> &str {
        &self.scope
    }

    async fn write(
        &self,
        key: &str,
        document: &Value,
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<String>, String> {
        let version = self.vault.put(key, &document.to_string(), tags).await;
        Ok(Some(version))
    }

    fn supports_tags(&self) -> bool {
        true
    }

    fn separator(&self) -> &str {
        "-"
    }
}

#[tokio::test]
async fn azure_key_vault_passes_the_conformance_suite() {
    use mooring_provider_azure::{AuthType, AzureConfig, AzureKeyVaultProvider, Cloud};
    let env = RealEnv::load().unwrap();
    let seed = KeyVaultSeed {
        vault: Vault::new(&env),
        scope: unique("conformance"),
    };
    let provider = AzureKeyVaultProvider::new(AzureConfig {
        vault_url: env.var("AZURE_KEYVAULT_URL").unwrap().into(),
        tenant_id: Some(env.var("AZURE_TENANT_ID").unwrap().into()),
        auth: AuthType::ServicePrincipal {
            client_id: env.var("AZURE_CLIENT_ID").unwrap().into(),
            client_secret: env.var("AZURE_CLIENT_SECRET").unwrap().to_string().into(),
        },
        cloud: Cloud::Custom {
            authority_host: env.var("AZURE_AUTHORITY_HOST").unwrap().into(),
            resource: None,
        },
        trusted_roots: Some(std::fs::read(env.var("AZURE_KEYVAULT_CA").unwrap()).unwrap()),
    })
    .unwrap();
    let report = conformance::run(&provider, &seed).await;
    let skipped: Vec<&str> = report.skipped.iter().map(|(check, _)| *check).collect();
    let passed = report
        .into_result()
        .unwrap_or_else(|failures| panic!("conformance failures:\n{failures}"));
    assert_eq!(passed, conformance::CHECKS);
    assert!(skipped.is_empty(), "{skipped:?}");
}

/// A provider for `client_id`/`secret` straight against the test server (no agent).
fn direct_provider(
    env: &RealEnv,
    client_id: &str,
    secret: &str,
) -> mooring_provider_azure::AzureKeyVaultProvider {
    use mooring_provider_azure::{AuthType, AzureConfig, AzureKeyVaultProvider, Cloud};
    AzureKeyVaultProvider::new(AzureConfig {
        vault_url: env.var("AZURE_KEYVAULT_URL").unwrap().into(),
        tenant_id: Some(env.var("AZURE_TENANT_ID").unwrap().into()),
        auth: AuthType::ServicePrincipal {
            client_id: client_id.into(),
            client_secret: secret.to_string().into(),
        },
        cloud: Cloud::Custom {
            authority_host: env.var("AZURE_AUTHORITY_HOST").unwrap().into(),
            resource: None,
        },
        trusted_roots: Some(std::fs::read(env.var("AZURE_KEYVAULT_CA").unwrap()).unwrap()),
    })
    .unwrap()
}

/// Short-lived tokens (4 s) are renewed before they expire (at half their lifetime): reads
/// keep succeeding across several lifetimes, with a new token per lifetime, not per read.
#[tokio::test]
async fn short_tokens_are_renewed_before_they_expire() {
    use mooring_provider::{RemoteRef, SecretProvider};
    let env = RealEnv::load().unwrap();
    let vault = Vault::new(&env);
    let name = unique("renewal");
    vault.put(&name, "renewed", &BTreeMap::new()).await;
    let client_id = unique("short");
    let secret = unique("secret");
    vault
        .principal(
            &client_id,
            json!({"secret": secret, "tenant": vault.tenant(), "read": [name], "token_lifetime": 4}),
        )
        .await;
    let provider = direct_provider(&env, &client_id, &secret);
    let reads = std::sync::atomic::AtomicU64::new(0);
    wait_for("three tokens issued", Duration::from_secs(30), || async {
        let value = provider.get(&RemoteRef::key(&name)).await.unwrap();
        assert_eq!(value.expose(), b"renewed");
        reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stats = vault.stats().await;
        (counter(&stats, "tokens_issued", &client_id) >= 3).then_some(())
    })
    .await
    .unwrap();
    let stats = vault.stats().await;
    let reads = reads.into_inner();
    assert_eq!(counter(&stats, "token_failures", &client_id), 0, "{stats}");
    assert!(
        counter(&stats, "tokens_issued", &client_id) * 2 < reads,
        "{reads} reads, {stats}"
    );
}

/// `find` follows `nextLink` over every page (60 matches; the server pages by 25).
#[tokio::test]
async fn find_reads_every_page() {
    use mooring_provider::{FindQuery, SecretProvider};
    let env = RealEnv::load().unwrap();
    let vault = Vault::new(&env);
    let prefix = unique("paged");
    let tags = BTreeMap::from([("run".to_string(), prefix.clone())]);
    for i in 0..60 {
        vault
            .put(&format!("{prefix}-{i}"), &format!("v{i}"), &tags)
            .await;
    }
    let provider = direct_provider(
        &env,
        env.var("AZURE_CLIENT_ID").unwrap(),
        env.var("AZURE_CLIENT_SECRET").unwrap(),
    );
    let before = vault.stats().await["secret_lists"].as_u64().unwrap_or(0);
    let found = provider
        .find(&FindQuery::new(None, None, tags).unwrap())
        .await
        .unwrap();
    let after = vault.stats().await["secret_lists"].as_u64().unwrap_or(0);
    assert_eq!(found.len(), 60);
    assert_eq!(found[&format!("{prefix}-7")].expose(), b"v7");
    assert!(after - before >= 3, "{} list pages", after - before);
}
