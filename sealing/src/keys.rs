//! Reading the sealing certificate: the public half that `kubeseal` seals against.

use std::time::SystemTime;

use aws_lc_rs::rsa::PublicEncryptingKey;
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, Encode};

/// Why a certificate cannot be used for sealing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    /// The input is not a PEM `CERTIFICATE`.
    #[error("failed to parse the certificate: not a PEM X.509 certificate ({0})")]
    Parse(String),
    /// The certificate's key is not an RSA key aws-lc accepts.
    #[error("failed to read the certificate's public key: not a usable RSA key")]
    PublicKey,
    /// The certificate is past its notAfter date; sealing to it would be sealing to a retired key.
    #[error("the certificate expired at {not_after:?}; fetch the current one from the cluster")]
    Expired {
        /// The certificate's notAfter.
        not_after: SystemTime,
    },
}

/// A parsed sealing certificate.
pub struct SealingCertificate {
    public_key: PublicEncryptingKey,
    not_after: SystemTime,
}

impl SealingCertificate {
    /// Parses the first certificate of a PEM document.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CertificateError> {
        let certificate =
            Certificate::from_pem(pem).map_err(|e| CertificateError::Parse(e.to_string()))?;
        let tbs = certificate.tbs_certificate();
        let spki = tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|e| CertificateError::Parse(e.to_string()))?;
        let public_key =
            PublicEncryptingKey::from_der(&spki).map_err(|_| CertificateError::PublicKey)?;
        Ok(SealingCertificate {
            public_key,
            not_after: tbs.validity().not_after.to_system_time(),
        })
    }

    /// The RSA public key to seal with.
    pub fn public_key(&self) -> &PublicEncryptingKey {
        &self.public_key
    }

    /// Refuses a certificate that expired before `now` (kubeseal does the same).
    pub fn ensure_not_expired(&self, now: SystemTime) -> Result<(), CertificateError> {
        if now > self.not_after {
            return Err(CertificateError::Expired {
                not_after: self.not_after,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A self-signed RSA certificate like the controller's (rcgen with aws-lc-rs).
    fn certificate_and_key() -> (String, aws_lc_rs::rsa::PrivateDecryptingKey) {
        certificate_valid_until(None)
    }

    /// The same, with notAfter at the start of `year` when given.
    fn certificate_valid_until(
        year: Option<i32>,
    ) -> (String, aws_lc_rs::rsa::PrivateDecryptingKey) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["sealed-secret".into()]).unwrap();
        if let Some(year) = year {
            params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
            params.not_after = rcgen::date_time_ymd(year, 1, 1);
        }
        let cert = params.self_signed(&key).unwrap();
        let private =
            aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&key.serialize_der()).unwrap();
        (cert.pem(), private)
    }

    #[test]
    fn sealing_to_a_certificate_opens_with_its_key() {
        let (pem, private) = certificate_and_key();
        let cert = SealingCertificate::from_pem(pem.as_bytes()).unwrap();
        cert.ensure_not_expired(SystemTime::now()).unwrap();
        let sealed = crate::seal(cert.public_key(), b"ns/name", b"value").unwrap();
        assert_eq!(
            crate::open(&private, b"ns/name", &sealed)
                .unwrap()
                .as_slice(),
            b"value"
        );
    }

    #[test]
    fn expired_and_garbage_certificates_are_refused() {
        let (pem, _) = certificate_valid_until(Some(2020));
        let cert = SealingCertificate::from_pem(pem.as_bytes()).unwrap();
        assert!(matches!(
            cert.ensure_not_expired(SystemTime::now()),
            Err(CertificateError::Expired { .. })
        ));
        // Mid-2019, inside the validity window.
        let before_expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(1_560_000_000);
        assert!(cert.ensure_not_expired(before_expiry).is_ok());
        assert!(matches!(
            SealingCertificate::from_pem(b"not a certificate"),
            Err(CertificateError::Parse(_))
        ));
    }
}
