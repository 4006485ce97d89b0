//! Azure Key Vault: `spec.provider.azurekv` is checked against `mooring_provider_azure`'s
//! configuration, but there is no client yet (no Key Vault test double is reachable to test one
//! against), so every Azure store is refused as not implemented, naming what is wrong first.

use mooring_crds::secret_store::AzureKvProvider;
use mooring_provider_azure::{AuthType, AzureConfig};

use super::credentials::CredentialReader;
use super::{Connection, ProviderConfig, ProviderSettings, StoreError};

#[async_trait::async_trait]
impl ProviderConfig for AzureKvProvider {
    /// None: with no client, a ClusterSecretStore is validated (and refused) where it is, as a
    /// store that resolves nothing per namespace, so its condition says why it cannot be used.
    fn credential_namespaces(&self) -> Vec<Option<&str>> {
        Vec::new()
    }

    async fn connection(
        &self,
        reader: &CredentialReader<'_>,
        _: &ProviderSettings,
    ) -> Result<Connection, StoreError> {
        Err(reader.invalid(refusal(self)))
    }
}

/// Why the store cannot be used: its configuration's first problem, else that reading is not
/// implemented.
fn refusal(azure: &AzureKvProvider) -> String {
    let auth = match azure.auth_type.as_deref() {
        None | Some("ServicePrincipal") => AuthType::ServicePrincipal {
            client_id: String::new(),
        },
        Some("ManagedIdentity") => AuthType::ManagedIdentity,
        Some("WorkloadIdentity") => AuthType::WorkloadIdentity,
        Some(other) => {
            return format!(
                "spec.provider.azurekv.authType {other:?} is not one of ServicePrincipal, ManagedIdentity, WorkloadIdentity"
            );
        }
    };
    let config = AzureConfig {
        vault_url: azure.vault_url.clone(),
        tenant_id: azure.tenant_id.clone(),
        auth,
    };
    match config.validate() {
        Err(error) => format!("spec.provider.azurekv: {error}"),
        Ok(()) => "spec.provider.azurekv: the configuration is valid, but reading from Azure Key Vault is not implemented yet".into(),
    }
}
