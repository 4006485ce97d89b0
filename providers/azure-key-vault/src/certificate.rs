//! A service principal's client certificate (ESO's `authSecretRef.clientCertificate`): each
//! token request carries a fresh JWT assertion signed RS256 with the certificate's key, naming
//! the certificate by its SHA-1 thumbprint (`x5t`), as Entra ID expects.
//!
//! azure_identity's `ClientCertificateCredential` needs OpenSSL (its `client_certificate`
//! feature); this signs with aws-lc-rs, which the workspace already uses for RSA.

use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mooring_provider::ProviderError;
use zeroize::Zeroizing;

/// How long an assertion is valid (Entra allows up to 10 minutes of skew and lifetime).
const ASSERTION_LIFETIME_SECONDS: i64 = 600;

/// The key and thumbprint of one client certificate.
pub(crate) struct ClientCertificate {
    key: RsaKeyPair,
    /// base64url of the SHA-1 of the certificate's DER.
    thumbprint: String,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// Reads a PEM bundle holding the certificate (first `CERTIFICATE`) and its RSA private key
    /// (`PRIVATE KEY` or `RSA PRIVATE KEY`).
    pub(crate) fn from_pem(pem: &[u8]) -> Result<ClientCertificate, ProviderError> {
        let invalid = |why: &str| {
            ProviderError::InvalidConfig(format!("authSecretRef.clientCertificate: {why}"))
        };
        let blocks = pem::parse_many(pem).map_err(|_| invalid("not a PEM bundle"))?;
        let certificate = blocks
            .iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or_else(|| invalid("no CERTIFICATE block"))?;
        let key = blocks
            .iter()
            .find_map(|b| match b.tag() {
                "PRIVATE KEY" => Some(RsaKeyPair::from_pkcs8(b.contents())),
                "RSA PRIVATE KEY" => Some(RsaKeyPair::from_der(b.contents())),
                _ => None,
            })
            .ok_or_else(|| invalid("no PRIVATE KEY or RSA PRIVATE KEY block"))?
            .map_err(|_| invalid("the private key is not an RSA key of 2048 to 8192 bits"))?;
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            certificate.contents(),
        );
        // The key blocks' bytes are dropped with `blocks`; wipe them.
        for block in blocks {
            let mut contents = block.into_contents();
            zeroize::Zeroize::zeroize(&mut contents);
        }
        Ok(ClientCertificate {
            key,
            thumbprint: URL_SAFE_NO_PAD.encode(digest.as_ref()),
        })
    }

    /// A signed assertion for `client_id` at the token endpoint `audience`.
    pub(crate) fn assertion(
        &self,
        client_id: &str,
        audience: &str,
    ) -> Result<Zeroizing<String>, ProviderError> {
        let failed = || ProviderError::InvalidConfig("failed to sign the client assertion".into());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut id = [0u8; 16];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut id)
            .map_err(|_| failed())?;
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": self.thumbprint});
        let claims = serde_json::json!({
            "aud": audience, "iss": client_id, "sub": client_id,
            "jti": URL_SAFE_NO_PAD.encode(id),
            "iat": now, "nbf": now, "exp": now + ASSERTION_LIFETIME_SECONDS,
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .map_err(|_| failed())?;
        Ok(Zeroizing::new(format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_of(key: &rcgen::KeyPair) -> String {
        let certificate = rcgen::CertificateParams::new(vec!["client".into()])
            .unwrap()
            .self_signed(key)
            .unwrap();
        format!("{}{}", certificate.pem(), key.serialize_pem())
    }

    #[test]
    fn assertions_are_signed_jwts_naming_the_certificate() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let certificate = ClientCertificate::from_pem(pem_of(&key).as_bytes()).unwrap();
        let jwt = certificate
            .assertion("client-1", "https://login.example/t/oauth2/v2.0/token")
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["x5t"], serde_json::json!(certificate.thumbprint));
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["aud"], "https://login.example/t/oauth2/v2.0/token");
        let public = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            key.public_key_raw(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
            )
            .unwrap();
    }

    #[test]
    fn a_bundle_without_a_key_is_refused_by_name() {
        let error = ClientCertificate::from_pem(b"not pem").unwrap_err();
        assert_eq!(error.reason(), "InvalidConfig");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let only_certificate = pem_of(&key)
            .split("-----BEGIN PRIVATE KEY-----")
            .next()
            .unwrap()
            .to_string();
        let error = ClientCertificate::from_pem(only_certificate.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("PRIVATE KEY"), "{error}");
    }
}
