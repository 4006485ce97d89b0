//! Azure Key Vault secrets: the store configuration and its validation.
//!
//! The Key Vault client (Azure SDK for Rust) is not wired yet: the Lowkey Vault test double it
//! must be tested against is not obtainable on this project's machines (see README, "Real
//! peers"). Until it is, this crate only checks a store's configuration, so a ClusterSecretStore
//! naming `azurekv` gets a precise error instead of a silent failure.

use mooring_provider::ProviderError;

/// How the agent authenticates to Azure, as ESO's `authType`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthType {
    /// A service principal: client id and secret from Secrets.
    ServicePrincipal {
        /// The application (client) id.
        client_id: String,
    },
    /// The node's or pod's managed identity.
    ManagedIdentity,
    /// AKS workload identity (federated service-account token).
    WorkloadIdentity,
}

/// Plain configuration for one store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureConfig {
    /// `https://<name>.vault.azure.net`.
    pub vault_url: String,
    /// The Entra ID tenant; required for service principals and workload identity.
    pub tenant_id: Option<String>,
    /// How to authenticate.
    pub auth: AuthType,
}

impl AzureConfig {
    /// Checks what can be checked without a network call.
    pub fn validate(&self) -> Result<(), ProviderError> {
        if !self.vault_url.starts_with("https://") {
            return Err(ProviderError::InvalidConfig(format!(
                "vaultUrl {:?} must be an https:// URL (Key Vault clients refuse plain HTTP)",
                self.vault_url
            )));
        }
        let needs_tenant = !matches!(self.auth, AuthType::ManagedIdentity);
        if needs_tenant && self.tenant_id.as_deref().is_none_or(str::is_empty) {
            return Err(ProviderError::InvalidConfig(
                "tenantId is required for ServicePrincipal and WorkloadIdentity auth".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, tenant: Option<&str>, auth: AuthType) -> AzureConfig {
        AzureConfig {
            vault_url: url.into(),
            tenant_id: tenant.map(str::to_string),
            auth,
        }
    }

    #[test]
    fn https_url_and_tenant_are_required() {
        let sp = AuthType::ServicePrincipal {
            client_id: "app".into(),
        };
        assert!(
            config("https://kv.vault.azure.net", Some("t"), sp.clone())
                .validate()
                .is_ok()
        );
        let http = config("http://kv.vault.azure.net", Some("t"), sp.clone()).validate();
        assert!(http.unwrap_err().to_string().contains("https://"));
        let no_tenant = config("https://kv.vault.azure.net", None, sp).validate();
        assert!(no_tenant.unwrap_err().to_string().contains("tenantId"));
        let mi = config(
            "https://kv.vault.azure.net",
            None,
            AuthType::ManagedIdentity,
        );
        assert!(mi.validate().is_ok());
    }
}
