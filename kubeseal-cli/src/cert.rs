//! Where the sealing certificate comes from: `--cert` (file, `http(s)://`, `file://`) or the
//! controller through the cluster.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, bail};
use mooring_sealing::{CertificateError, SealingCertificate};

use crate::cluster::{ClusterOptions, Controller};

/// A `--cert` value, classified as upstream's `isFilename` does.
#[derive(Debug, PartialEq, Eq)]
pub enum CertSource {
    /// No URL scheme (or a one-letter one, a Windows drive): a local file.
    File(PathBuf),
    /// `file://<path>`.
    FileUrl(PathBuf),
    /// `http://` or `https://`.
    Http(String),
}

impl CertSource {
    /// Classifies `value`.
    pub fn parse(value: &str) -> anyhow::Result<CertSource> {
        let Some((scheme, rest)) = value.split_once(':') else {
            return Ok(CertSource::File(PathBuf::from(value)));
        };
        let is_scheme = scheme.len() > 1
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !is_scheme {
            return Ok(CertSource::File(PathBuf::from(value)));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => Ok(CertSource::Http(value.to_string())),
            // Upstream serves file:// from "/": file:///etc/cert.pem is /etc/cert.pem.
            "file" => Ok(CertSource::FileUrl(PathBuf::from(format!(
                "/{}",
                rest.trim_start_matches('/')
            )))),
            other => bail!(
                "failed to fetch certificate {value:?}: unsupported URL scheme {other:?} (use a file, http(s):// or file://)"
            ),
        }
    }

    /// The certificate bytes (not yet parsed).
    pub async fn read(&self) -> anyhow::Result<Vec<u8>> {
        match self {
            CertSource::File(path) | CertSource::FileUrl(path) => std::fs::read(path)
                .with_context(|| format!("failed to read certificate {}", path.display())),
            CertSource::Http(url) => {
                // reqwest honours HTTP(S)_PROXY / NO_PROXY like Go's ProxyFromEnvironment.
                let response = reqwest::get(url)
                    .await
                    .with_context(|| format!("failed to fetch certificate {url}"))?;
                let status = response.status();
                if status != reqwest::StatusCode::OK {
                    bail!("failed to fetch certificate {url}: {status}");
                }
                let body = response
                    .bytes()
                    .await
                    .with_context(|| format!("failed to fetch certificate {url}"))?;
                Ok(body.to_vec())
            }
        }
    }
}

/// The certificate bytes: from `--cert` when given, else `/v1/cert.pem` of the controller.
pub async fn obtain(
    cert: Option<&str>,
    cluster: &ClusterOptions,
    controller_namespace: &str,
    controller_name: &str,
) -> anyhow::Result<Vec<u8>> {
    match cert {
        Some(value) if !value.is_empty() => CertSource::parse(value)?.read().await,
        _ => {
            let client = cluster.client().await?;
            Controller::connect(client, controller_namespace, controller_name)
                .await?
                .certificate()
                .await
        }
    }
}

/// Parses the certificate and refuses an expired one, as upstream's `ParseKey`.
pub fn sealing_certificate(pem: &[u8], now: SystemTime) -> anyhow::Result<SealingCertificate> {
    let certificate =
        SealingCertificate::from_pem(pem).context("failed to read the sealing certificate")?;
    match certificate.ensure_not_expired(now) {
        Ok(()) => Ok(certificate),
        Err(CertificateError::Expired { not_after }) => {
            let date = x509_cert::der::DateTime::from_system_time(not_after)
                .map(|date| date.to_string())
                .unwrap_or_else(|_| "an unrepresentable date".to_string());
            bail!(
                "failed to encrypt using an expired certificate on {date}; fetch the current one (--fetch-cert)"
            )
        }
        Err(other) => Err(other).context("failed to use the sealing certificate"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_classified_like_upstream() {
        assert_eq!(
            CertSource::parse("cert.pem").unwrap(),
            CertSource::File("cert.pem".into())
        );
        assert_eq!(
            CertSource::parse("/tmp/c.pem").unwrap(),
            CertSource::File("/tmp/c.pem".into())
        );
        assert_eq!(
            CertSource::parse("C:\\c.pem").unwrap(),
            CertSource::File("C:\\c.pem".into())
        );
        assert_eq!(
            CertSource::parse("file:///etc/c.pem").unwrap(),
            CertSource::FileUrl("/etc/c.pem".into())
        );
        assert_eq!(
            CertSource::parse("https://example.test/v1/cert.pem").unwrap(),
            CertSource::Http("https://example.test/v1/cert.pem".into())
        );
        assert!(CertSource::parse("ftp://example.test/c.pem").is_err());
    }

    #[tokio::test]
    async fn file_urls_and_paths_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pem");
        std::fs::write(&path, b"PEM").unwrap();
        let url = format!("file://{}", path.display());
        assert_eq!(
            CertSource::parse(&url).unwrap().read().await.unwrap(),
            b"PEM"
        );
        let missing = CertSource::File(dir.path().join("missing"));
        assert!(
            missing
                .read()
                .await
                .unwrap_err()
                .to_string()
                .contains("failed to read certificate")
        );
    }

    #[test]
    fn expired_certificates_are_refused_with_their_date() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        let pem = params.self_signed(&key).unwrap().pem();
        let error = sealing_certificate(pem.as_bytes(), SystemTime::now())
            .err()
            .unwrap();
        assert!(
            error
                .to_string()
                .contains("expired certificate on 2020-01-01"),
            "{error}"
        );
        assert!(sealing_certificate(b"junk", SystemTime::now()).is_err());
    }
}
