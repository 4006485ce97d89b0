//! AWS Secrets Manager: `spec.provider.aws` becomes an [`AwsConfig`] (static keys, or a web
//! identity fed by ServiceAccount tokens, then an optional role), and connecting establishes
//! the STS session through `mooring_provider_aws`.

use std::sync::Arc;

use mooring_crds::secret_store::{AwsJwtAuth, AwsProvider, AwsSecretRef, ServiceAccountSelector};
use mooring_provider::ProviderError;
use mooring_provider_aws::{AssumeRole, AwsConfig, StaticCredentials, WebIdentity};
use zeroize::Zeroizing;

use super::credentials::{CredentialReader, ServiceAccountTokens};
use super::{
    Connect, Connected, Connection, ProviderConfig, ProviderSettings, StoreError, StoreId,
};

/// The annotation ESO reads the web-identity role from (as EKS's IRSA).
const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// The annotation ESO reads the token audience from; `sts.amazonaws.com` without it.
const AUDIENCE_ANNOTATION: &str = "eks.amazonaws.com/audience";
/// The STS session name of every mooring session (seen in CloudTrail).
const AWS_SESSION_NAME: &str = "mooring-provider-aws";

/// AWS's resolved connection.
struct AwsConnection {
    /// Region, endpoint, credentials, role.
    config: AwsConfig,
    /// The ServiceAccount (namespace, name, audiences) whose tokens feed a web identity;
    /// empty without one. Part of the fingerprint, so changing it connects again.
    identity: String,
}

#[async_trait::async_trait]
impl ProviderConfig for AwsProvider {
    fn credential_namespaces(&self) -> Vec<Option<&str>> {
        let mut found = Vec::new();
        let Some(auth) = &self.auth else {
            return found;
        };
        if let Some(keys) = &auth.secret_ref {
            for selector in [
                &keys.access_key_id_secret_ref,
                &keys.secret_access_key_secret_ref,
                &keys.session_token_secret_ref,
            ]
            .into_iter()
            .flatten()
            {
                found.push(selector.namespace.as_deref());
            }
        }
        if let Some(account) = auth
            .jwt
            .as_ref()
            .and_then(|j| j.service_account_ref.as_ref())
        {
            found.push(account.namespace.as_deref());
        }
        found
    }

    async fn connection(
        &self,
        reader: &CredentialReader<'_>,
        settings: &ProviderSettings,
    ) -> Result<Connection, StoreError> {
        if self.service != "SecretsManager" {
            return Err(reader.invalid(format!(
                "spec.provider.aws.service {:?} is not supported (mooring supports SecretsManager)",
                self.service
            )));
        }
        let region = self
            .region
            .clone()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| reader.invalid("spec.provider.aws.region is required"))?;
        if self.prefix.is_some() {
            return Err(reader.invalid("spec.provider.aws.prefix is not supported yet"));
        }
        let assume_role = self
            .role
            .as_ref()
            .filter(|r| !r.is_empty())
            .map(|role_arn| AssumeRole {
                role_arn: role_arn.clone(),
                external_id: self.external_id.clone().filter(|e| !e.is_empty()),
                session_name: AWS_SESSION_NAME.into(),
                session_duration: None,
            });
        let mut config = AwsConfig {
            region,
            endpoint_url: settings.aws_endpoint_url.clone(),
            credentials: None,
            web_identity: None,
            assume_role,
        };
        let auth = self.auth.as_ref();
        // As ESO: web identity first, then static keys.
        if let Some(jwt) = auth.and_then(|a| a.jwt.as_ref()) {
            let (web_identity, identity) = web_identity(jwt, reader).await?;
            config.web_identity = Some(web_identity);
            return Ok(Connection::new(AwsConnection { config, identity }));
        }
        // Without auth, ESO uses the controller's own identity; mooring refuses (SECURITY.md,
        // "No ambient identity").
        let keys = auth.and_then(|a| a.secret_ref.as_ref()).ok_or_else(|| {
            reader.invalid(
                "spec.provider.aws.auth needs secretRef or jwt (mooring never uses its own AWS identity)",
            )
        })?;
        config.credentials = Some(static_credentials(keys, reader).await?);
        Ok(Connection::new(AwsConnection {
            config,
            identity: String::new(),
        }))
    }
}

/// Static access keys read from Secrets (`auth.secretRef`).
async fn static_credentials(
    keys: &AwsSecretRef,
    reader: &CredentialReader<'_>,
) -> Result<StaticCredentials, StoreError> {
    let field = "spec.provider.aws.auth.secretRef";
    let access = keys
        .access_key_id_secret_ref
        .as_ref()
        .ok_or_else(|| reader.invalid(format!("{field}.accessKeyIDSecretRef is required")))?;
    let secret = keys
        .secret_access_key_secret_ref
        .as_ref()
        .ok_or_else(|| reader.invalid(format!("{field}.secretAccessKeySecretRef is required")))?;
    let access_key_id = reader
        .secret_value(access, &format!("{field}.accessKeyIDSecretRef"))
        .await?;
    let secret_access_key = reader
        .secret_value(secret, &format!("{field}.secretAccessKeySecretRef"))
        .await?;
    let session_token = match &keys.session_token_secret_ref {
        Some(selector) => Some(
            reader
                .secret_value(selector, &format!("{field}.sessionTokenSecretRef"))
                .await?
                .to_string(),
        ),
        None => None,
    };
    Ok(StaticCredentials {
        access_key_id: access_key_id.to_string(),
        secret_access_key: secret_access_key.to_string(),
        session_token,
    })
}

/// ESO's `auth.jwt`: the role comes from the ServiceAccount's `eks.amazonaws.com/role-arn`
/// annotation, the audiences are its `eks.amazonaws.com/audience` (else `sts.amazonaws.com`)
/// plus `serviceAccountRef.audiences`. Returns the web identity and a description of the
/// ServiceAccount for the fingerprint.
async fn web_identity(
    jwt: &AwsJwtAuth,
    reader: &CredentialReader<'_>,
) -> Result<(WebIdentity, String), StoreError> {
    let field = "spec.provider.aws.auth.jwt.serviceAccountRef";
    let account = jwt
        .service_account_ref
        .as_ref()
        .ok_or_else(|| reader.invalid(format!("{field} is required")))?;
    let namespace = reader.namespace_of(account.namespace.as_deref(), field)?;
    let found = reader
        .service_account(&namespace, &account.name, field)
        .await?;
    let annotations = found.metadata.annotations.unwrap_or_default();
    let role_arn = annotations
        .get(ROLE_ARN_ANNOTATION)
        .filter(|r| !r.is_empty())
        .cloned()
        .ok_or_else(|| {
            reader.invalid(format!(
                "{field}: ServiceAccount {namespace}/{} has no {ROLE_ARN_ANNOTATION} annotation (the role its token is exchanged for)",
                account.name
            ))
        })?;
    let mut audiences = vec![
        annotations
            .get(AUDIENCE_ANNOTATION)
            .filter(|a| !a.is_empty())
            .cloned()
            .unwrap_or_else(|| "sts.amazonaws.com".into()),
    ];
    audiences.extend(account.audiences.iter().flatten().cloned());
    let selector = ServiceAccountSelector {
        name: account.name.clone(),
        namespace: Some(namespace.clone()),
        audiences: Some(audiences),
    };
    let identity = format!("{namespace}/{}:{:?}", account.name, selector.audiences);
    let tokens = ServiceAccountTokens {
        client: reader.client.clone(),
        store: reader.store.clone(),
        namespace,
        account: selector,
        field: "spec.provider.aws.auth.jwt.serviceAccountRef",
    };
    Ok((
        WebIdentity {
            role_arn,
            session_name: AWS_SESSION_NAME.into(),
            session_duration: None,
            tokens: Arc::new(tokens),
        },
        identity,
    ))
}

#[async_trait::async_trait]
impl mooring_provider_aws::WebIdentityTokenSource for ServiceAccountTokens {
    async fn token(&self) -> Result<Zeroizing<String>, ProviderError> {
        self.request().await
    }
}

#[async_trait::async_trait]
impl Connect for AwsConnection {
    fn fingerprint_parts(&self) -> Vec<Zeroizing<String>> {
        let config = &self.config;
        let mut parts: Vec<Zeroizing<String>> = vec![
            format!("aws-identity:{}", self.identity).into(),
            format!(
                "aws:{}:{:?}",
                config.region,
                config.endpoint_url.as_deref().unwrap_or_default()
            )
            .into(),
        ];
        if let Some(c) = &config.credentials {
            parts.push(
                format!(
                    "{}:{}:{:?}",
                    c.access_key_id, c.secret_access_key, c.session_token
                )
                .into(),
            );
        }
        if let Some(identity) = &config.web_identity {
            parts.push(format!("jwt:{}:{}", identity.role_arn, identity.session_name).into());
        }
        if let Some(role) = &config.assume_role {
            parts.push(
                format!(
                    "role:{}:{:?}:{}",
                    role.role_arn, role.external_id, role.session_name
                )
                .into(),
            );
        }
        parts
    }

    async fn connect(&self, _: &kube::Client, store: &StoreId) -> Result<Connected, StoreError> {
        let provider =
            mooring_provider_aws::AwsSecretsManagerProvider::new(self.config.clone()).await;
        // STS (web identity, role) now: a refusal is a failed login, and the provider is only
        // cached with a working session.
        provider
            .authenticate()
            .await
            .map_err(|source| StoreError::Login {
                store: store.to_string(),
                source,
            })?;
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
    fn aws_web_identity_without_a_namespace_is_referent() {
        let referent = spec(serde_json::json!({"provider": {"aws": {
            "service": "SecretsManager", "region": "eu-west-1",
            "auth": {"jwt": {"serviceAccountRef": {"name": "app"}}}}}}));
        assert!(is_referent(&referent));
        let pinned = spec(serde_json::json!({"provider": {"aws": {
            "service": "SecretsManager", "region": "eu-west-1",
            "auth": {"jwt": {"serviceAccountRef": {"name": "app", "namespace": "aws"}}}}}}));
        assert!(!is_referent(&pinned));
    }

    #[test]
    fn aws_fingerprints_follow_the_service_account_and_the_role() {
        let connection = |identity: &str, external_id: Option<&str>| {
            Connection::new(AwsConnection {
                config: AwsConfig {
                    region: "eu-west-1".into(),
                    assume_role: Some(AssumeRole {
                        role_arn: "arn:aws:iam::1:role/r".into(),
                        external_id: external_id.map(str::to_string),
                        session_name: AWS_SESSION_NAME.into(),
                        session_duration: None,
                    }),
                    ..Default::default()
                },
                identity: identity.into(),
            })
        };
        let same = connection("ns/app:[sts]", Some("a")).fingerprint();
        assert_eq!(same, connection("ns/app:[sts]", Some("a")).fingerprint());
        assert_ne!(same, connection("ns/other:[sts]", Some("a")).fingerprint());
        assert_ne!(same, connection("ns/app:[sts]", Some("b")).fingerprint());
    }
}
