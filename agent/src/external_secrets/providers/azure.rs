//! Azure Key Vault: `spec.provider.azurekv` becomes an [`AzureConfig`] (a service principal's
//! client secret, a workload identity fed by ServiceAccount tokens, or a managed identity), and
//! connecting gets the principal's first token through `mooring_provider_azure`.

use std::sync::Arc;

use mooring_crds::secret_store::{AzureKvProvider, ServiceAccountSelector};
use mooring_provider::ProviderError;
use mooring_provider_azure::{AuthType, AzureConfig, Cloud, DEFAULT_IMDS_ENDPOINT};
use zeroize::Zeroizing;

use super::credentials::{CredentialReader, ServiceAccountTokens};
use super::{
    Connect, Connected, Connection, ProviderConfig, ProviderSettings, StoreError, StoreId,
    StoreKind,
};

/// The ServiceAccount annotation naming the application (client) id (AKS workload identity).
const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
/// The ServiceAccount annotation naming the tenant.
const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
/// The audience Entra ID expects of a federated token.
const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Azure's resolved connection.
struct AzureConnection {
    config: AzureConfig,
    /// What the fingerprint covers beyond the config's plain fields: the client secret, the
    /// ServiceAccount of a workload identity.
    identity: Vec<Zeroizing<String>>,
}

#[async_trait::async_trait]
impl ProviderConfig for AzureKvProvider {
    fn credential_namespaces(&self) -> Vec<Option<&str>> {
        let mut found = Vec::new();
        if let Some(keys) = &self.auth_secret_ref {
            for selector in [
                &keys.client_id,
                &keys.client_secret,
                &keys.client_certificate,
                &keys.tenant_id,
            ]
            .into_iter()
            .flatten()
            {
                found.push(selector.namespace.as_deref());
            }
        }
        if let Some(account) = &self.service_account_ref {
            found.push(account.namespace.as_deref());
        }
        found
    }

    async fn connection(
        &self,
        reader: &CredentialReader<'_>,
        settings: &ProviderSettings,
    ) -> Result<Connection, StoreError> {
        let field = "spec.provider.azurekv";
        let cloud = cloud(self, reader)?;
        let mut tenant_id = self.tenant_id.clone().filter(|t| !t.is_empty());
        let mut identity = Vec::new();
        let auth = match self.auth_type.as_deref() {
            None | Some("ServicePrincipal") => {
                let keys = self.auth_secret_ref.as_ref().ok_or_else(|| {
                    reader.invalid(format!(
                        "{field}.authSecretRef is required for ServicePrincipal"
                    ))
                })?;
                let secret_field = format!("{field}.authSecretRef");
                let client_id = keys.client_id.as_ref().ok_or_else(|| {
                    reader.invalid(format!("{secret_field}.clientId is required"))
                })?;
                let client_id = reader
                    .secret_value(client_id, &format!("{secret_field}.clientId"))
                    .await?;
                if tenant_id.is_none()
                    && let Some(selector) = &keys.tenant_id
                {
                    let tenant = reader
                        .secret_value(selector, &format!("{secret_field}.tenantId"))
                        .await?;
                    tenant_id = Some(tenant.to_string());
                }
                // As ESO: exactly one of clientSecret and clientCertificate.
                match (&keys.client_secret, &keys.client_certificate) {
                    (Some(selector), None) => {
                        let client_secret = reader
                            .secret_value(selector, &format!("{secret_field}.clientSecret"))
                            .await?;
                        identity.push(Zeroizing::new(format!("secret:{}", client_secret.as_str())));
                        AuthType::ServicePrincipal {
                            client_id: client_id.to_string(),
                            client_secret,
                        }
                    }
                    (None, Some(selector)) => {
                        let certificate = reader
                            .secret_value(selector, &format!("{secret_field}.clientCertificate"))
                            .await?;
                        identity.push(Zeroizing::new(format!(
                            "certificate:{}",
                            certificate.as_str()
                        )));
                        AuthType::ServicePrincipalCertificate {
                            client_id: client_id.to_string(),
                            certificate: Zeroizing::new(certificate.as_bytes().to_vec()),
                        }
                    }
                    _ => {
                        return Err(reader.invalid(format!(
                            "{secret_field} needs exactly one of clientSecret and clientCertificate"
                        )));
                    }
                }
            }
            // The managed identity is the agent's (its node's or pod's) own: a namespace must
            // not be able to read with it by writing a SecretStore, so only a
            // ClusterSecretStore (the cluster admin's, with its namespace conditions) may.
            Some("ManagedIdentity") if reader.store.kind == StoreKind::SecretStore => {
                return Err(reader.invalid(format!(
                    "{field}.authType ManagedIdentity uses the agent's own identity: only a ClusterSecretStore may use it"
                )));
            }
            Some("ManagedIdentity") => AuthType::ManagedIdentity {
                identity_id: self.identity_id.clone().filter(|i| !i.is_empty()),
                endpoint: settings
                    .azure_imds_endpoint
                    .clone()
                    .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.into()),
            },
            Some("WorkloadIdentity") => {
                let (client_id, annotated_tenant, tokens, account) =
                    workload_identity(self, reader).await?;
                match (&tenant_id, annotated_tenant) {
                    (None, Some(annotated)) => tenant_id = Some(annotated),
                    (Some(spec), Some(annotated)) if *spec != annotated => {
                        return Err(reader.invalid(format!(
                            "{field}.tenantId {spec:?} differs from the ServiceAccount's {TENANT_ID_ANNOTATION} annotation {annotated:?}"
                        )));
                    }
                    _ => {}
                }
                identity.push(Zeroizing::new(format!("sa:{account}")));
                AuthType::WorkloadIdentity {
                    client_id,
                    assertions: Arc::new(tokens),
                }
            }
            Some(other) => {
                return Err(reader.invalid(format!(
                    "{field}.authType {other:?} is not one of ServicePrincipal, ManagedIdentity, WorkloadIdentity"
                )));
            }
        };
        let trusted_roots = match &settings.azure_ca_bundle {
            None => None,
            Some(Ok(pem)) => Some(pem.clone()),
            Some(Err(why)) => return Err(reader.invalid(why.clone())),
        };
        let config = AzureConfig {
            vault_url: self.vault_url.clone(),
            tenant_id,
            auth,
            cloud,
            trusted_roots,
        };
        config
            .validate()
            .map_err(|error| reader.invalid(format!("{field}: {error}")))?;
        Ok(Connection::new(AzureConnection { config, identity }))
    }
}

/// `environmentType`, or `customCloudConfig`'s authority host.
fn cloud(azure: &AzureKvProvider, reader: &CredentialReader<'_>) -> Result<Cloud, StoreError> {
    let field = "spec.provider.azurekv";
    if let Some(custom) = &azure.custom_cloud_config {
        let authority_host = custom
            .active_directory_endpoint
            .clone()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                reader.invalid(format!(
                    "{field}.customCloudConfig.activeDirectoryEndpoint is required"
                ))
            })?;
        return Ok(Cloud::Custom {
            authority_host: authority_host.trim_end_matches('/').to_string(),
            resource: custom.key_vault_endpoint.clone().filter(|r| !r.is_empty()),
        });
    }
    Cloud::from_environment_type(azure.environment_type.as_deref().unwrap_or_default())
        .map_err(|error| reader.invalid(format!("{field}: {error}")))
}

/// Workload identity: the client id (and maybe the tenant) from the ServiceAccount's
/// annotations, and its tokens for `api://AzureADTokenExchange` plus `serviceAccountRef.audiences`.
async fn workload_identity(
    azure: &AzureKvProvider,
    reader: &CredentialReader<'_>,
) -> Result<(String, Option<String>, ServiceAccountTokens, String), StoreError> {
    let field = "spec.provider.azurekv.serviceAccountRef";
    let account = azure.service_account_ref.as_ref().ok_or_else(|| {
        reader.invalid(format!(
            "{field} is required for WorkloadIdentity (mooring never uses its own identity)"
        ))
    })?;
    let namespace = reader.namespace_of(account.namespace.as_deref(), field)?;
    let found = reader
        .service_account(&namespace, &account.name, field)
        .await?;
    let annotations = found.metadata.annotations.unwrap_or_default();
    let annotated = annotations
        .get(CLIENT_ID_ANNOTATION)
        .filter(|c| !c.is_empty())
        .cloned();
    // ESO also takes the client id from authSecretRef.clientId, but not from both.
    let referenced = azure
        .auth_secret_ref
        .as_ref()
        .and_then(|keys| keys.client_id.as_ref());
    let client_id = match (annotated, referenced) {
        (Some(_), Some(_)) => {
            return Err(reader.invalid(format!(
                "spec.provider.azurekv: the client id is set both by authSecretRef.clientId and by ServiceAccount {namespace}/{}'s {CLIENT_ID_ANNOTATION} annotation; set one",
                account.name
            )));
        }
        (Some(annotated), None) => annotated,
        (None, Some(selector)) => reader
            .secret_value(selector, "spec.provider.azurekv.authSecretRef.clientId")
            .await?
            .to_string(),
        (None, None) => {
            return Err(reader.invalid(format!(
                "{field}: ServiceAccount {namespace}/{} has no {CLIENT_ID_ANNOTATION} annotation (nor is authSecretRef.clientId set)",
                account.name
            )));
        }
    };
    let tenant = annotations
        .get(TENANT_ID_ANNOTATION)
        .filter(|t| !t.is_empty())
        .cloned();
    let mut audiences = vec![TOKEN_EXCHANGE_AUDIENCE.to_string()];
    audiences.extend(account.audiences.iter().flatten().cloned());
    let selector = ServiceAccountSelector {
        name: account.name.clone(),
        namespace: Some(namespace.clone()),
        audiences: Some(audiences),
    };
    let described = format!(
        "{namespace}/{}:{:?}:{client_id}:{tenant:?}",
        account.name, selector.audiences
    );
    let tokens = ServiceAccountTokens {
        client: reader.client.clone(),
        store: reader.store.clone(),
        namespace,
        account: selector,
        field: "spec.provider.azurekv.serviceAccountRef",
    };
    Ok((client_id, tenant, tokens, described))
}

#[async_trait::async_trait]
impl mooring_provider_azure::AssertionSource for ServiceAccountTokens {
    async fn assertion(&self) -> Result<Zeroizing<String>, ProviderError> {
        self.request().await
    }
}

#[async_trait::async_trait]
impl Connect for AzureConnection {
    fn fingerprint_parts(&self) -> Vec<Zeroizing<String>> {
        let config = &self.config;
        let auth = match &config.auth {
            AuthType::ServicePrincipal { client_id, .. } => format!("sp:{client_id}"),
            AuthType::ServicePrincipalCertificate { client_id, .. } => {
                format!("sp-certificate:{client_id}")
            }
            AuthType::ManagedIdentity {
                identity_id,
                endpoint,
            } => format!("mi:{identity_id:?}:{endpoint}"),
            AuthType::WorkloadIdentity { client_id, .. } => format!("wi:{client_id}"),
        };
        let mut parts: Vec<Zeroizing<String>> = vec![
            format!(
                "azure:{}:{:?}:{:?}:{auth}",
                config.vault_url, config.tenant_id, config.cloud
            )
            .into(),
            format!(
                "roots:{}",
                config
                    .trusted_roots
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
            )
            .into(),
        ];
        parts.extend(self.identity.iter().cloned());
        parts
    }

    async fn connect(&self, _: &kube::Client, store: &StoreId) -> Result<Connected, StoreError> {
        let login = |source| StoreError::Login {
            store: store.to_string(),
            source,
        };
        let provider = mooring_provider_azure::AzureKeyVaultProvider::new(self.config.clone())
            .map_err(login)?;
        // The first token now: a refused secret or federated credential is a failed login,
        // and the provider is only cached with a working principal.
        provider.authenticate().await.map_err(login)?;
        Ok(Connected {
            provider: Arc::new(provider),
            renew_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external_secrets::providers::is_referent;
    use crate::external_secrets::providers::stores::tests::spec;

    #[test]
    fn azure_fingerprints_follow_the_secret_and_the_cloud() {
        let connection = |secret: &str, cloud: Cloud| {
            Connection::new(AzureConnection {
                config: AzureConfig {
                    vault_url: "https://v.vault.azure.net".into(),
                    tenant_id: Some("t".into()),
                    auth: AuthType::ServicePrincipal {
                        client_id: "c".into(),
                        client_secret: Zeroizing::new(secret.into()),
                    },
                    cloud,
                    trusted_roots: None,
                },
                identity: vec![Zeroizing::new(format!("secret:{secret}"))],
            })
        };
        let same = connection("a", Cloud::Public).fingerprint();
        assert_eq!(same, connection("a", Cloud::Public).fingerprint());
        assert_ne!(same, connection("b", Cloud::Public).fingerprint());
        assert_ne!(same, connection("a", Cloud::China).fingerprint());
    }

    #[test]
    fn azure_references_without_a_namespace_are_referent() {
        let referent = spec(serde_json::json!({"provider": {"azurekv": {
            "vaultUrl": "https://v.vault.azure.net", "tenantId": "t",
            "authSecretRef": {"clientId": {"name": "sp", "key": "id"},
                              "clientSecret": {"name": "sp", "key": "secret"}}}}}));
        assert!(is_referent(&referent));
        let workload = spec(serde_json::json!({"provider": {"azurekv": {
            "vaultUrl": "https://v.vault.azure.net", "authType": "WorkloadIdentity",
            "serviceAccountRef": {"name": "app", "namespace": "azure"}}}}));
        assert!(!is_referent(&workload));
    }
}
