//! A namespace per test, and what tests ask of the objects in it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Event, Namespace, Secret, ServiceAccount};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::config::Kubeconfig;
use kube::{Api, Client};

use crate::{RealEnv, wait_for};

/// A namespace of its own for one test; deletion is requested when it is dropped, even when
/// the test panics.
pub struct TestNamespace {
    name: String,
    client: Client,
    config: kube::Config,
}

impl TestNamespace {
    /// Creates `<prefix>-<random suffix>`, after making sure (once per test process) that
    /// mooring's CRDs are installed: a test must not depend on another having run first.
    pub async fn create(env: &RealEnv, prefix: &str) -> anyhow::Result<TestNamespace> {
        static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        CRDS.get_or_try_init(|| env.install_crds()).await?;
        let config = env.admin_config().await?;
        let client = Client::try_from(config.clone())?;
        let namespace = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                labels: Some(BTreeMap::from([("mooring.dev/e2e".into(), "true".into())])),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .context("failed to create the test namespace")?;
        let name = created
            .metadata
            .name
            .context("created namespace has no name")?;
        Ok(TestNamespace {
            name,
            client,
            config,
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An API for namespaced objects of type `K` in this namespace, as admin.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates ServiceAccount `name` in this namespace and returns a client authenticated as it
    /// with a bound token from the TokenRequest API. It has no permissions until a test grants them.
    pub async fn service_account_client(&self, name: &str) -> anyhow::Result<Client> {
        let accounts: Api<ServiceAccount> = self.api();
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        accounts
            .create(&PostParams::default(), &account)
            .await
            .with_context(|| format!("failed to create ServiceAccount {name}"))?;
        let token = self.service_account_token(name).await?;
        let mut config = self.config.clone();
        config.auth_info = Kubeconfig::from_yaml(&format!(
            "users:\n- name: sa\n  user:\n    token: {token}\n"
        ))?
        .auth_infos
        .remove(0)
        .auth_info
        .context("token kubeconfig has no user")?;
        Ok(Client::try_from(config)?)
    }

    /// Waits (at most 90 s) until Secret `name` holds `value` under `key`, and returns it.
    pub async fn wait_for_secret(
        &self,
        name: &str,
        key: &str,
        value: &[u8],
    ) -> anyhow::Result<Secret> {
        let secrets: Api<Secret> = self.api();
        wait_for(
            &format!("Secret {name} with {key}"),
            Duration::from_secs(90),
            || {
                let secrets = secrets.clone();
                async move {
                    let secret = secrets.get_opt(name).await.ok()??;
                    let found = secret.data.as_ref()?.get(key)?.0.as_slice() == value;
                    found.then_some(secret)
                }
            },
        )
        .await
    }

    /// Waits (at most 60 s) until SealedSecret `name` has a `Synced` condition with `status`
    /// for its current generation; returns the condition's (reason, message).
    pub async fn wait_for_synced(
        &self,
        name: &str,
        status: &str,
    ) -> anyhow::Result<(String, String)> {
        let api: Api<mooring_crds::sealed_secret::SealedSecret> = self.api();
        wait_for(
            &format!("SealedSecret {name} Synced={status}"),
            Duration::from_secs(60),
            || {
                let api = api.clone();
                async move {
                    let sealed = api.get(name).await.ok()?;
                    let current = sealed.status?;
                    let condition = current
                        .conditions
                        .into_iter()
                        .find(|c| c.type_ == "Synced")?;
                    (condition.status == status
                        && current.observed_generation == sealed.metadata.generation)
                        .then(|| {
                            (
                                condition.reason.unwrap_or_default(),
                                condition.message.unwrap_or_default(),
                            )
                        })
                }
            },
        )
        .await
    }

    /// Waits (at most `timeout`, described as `what`) until object `name` of kind `K` is gone.
    pub async fn wait_until_gone<K>(
        &self,
        what: &str,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<()>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + k8s_openapi::serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let api: Api<K> = self.api();
        wait_for(what, timeout, || async {
            api.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await
    }

    /// Waits (at most `timeout`, described as `what`) until an Event of this namespace is one
    /// `accept` takes; returns it.
    pub async fn wait_for_event(
        &self,
        what: &str,
        timeout: Duration,
        accept: impl Fn(&Event) -> bool,
    ) -> anyhow::Result<Event> {
        let events: Api<Event> = self.api();
        wait_for(what, timeout, || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|e| accept(e))
        })
        .await
    }

    /// Creates the Opaque Secret `name` holding `values` in this namespace.
    pub async fn create_secret(
        &self,
        name: &str,
        values: &[(&str, &str)],
    ) -> anyhow::Result<Secret> {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            string_data: Some(
                values
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .with_context(|| format!("failed to create Secret {name}"))
    }

    /// A bound token (TokenRequest, one hour) for the existing ServiceAccount `name`.
    pub async fn service_account_token(&self, name: &str) -> anyhow::Result<String> {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec!["https://kubernetes.default.svc.cluster.local".into()]),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let issued = self
            .api::<ServiceAccount>()
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("failed to request a token for ServiceAccount {name}"))?;
        issued
            .status
            .and_then(|status| status.token)
            .context("TokenRequest returned no token")
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop may run inside the test's runtime, so the deletion gets a thread and a runtime
        // of its own, and a client of its own (the test's client is tied to the test runtime).
        let config = self.config.clone();
        let name = self.name.clone();
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let client = Client::try_from(config)?;
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("warning: failed to delete test namespace {}", self.name);
        }
    }
}
