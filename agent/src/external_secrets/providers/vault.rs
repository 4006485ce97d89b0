//! Vault and OpenBao: `spec.provider.vault` becomes a [`VaultConfig`], a [`ServerTrust`] and a
//! login, and connecting logs in through `mooring_provider_vault`.

use std::sync::Arc;
use std::time::Instant;

use mooring_crds::secret_store::{ServiceAccountSelector, VaultProvider};
use mooring_provider_vault::{KvVersion, ServerTrust, VaultAuth, VaultConfig};
use zeroize::Zeroizing;

use super::credentials::{CredentialReader, service_account_token};
use super::{
    Connect, Connected, Connection, ProviderConfig, ProviderSettings, StoreError, StoreId,
};

/// Vault's resolved connection.
struct VaultConnection {
    /// Server, mount, KV version, namespace.
    config: VaultConfig,
    /// The CAs the server's certificate must chain to (`caBundle`/`caProvider`).
    trust: ServerTrust,
    /// How to log in (the ServiceAccount token is requested at connect time).
    auth: VaultLogin,
}

/// Vault login inputs, before a ServiceAccount token is requested.
enum VaultLogin {
    /// Ready to use (token, AppRole, or Kubernetes with a JWT from a Secret).
    Ready(VaultAuth),
    /// Kubernetes auth with a token requested for a ServiceAccount.
    ServiceAccount {
        /// The auth mount.
        mount: String,
        /// The Vault role.
        role: String,
        /// The ServiceAccount's namespace.
        namespace: String,
        /// The ServiceAccount.
        account: ServiceAccountSelector,
    },
}

#[async_trait::async_trait]
impl ProviderConfig for VaultProvider {
    fn credential_namespaces(&self) -> Vec<Option<&str>> {
        let mut found = Vec::new();
        let Some(auth) = &self.auth else {
            return found;
        };
        if let Some(token) = &auth.token_secret_ref {
            found.push(token.namespace.as_deref());
        }
        if let Some(role) = &auth.app_role {
            found.push(role.secret_ref.namespace.as_deref());
        }
        if let Some(kubernetes) = &auth.kubernetes {
            if let Some(account) = &kubernetes.service_account_ref {
                found.push(account.namespace.as_deref());
            }
            if let Some(secret) = &kubernetes.secret_ref {
                found.push(secret.namespace.as_deref());
            }
        }
        found
    }

    async fn connection(
        &self,
        reader: &CredentialReader<'_>,
        _: &ProviderSettings,
    ) -> Result<Connection, StoreError> {
        // Before any credential is read: a token must never be sent in clear.
        if let Some(why) = mooring_provider_vault::insecure_server(&self.server) {
            return Err(reader.invalid(format!(
                "spec.provider.vault.server {:?}: {why}",
                self.server
            )));
        }
        let version = match self.version.as_deref() {
            None | Some("v2") => KvVersion::V2,
            Some("v1") => KvVersion::V1,
            Some(other) => {
                return Err(reader.invalid(format!(
                    "spec.provider.vault.version {other:?} is not v1 or v2"
                )));
            }
        };
        // Without `path`, ESO takes the mount from each key's first segment; so does mooring.
        let mount = self.path.clone().unwrap_or_default();
        let trust = trust(self, reader).await?;
        let config = VaultConfig {
            server: self.server.clone(),
            mount: mount.trim_matches('/').to_string(),
            version,
            namespace: self.namespace.clone(),
        };
        let auth = login(self, reader).await?;
        Ok(Connection::new(VaultConnection {
            config,
            trust,
            auth,
        }))
    }
}

/// The login `spec.provider.vault.auth` sets: exactly one of the methods mooring supports.
async fn login(
    vault: &VaultProvider,
    reader: &CredentialReader<'_>,
) -> Result<VaultLogin, StoreError> {
    let auth = vault
        .auth
        .as_ref()
        .ok_or_else(|| reader.invalid("spec.provider.vault.auth is required"))?;
    let methods = [
        auth.token_secret_ref.is_some(),
        auth.app_role.is_some(),
        auth.kubernetes.is_some(),
    ]
    .iter()
    .filter(|m| **m)
    .count()
        + auth.unknown.len();
    if methods != 1 {
        return Err(reader.invalid(if auth.unknown.is_empty() {
            "spec.provider.vault.auth must set exactly one of tokenSecretRef, appRole, kubernetes"
                .into()
        } else {
            format!(
                "spec.provider.vault.auth: mooring supports tokenSecretRef, appRole and kubernetes; {} is not supported",
                auth.unknown.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        }));
    }
    if let Some(token) = &auth.token_secret_ref {
        let token = reader
            .secret_value(token, "spec.provider.vault.auth.tokenSecretRef")
            .await?;
        Ok(VaultLogin::Ready(VaultAuth::Token(token.to_string())))
    } else if let Some(role) = &auth.app_role {
        app_role_login(role, reader).await
    } else if let Some(kubernetes) = &auth.kubernetes {
        kubernetes_login(kubernetes, reader).await
    } else {
        Err(reader.invalid("spec.provider.vault.auth names no method"))
    }
}

/// AppRole: the role id inline or from a Secret, the secret id from a Secret.
async fn app_role_login(
    role: &mooring_crds::secret_store::VaultAppRole,
    reader: &CredentialReader<'_>,
) -> Result<VaultLogin, StoreError> {
    let role_id = match (&role.role_id, &role.role_ref) {
        (Some(id), _) => Zeroizing::new(id.clone()),
        (None, Some(selector)) => {
            reader
                .secret_value(selector, "spec.provider.vault.auth.appRole.roleRef")
                .await?
        }
        (None, None) => {
            return Err(reader.invalid("spec.provider.vault.auth.appRole needs roleId or roleRef"));
        }
    };
    let secret_id = reader
        .secret_value(
            &role.secret_ref,
            "spec.provider.vault.auth.appRole.secretRef",
        )
        .await?;
    Ok(VaultLogin::Ready(VaultAuth::AppRole {
        mount: role.path.clone().unwrap_or_else(|| "approle".into()),
        role_id: role_id.to_string(),
        secret_id: secret_id.to_string(),
    }))
}

/// Kubernetes auth: a token requested for a ServiceAccount, or one stored in a Secret.
async fn kubernetes_login(
    kubernetes: &mooring_crds::secret_store::VaultKubernetesAuth,
    reader: &CredentialReader<'_>,
) -> Result<VaultLogin, StoreError> {
    let mount = kubernetes
        .mount_path
        .clone()
        .unwrap_or_else(|| "kubernetes".into());
    match (&kubernetes.service_account_ref, &kubernetes.secret_ref) {
        (Some(account), _) => Ok(VaultLogin::ServiceAccount {
            mount,
            role: kubernetes.role.clone(),
            namespace: reader.namespace_of(
                account.namespace.as_deref(),
                "spec.provider.vault.auth.kubernetes.serviceAccountRef",
            )?,
            account: account.clone(),
        }),
        (None, Some(secret)) => {
            let jwt = reader
                .secret_value(secret, "spec.provider.vault.auth.kubernetes.secretRef")
                .await?;
            Ok(VaultLogin::Ready(VaultAuth::Kubernetes {
                mount,
                role: kubernetes.role.clone(),
                jwt: jwt.to_string(),
            }))
        }
        // ESO falls back to its own pod's token here, which hands the agent's identity to
        // anyone who can create a store; mooring refuses.
        (None, None) => Err(reader.invalid(
            "spec.provider.vault.auth.kubernetes needs serviceAccountRef or secretRef (mooring never logs in with its own identity)",
        )),
    }
}

/// The CAs a Vault store trusts: `caBundle` (base64 PEM) or `caProvider` (a key of a Secret or
/// ConfigMap) — exactly those, without the system roots — or, with neither, the system roots.
async fn trust(
    vault: &VaultProvider,
    reader: &CredentialReader<'_>,
) -> Result<ServerTrust, StoreError> {
    use base64::Engine;
    let from_pem = |pem: &[u8], field: &str| {
        ServerTrust::from_pem(pem, field).map_err(|error| reader.invalid(error.to_string()))
    };
    match (&vault.ca_bundle, &vault.ca_provider) {
        (None, None) => Ok(ServerTrust::SystemRoots),
        (Some(_), Some(_)) => {
            Err(reader.invalid("spec.provider.vault sets both caBundle and caProvider; set one"))
        }
        (Some(bundle), None) => {
            let field = "spec.provider.vault.caBundle";
            // ESO's caBundle is a byte array: base64 in JSON. Line breaks from `base64` are fine.
            let compact: String = bundle.split_whitespace().collect();
            let pem = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|_| {
                    reader.invalid(format!(
                        "{field} is not base64 (it holds a base64-encoded PEM bundle)"
                    ))
                })?;
            from_pem(&pem, field)
        }
        (None, Some(provider)) => {
            let field = "spec.provider.vault.caProvider";
            let pem = reader.ca_bundle(provider, field).await?;
            from_pem(&pem, field)
        }
    }
}

#[async_trait::async_trait]
impl Connect for VaultConnection {
    fn fingerprint_parts(&self) -> Vec<Zeroizing<String>> {
        let mut parts: Vec<Zeroizing<String>> = vec![format!("vault:{:?}", self.config).into()];
        // A changed CA (a rotated caProvider Secret) reconnects with the new roots.
        if let ServerTrust::Only(pem) = &self.trust {
            parts.push(format!("ca:{}", String::from_utf8_lossy(pem)).into());
        }
        parts.push(match &self.auth {
            VaultLogin::Ready(VaultAuth::Token(token)) => format!("token:{token}").into(),
            VaultLogin::Ready(VaultAuth::AppRole {
                mount,
                role_id,
                secret_id,
            }) => format!("approle:{mount}:{role_id}:{secret_id}").into(),
            VaultLogin::Ready(VaultAuth::Kubernetes { mount, role, jwt }) => {
                format!("k8s:{mount}:{role}:{jwt}").into()
            }
            VaultLogin::ServiceAccount {
                mount,
                role,
                namespace,
                account,
            } => format!("k8s-sa:{mount}:{role}:{namespace}:{account:?}").into(),
        });
        parts
    }

    async fn connect(
        &self,
        client: &kube::Client,
        store: &StoreId,
    ) -> Result<Connected, StoreError> {
        use mooring_provider_vault::VaultProvider;
        let (config, trust) = (self.config.clone(), self.trust.clone());
        let provider = match &self.auth {
            VaultLogin::Ready(auth) => VaultProvider::login_trusting(config, trust, auth).await,
            VaultLogin::ServiceAccount {
                mount,
                role,
                namespace,
                account,
            } => {
                let jwt = service_account_token(client, store, namespace, account).await?;
                let auth = VaultAuth::Kubernetes {
                    mount: mount.clone(),
                    role: role.clone(),
                    jwt: jwt.to_string(),
                };
                VaultProvider::login_trusting(config, trust, &auth).await
            }
        }
        .map_err(|source| StoreError::Login {
            store: store.to_string(),
            source,
        })?;
        // Log in again after two thirds of the lease, before the token can expire mid-use.
        let renew_at = provider
            .lease()
            .map(|lease| Instant::now() + lease.mul_f64(2.0 / 3.0));
        Ok(Connected {
            provider: Arc::new(provider),
            renew_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external_secrets::providers::is_referent;
    use crate::external_secrets::providers::stores::tests::spec;

    #[test]
    fn referent_stores_are_recognised() {
        let referent = spec(serde_json::json!({"provider": {"vault": {
            "server": "http://v", "path": "secret",
            "auth": {"tokenSecretRef": {"name": "t", "key": "token"}}}}}));
        assert!(is_referent(&referent));
        let pinned = spec(serde_json::json!({"provider": {"vault": {
            "server": "http://v", "path": "secret",
            "auth": {"tokenSecretRef": {"name": "t", "key": "token", "namespace": "vault"}}}}}));
        assert!(!is_referent(&pinned));
    }

    /// A client that is never called: the check runs before any credential is read.
    fn unreachable_client() -> kube::Client {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    #[tokio::test]
    async fn plain_http_is_refused_unless_loopback() {
        use crate::external_secrets::providers::stores::StoreKind;
        let client = unreachable_client();
        let store = StoreId {
            kind: StoreKind::SecretStore,
            namespace: Some("app".into()),
            name: "vault".into(),
        };
        let reader = CredentialReader {
            client: &client,
            store: &store,
            namespace: Some("app"),
        };
        let provider = |server: &str| -> VaultProvider {
            serde_json::from_value(serde_json::json!({
                "server": server, "path": "secret",
                "auth": {"tokenSecretRef": {"name": "t", "key": "token"}}}))
            .unwrap()
        };
        let refused = provider("http://vault.example:8200")
            .connection(&reader, &ProviderSettings::default())
            .await
            .err()
            .unwrap();
        let message = crate::errors::error_chain(&refused);
        assert!(
            message.contains(r#"spec.provider.vault.server "http://vault.example:8200""#)
                && message.contains("use https"),
            "{message}"
        );
        assert!(!refused.is_retryable());
        // Loopback http and https pass this check (the token is then read: the client's
        // refusal to connect proves the check let them through).
        for allowed in ["http://127.0.0.1:8200", "https://vault.example:8200"] {
            let error = provider(allowed)
                .connection(&reader, &ProviderSettings::default())
                .await
                .err()
                .unwrap();
            assert!(
                !crate::errors::error_chain(&error).contains("spec.provider.vault.server"),
                "{allowed}"
            );
        }
    }

    #[test]
    fn fingerprints_change_with_credentials_only() {
        let connection = |token: &str| {
            Connection::new(VaultConnection {
                config: VaultConfig {
                    server: "http://v".into(),
                    mount: "secret".into(),
                    version: KvVersion::V2,
                    namespace: None,
                },
                trust: ServerTrust::SystemRoots,
                auth: VaultLogin::Ready(VaultAuth::Token(token.into())),
            })
        };
        assert_eq!(connection("a").fingerprint(), connection("a").fingerprint());
        assert_ne!(connection("a").fingerprint(), connection("b").fingerprint());
    }
}
