//! `mooring demo`: the cluster side of `./dev demo`.
//!
//! With a running agent (started by `./dev demo`), it seeds a local Git repository with the seed
//! article's layout (`bootstrap/root-app.yaml` → `argocd-apps/` → `apps/platform-api/{base,
//! overlays}`) plus a SealedSecret sealed by `kubeseal` against the agent's certificate and an
//! ExternalSecret reading OpenBao, applies the root Application, waits until everything is
//! synced and prints a status table. Secret values are never printed: the table shows key names.
//!
//! Each step is a public function so that the e2e test runs the same code in a test namespace.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use mooring_crds::application::{Application, SyncState};

use crate::cli::DemoArgs;
use crate::{cluster, install};

/// API groups whose CRDs mooring serves.
const GROUPS: [&str; 3] = ["mooring.dev", "bitnami.com", "external-secrets.io"];

/// Field manager of what the demo applies itself (as a user's `kubectl apply` would).
const DEMO_MANAGER: &str = "mooring-demo";

/// Name of the SealedSecret (and of its Secret) in the repository.
pub const SEALED_NAME: &str = "platform-api-credentials";
/// Name of the ExternalSecret (and of its Secret) in the repository.
pub const EXTERNAL_NAME: &str = "platform-api-db";
/// Name of the Secret holding the OpenBao token the SecretStore authenticates with.
pub const TOKEN_SECRET: &str = "openbao-token";
/// The Applications the demo creates: the root (app of apps) and its child.
pub const APPLICATIONS: [&str; 2] = ["root", "platform-api"];

/// Why the demo failed. Messages never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster configuration could not be loaded.
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    /// The CRDs could not be installed.
    #[error(transparent)]
    Install(#[from] install::Error),
    /// A Kubernetes request failed.
    #[error("failed to {action}")]
    Kube {
        /// What was being done.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A file of the demo repository could not be read or written.
    #[error("failed to {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A command (git, kubeseal) failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line, without secret input.
        command: String,
        /// Its exit status and error output.
        detail: String,
    },
    /// An HTTP request (agent, OpenBao) failed.
    #[error("failed to {action}: {detail}")]
    Http {
        /// What was being done.
        action: String,
        /// The status or transport error (never a response body that could hold a secret).
        detail: String,
    },
    /// A file of the repository does not parse.
    #[error("{path} is not a valid manifest: {detail}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// Where the demo's pieces are. (No `Debug`: it holds OpenBao's token.)
#[derive(Clone)]
pub struct Demo {
    /// The cluster.
    pub client: Client,
    /// Namespace of the Applications, the synced objects and the secrets.
    pub namespace: String,
    /// Directory of the demo; the repository is `repo/` inside it.
    pub dir: PathBuf,
    /// Base URL of the running agent's HTTP port (`/v1/cert.pem`, `/v1/verify`).
    pub agent_url: String,
    /// The `kubeseal` binary that seals the SealedSecret.
    pub kubeseal: PathBuf,
    /// OpenBao's address.
    pub vault_addr: String,
    /// OpenBao's (dev root) token; never printed.
    pub vault_token: String,
    /// Path under the KV v2 mount `secret/` of the value the ExternalSecret reads.
    pub vault_path: String,
}

/// `mooring demo`: CRDs only (before the agent starts), status only, or the whole demo.
pub async fn run(args: DemoArgs) -> Result<(), Error> {
    let client = cluster::client(args.cluster.kubeconfig.as_deref()).await?;
    if args.crds_only {
        return install_crds(&client, &args.agent_namespace).await;
    }
    let demo = Demo {
        client,
        namespace: args.namespace.clone(),
        dir: args.dir.clone(),
        agent_url: args.agent_url.trim_end_matches('/').to_owned(),
        kubeseal: args.kubeseal.clone(),
        vault_addr: args.vault_addr.clone().unwrap_or_default(),
        vault_token: args.vault_token.clone().unwrap_or_default(),
        vault_path: format!("mooring-demo/{}/db", args.namespace),
    };
    if !args.status {
        if demo.vault_addr.is_empty() || demo.vault_token.is_empty() {
            return Err(Error::Http {
                action: "reach OpenBao".into(),
                detail: "--vault-addr and --vault-token (VAULT_ADDR, VAULT_TOKEN) are required"
                    .into(),
            });
        }
        println!("Waiting for the agent at {} ...", demo.agent_url);
        demo.wait_for_agent(Duration::from_secs(180)).await?;
        demo.prepare_cluster().await?;
        let head = demo.prepare_repo().await?;
        println!(
            "Repository {} at {} (file:// URL {}).",
            demo.repo().display(),
            short(&head),
            demo.repo_url()?
        );
        if args.agent_namespace != args.namespace {
            admit_namespace(&demo.client, &args.agent_namespace, &args.namespace).await?;
            println!(
                "Applied AppProject default in {} admitting Applications of namespace {}.",
                args.agent_namespace, args.namespace
            );
        }
        demo.bootstrap().await?;
        println!("Applied bootstrap/root-app.yaml; waiting until everything is synced ...");
        let synced = demo
            .wait_synced(&head, Duration::from_secs(args.timeout_seconds))
            .await;
        if let Err(error) = synced {
            // Show how far it got; the agent's log and the Applications' conditions say why.
            if let Ok(status) = demo.status().await {
                print!("{status}");
            }
            return Err(error);
        }
    }
    println!();
    print!("{}", demo.status().await?);
    Ok(())
}

/// The AppProject `default` in the agent's namespace, as an Argo CD user enables "apps in any
/// namespace": everything the built-in default allows, for Applications of `namespace` too
/// (without it the agent ignores Applications outside its own namespace).
pub async fn admit_namespace(
    client: &Client,
    agent_namespace: &str,
    namespace: &str,
) -> Result<(), Error> {
    let project: mooring_crds::app_project::AppProject =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "mooring.dev/v1alpha1", "kind": "AppProject",
            "metadata": {"name": "default", "namespace": agent_namespace},
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": "*"}],
                "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
                "sourceNamespaces": [namespace],
            },
        }))
        .map_err(|e| Error::Manifest {
            path: PathBuf::from("AppProject default"),
            detail: e.to_string(),
        })?;
    Api::<mooring_crds::app_project::AppProject>::namespaced(client.clone(), agent_namespace)
        .patch(
            "default",
            &PatchParams::apply(DEMO_MANAGER).force(),
            &Patch::Apply(&project),
        )
        .await
        .map_err(|source| Error::Kube {
            action: format!("apply AppProject {agent_namespace}/default"),
            source,
        })?;
    Ok(())
}

/// Installs the CRDs and the agent's namespace, and lists the CRDs.
async fn install_crds(client: &Client, agent_namespace: &str) -> Result<(), Error> {
    let installed = install::apply_crds(client, Duration::from_secs(60)).await?;
    apply_namespace(client, agent_namespace).await?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crds = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            action: "list CustomResourceDefinitions".into(),
            source,
        })?;
    let ours: Vec<String> = crds
        .items
        .iter()
        .filter(|crd| GROUPS.contains(&crd.spec.group.as_str()))
        .map(|crd| crd.name_any())
        .collect();
    println!(
        "Installed {} CRD(s) by server-side apply: {}",
        installed.len(),
        ours.join(", ")
    );
    Ok(())
}

async fn apply_namespace(client: &Client, name: &str) -> Result<(), Error> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply(DEMO_MANAGER).force(),
            &Patch::Apply(&namespace),
        )
        .await
        .map_err(|source| Error::Kube {
            action: format!("apply Namespace {name}"),
            source,
        })?;
    Ok(())
}

/// The first 7 characters of a commit SHA.
pub fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

fn random_hex(bytes: usize) -> String {
    use rand::Rng;
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

fn run_command(command: &mut std::process::Command, stdin: Option<&[u8]>) -> Result<String, Error> {
    use std::io::Write;
    let shown = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let failed = |detail: String| Error::Command {
        command: shown.clone(),
        detail,
    };
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().map_err(|e| failed(e.to_string()))?;
    // The pipe is closed at the end of this statement, so the command sees end of input.
    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
        pipe.write_all(input).map_err(|e| failed(e.to_string()))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        return Err(failed(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl Demo {
    /// The repository's work tree (users edit and commit here).
    pub fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }

    /// The `file://` URL the Applications fetch.
    pub fn repo_url(&self) -> Result<String, Error> {
        let path = self.repo();
        let absolute = std::fs::canonicalize(&path).map_err(|source| Error::Io {
            action: "resolve",
            path,
            source,
        })?;
        Ok(format!("file://{}", absolute.display()))
    }

    /// Runs git in the repository.
    pub fn git(&self, args: &[&str]) -> Result<String, Error> {
        run_command(
            std::process::Command::new("git")
                .current_dir(self.repo())
                .args([
                    "-c",
                    "user.name=mooring demo",
                    "-c",
                    "user.email=demo@mooring.invalid",
                    "-c",
                    "commit.gpgsign=false",
                ])
                .args(args),
            None,
        )
    }

    /// Writes `text` to `path` inside the repository.
    pub fn write(&self, path: &str, text: &str) -> Result<(), Error> {
        let file = self.repo().join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                action: "create",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&file, text).map_err(|source| Error::Io {
            action: "write",
            path: file,
            source,
        })
    }

    /// Commits everything if anything changed; returns HEAD.
    pub fn commit(&self, message: &str) -> Result<String, Error> {
        self.git(&["add", "-A"])?;
        if !self.git(&["status", "--porcelain"])?.trim().is_empty() {
            self.git(&["commit", "-q", "-m", message])?;
        }
        Ok(self.git(&["rev-parse", "HEAD"])?.trim().to_owned())
    }

    async fn http(
        &self,
        request: reqwest::RequestBuilder,
        action: &str,
    ) -> Result<reqwest::Response, Error> {
        request.send().await.map_err(|e| Error::Http {
            action: action.to_owned(),
            detail: e.to_string(),
        })
    }

    /// Waits until the agent serves its sealing certificate.
    pub async fn wait_for_agent(&self, timeout: Duration) -> Result<(), Error> {
        let url = format!("{}/readyz", self.agent_url);
        let client = reqwest::Client::new();
        poll(timeout, &format!("the agent to be ready at {url}"), || {
            let request = client.get(&url).send();
            async move {
                request
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await
    }

    /// Creates the namespace, the Secret with OpenBao's token (for the SecretStore's token
    /// auth; not in Git) and, unless it is there, the value the ExternalSecret reads.
    pub async fn prepare_cluster(&self) -> Result<(), Error> {
        apply_namespace(&self.client, &self.namespace).await?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(TOKEN_SECRET.into()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            string_data: Some(BTreeMap::from([(
                "token".to_owned(),
                self.vault_token.clone(),
            )])),
            ..Default::default()
        };
        Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .patch(
                TOKEN_SECRET,
                &PatchParams::apply(DEMO_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            .map_err(|source| Error::Kube {
                action: format!("apply Secret {}/{TOKEN_SECRET}", self.namespace),
                source,
            })?;

        let url = format!("{}/v1/secret/data/{}", self.vault_addr, self.vault_path);
        let client = reqwest::Client::new();
        let action = format!("read secret/{} from OpenBao", self.vault_path);
        let existing = self
            .http(
                client.get(&url).header("X-Vault-Token", &self.vault_token),
                &action,
            )
            .await?;
        if existing.status().is_success() {
            return Ok(());
        }
        let action = format!("write secret/{} to OpenBao", self.vault_path);
        let body = serde_json::json!({"data": {
            "username": "platform-api",
            "password": random_hex(16),
        }});
        let written = self
            .http(
                client
                    .post(&url)
                    .header("X-Vault-Token", &self.vault_token)
                    .json(&body),
                &action,
            )
            .await?;
        if !written.status().is_success() {
            return Err(Error::Http {
                action,
                detail: written.status().to_string(),
            });
        }
        Ok(())
    }

    /// Creates the repository with the seed's layout (first run), or reuses it: the SecretStore
    /// is pointed at this OpenBao and the SealedSecret is sealed again if this agent cannot
    /// decrypt it (a new cluster). The user's own edits are kept. Returns HEAD.
    pub async fn prepare_repo(&self) -> Result<String, Error> {
        let repo = self.repo();
        let fresh = !repo.join(".git").exists();
        if fresh {
            std::fs::create_dir_all(&repo).map_err(|source| Error::Io {
                action: "create",
                path: repo.clone(),
                source,
            })?;
            self.git(&["init", "-q", "-b", "main"])?;
            self.write_layout()?;
        }
        self.write_secret_store()?;
        let sealed = "apps/platform-api/base/sealedsecret.yaml";
        if fresh || !self.verifies(sealed).await? {
            self.seal(sealed).await?;
        }
        let message = if fresh {
            "platform-api: seed layout, a SealedSecret and an ExternalSecret"
        } else {
            "demo: point the SecretStore at this OpenBao, reseal for this cluster"
        };
        self.commit(message)
    }

    fn application(&self, name: &str, path: &str) -> Result<String, Error> {
        let url = self.repo_url()?;
        let ns = &self.namespace;
        Ok(format!(
            "apiVersion: mooring.dev/v1alpha1
kind: Application
metadata:
  name: {name}
  namespace: {ns}
spec:
  project: default
  source:
    repoURL: {url}
    targetRevision: main
    path: {path}
  destination:
    server: https://kubernetes.default.svc
    namespace: {ns}
  syncPolicy:
    automated:
      prune: true
      selfHeal: true
    syncOptions:
      - CreateNamespace=true
"
        ))
    }

    fn write_layout(&self) -> Result<(), Error> {
        self.write(
            "README.md",
            "# mooring demo repository\n\nEdit, `git commit`, and the agent syncs it: try\n\
             `replicas` in `apps/platform-api/overlays/staging/replicas.yaml`.\n",
        )?;
        self.write(
            "bootstrap/root-app.yaml",
            &self.application("root", "argocd-apps")?,
        )?;
        self.write(
            "argocd-apps/platform-api.yaml",
            &self.application("platform-api", "apps/platform-api/overlays/staging")?,
        )?;
        self.write(
            "apps/platform-api/base/kustomization.yaml",
            "resources:\n  - deployment.yaml\n  - service.yaml\n  - configmap.yaml\n  \
             - sealedsecret.yaml\n  - secretstore.yaml\n  - externalsecret.yaml\n",
        )?;
        self.write(
            "apps/platform-api/base/deployment.yaml",
            &format!(
                "apiVersion: apps/v1
kind: Deployment
metadata:
  name: platform-api
spec:
  replicas: 1
  selector:
    matchLabels: {{app: platform-api}}
  template:
    metadata:
      labels: {{app: platform-api}}
    spec:
      containers:
        - name: api
          image: registry.invalid/platform-api:1.0.0
          ports: [{{containerPort: 8080}}]
          envFrom:
            - configMapRef: {{name: platform-api-config}}
            - secretRef: {{name: {SEALED_NAME}}}
            - secretRef: {{name: {EXTERNAL_NAME}}}
"
            ),
        )?;
        self.write(
            "apps/platform-api/base/service.yaml",
            "apiVersion: v1
kind: Service
metadata:
  name: platform-api
spec:
  selector: {app: platform-api}
  ports: [{port: 80, targetPort: 8080}]
",
        )?;
        self.write(
            "apps/platform-api/base/configmap.yaml",
            "apiVersion: v1
kind: ConfigMap
metadata:
  name: platform-api-config
data:
  LOG_LEVEL: info
",
        )?;
        self.write(
            "apps/platform-api/base/externalsecret.yaml",
            &format!(
                "apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: {EXTERNAL_NAME}
spec:
  refreshInterval: 1m
  secretStoreRef: {{name: openbao, kind: SecretStore}}
  target: {{name: {EXTERNAL_NAME}}}
  dataFrom:
    - extract: {{key: {}}}
",
                self.vault_path
            ),
        )?;
        // Staging runs one pod (on the realenv's kwok Nodes, so its Application turns Healthy
        // once the pod is Ready); production would run two.
        for (overlay, replicas) in [("staging", 1), ("production", 2)] {
            self.write(
                &format!("apps/platform-api/overlays/{overlay}/kustomization.yaml"),
                "resources:\n  - ../../base\npatches:\n  - path: replicas.yaml\n",
            )?;
            self.write(
                &format!("apps/platform-api/overlays/{overlay}/replicas.yaml"),
                &format!(
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: platform-api\n\
                     spec:\n  replicas: {replicas}\n"
                ),
            )?;
        }
        Ok(())
    }

    /// The SecretStore, pointed at this OpenBao (its address changes with each `./dev up`).
    fn write_secret_store(&self) -> Result<(), Error> {
        self.write(
            "apps/platform-api/base/secretstore.yaml",
            &format!(
                "apiVersion: external-secrets.io/v1
kind: SecretStore
metadata:
  name: openbao
spec:
  provider:
    vault:
      server: {}
      path: secret
      version: v2
      auth:
        # A Secret the demo created (not in Git) holding OpenBao's dev root token.
        tokenSecretRef: {{name: {TOKEN_SECRET}, key: token}}
",
                self.vault_addr
            ),
        )
    }

    /// Seals a fresh Secret with `kubeseal --cert` into `path`, against the certificate the
    /// agent serves at `/v1/cert.pem` (fetched first, so that kubeseal needs no network).
    async fn seal(&self, path: &str) -> Result<(), Error> {
        let url = format!("{}/v1/cert.pem", self.agent_url);
        let action = format!("fetch {url}");
        let response = self.http(reqwest::Client::new().get(&url), &action).await?;
        if !response.status().is_success() {
            return Err(Error::Http {
                action,
                detail: response.status().to_string(),
            });
        }
        let pem = response.bytes().await.map_err(|e| Error::Http {
            action,
            detail: e.to_string(),
        })?;
        let cert = self.dir.join("cert.pem");
        std::fs::write(&cert, &pem).map_err(|source| Error::Io {
            action: "write",
            path: cert.clone(),
            source,
        })?;
        let secret = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SEALED_NAME, "namespace": self.namespace},
            "type": "Opaque",
            "stringData": {"API_KEY": random_hex(16)},
        });
        let output = self.repo().join(path);
        run_command(
            std::process::Command::new(&self.kubeseal)
                .arg("--cert")
                .arg(&cert)
                .args(["--format", "yaml", "--sealed-secret-file"])
                .arg(&output),
            Some(secret.to_string().as_bytes()),
        )?;
        Ok(())
    }

    /// Whether the agent can decrypt the SealedSecret at `path` (`/v1/verify`).
    async fn verifies(&self, path: &str) -> Result<bool, Error> {
        let file = self.repo().join(path);
        let Ok(text) = std::fs::read_to_string(&file) else {
            return Ok(false);
        };
        let value: serde_json::Value =
            serde_saphyr::from_str(&text).map_err(|e| Error::Manifest {
                path: file.clone(),
                detail: e.to_string(),
            })?;
        let response = self
            .http(
                reqwest::Client::new()
                    .post(format!("{}/v1/verify", self.agent_url))
                    .json(&value),
                "verify the SealedSecret with the agent",
            )
            .await?;
        Ok(response.status().is_success())
    }

    /// Applies `bootstrap/root-app.yaml` from the repository, as `kubectl apply` would.
    pub async fn bootstrap(&self) -> Result<(), Error> {
        let file = self.repo().join("bootstrap/root-app.yaml");
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Io {
            action: "read",
            path: file.clone(),
            source,
        })?;
        let app: Application = serde_saphyr::from_str(&text).map_err(|e| Error::Manifest {
            path: file.clone(),
            detail: e.to_string(),
        })?;
        let name = app.name_any();
        Api::<Application>::namespaced(self.client.clone(), &self.namespace)
            .patch(
                &name,
                &PatchParams::apply(DEMO_MANAGER).force(),
                &Patch::Apply(&app),
            )
            .await
            .map_err(|source| Error::Kube {
                action: format!("apply Application {}/{name}", self.namespace),
                source,
            })?;
        Ok(())
    }

    /// Waits until both Applications are Synced at `head`, the root's health has caught up with
    /// its child's, and both Secrets exist.
    pub async fn wait_synced(&self, head: &str, timeout: Duration) -> Result<(), Error> {
        let this = self;
        poll(
            timeout,
            &format!("root and platform-api Synced at {}", short(head)),
            move || async move {
                let status = this.status().await.ok()?;
                let apps = APPLICATIONS.iter().all(|name| {
                    status.applications.iter().any(|a| {
                        a.name == *name && a.sync == "Synced" && a.revision.as_deref() == Some(head)
                    })
                });
                let secrets = [SEALED_NAME, EXTERNAL_NAME]
                    .iter()
                    .all(|name| status.secrets.iter().any(|s| s.name == *name));
                // The root's health is its child's, rolled up a few seconds after the child's
                // own status changes: print the table once it has caught up.
                let health = |name: &str| {
                    status
                        .applications
                        .iter()
                        .find(|a| a.name == name)
                        .map(|a| a.health.clone())
                };
                let settled = health(APPLICATIONS[0]) == health(APPLICATIONS[1]);
                (apps && secrets && settled).then_some(())
            },
        )
        .await
    }

    /// The Applications and the Secrets created from SealedSecrets and ExternalSecrets.
    pub async fn status(&self) -> Result<Status, Error> {
        let apps = Api::<Application>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default())
            .await
            .map_err(|source| Error::Kube {
                action: format!("list Applications in {}", self.namespace),
                source,
            })?;
        let applications = apps
            .items
            .iter()
            .map(|app| {
                let status = app.status.clone().unwrap_or_default();
                let sync = status.sync.unwrap_or_default();
                AppRow {
                    name: app.name_any(),
                    sync: match sync.status {
                        SyncState::Synced => "Synced",
                        SyncState::OutOfSync => "OutOfSync",
                        SyncState::Unknown => "Unknown",
                    }
                    .to_owned(),
                    revision: sync.revision,
                    health: status
                        .health
                        .map(|h| format!("{:?}", h.status))
                        .unwrap_or_else(|| "Unknown".into()),
                }
            })
            .collect();
        let secrets = Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default())
            .await
            .map_err(|source| Error::Kube {
                action: format!("list Secrets in {}", self.namespace),
                source,
            })?;
        let secrets = secrets
            .items
            .iter()
            .filter_map(|secret| {
                let owner = secret
                    .owner_references()
                    .iter()
                    .find(|o| o.kind == "SealedSecret" || o.kind == "ExternalSecret")?;
                Some(SecretRow {
                    name: secret.name_any(),
                    from: format!("{}/{}", owner.kind, owner.name),
                    keys: secret
                        .data
                        .as_ref()
                        .map(|d| d.keys().cloned().collect())
                        .unwrap_or_default(),
                })
            })
            .collect();
        Ok(Status {
            applications,
            secrets,
        })
    }
}

/// Polls `check` every 500 ms until it returns `Some`, for at most `timeout`.
async fn poll<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(timeout, what.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One Application in the status table.
#[derive(Clone, Debug)]
pub struct AppRow {
    /// Its name.
    pub name: String,
    /// Synced, OutOfSync or Unknown.
    pub sync: String,
    /// The synced commit.
    pub revision: Option<String>,
    /// Its health state.
    pub health: String,
}

/// One Secret created by a SealedSecret or an ExternalSecret.
#[derive(Clone, Debug)]
pub struct SecretRow {
    /// Its name.
    pub name: String,
    /// `SealedSecret/<name>` or `ExternalSecret/<name>`.
    pub from: String,
    /// Its keys (never the values).
    pub keys: Vec<String>,
}

/// What the demo shows.
#[derive(Clone, Debug)]
pub struct Status {
    /// The Applications of the namespace.
    pub applications: Vec<AppRow>,
    /// The Secrets made from SealedSecrets and ExternalSecrets.
    pub secrets: Vec<SecretRow>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<16} {:<10} {:<9} HEALTH",
            "APPLICATION", "SYNC", "REVISION"
        )?;
        for app in &self.applications {
            writeln!(
                f,
                "{:<16} {:<10} {:<9} {}",
                app.name,
                app.sync,
                app.revision.as_deref().map(short).unwrap_or("-"),
                app.health
            )?;
        }
        writeln!(f)?;
        writeln!(f, "{:<26} {:<40} KEYS (values not shown)", "SECRET", "FROM")?;
        for secret in &self.secrets {
            writeln!(
                f,
                "{:<26} {:<40} {}",
                secret.name,
                secret.from,
                secret.keys.join(",")
            )?;
        }
        Ok(())
    }
}
