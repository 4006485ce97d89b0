//! Reading the sealing certificate (the public half that `kubeseal` seals against) and the
//! private keys that open what was sealed.

use std::time::SystemTime;

use aws_lc_rs::rsa::{PrivateDecryptingKey, PublicEncryptingKey};
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, Encode};
use zeroize::Zeroizing;

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
    not_before: SystemTime,
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
            not_before: tbs.validity().not_before.to_system_time(),
            not_after: tbs.validity().not_after.to_system_time(),
        })
    }

    /// The RSA public key to seal with.
    pub fn public_key(&self) -> &PublicEncryptingKey {
        &self.public_key
    }

    /// The start of the validity period: upstream orders keys by it (newest seals).
    pub fn not_before(&self) -> SystemTime {
        self.not_before
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

/// Why a private key could not be read. Messages never contain key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrivateKeyError {
    /// No `RSA PRIVATE KEY` or `PRIVATE KEY` PEM block was found.
    #[error("failed to read the private key: no PEM \"RSA PRIVATE KEY\" or \"PRIVATE KEY\" block")]
    NoPrivateKeyBlock,
    /// The PEM block holds an EC key; sealed secrets are RSA only.
    #[error("failed to read the private key: expected an RSA key, found an EC key")]
    NotRsa,
    /// The key bytes are not an RSA key aws-lc accepts.
    #[error("failed to read the private key: the {format} block is not a usable RSA key")]
    Invalid {
        /// `PKCS#1` or `PKCS#8`.
        format: &'static str,
    },
}

/// The PEM label of a PKCS#1 RSA key (what the bitnami controller writes into `tls.key`).
const PKCS1_LABEL: &str = "RSA PRIVATE KEY";
/// The PEM label of a PKCS#8 key.
const PKCS8_LABEL: &str = "PRIVATE KEY";
/// The PEM label of an SEC1 EC key (recognised only to say it is not RSA).
const EC_LABEL: &str = "EC PRIVATE KEY";

/// Parses the first private key of a PEM document: PKCS#8 (`PRIVATE KEY`) or PKCS#1
/// (`RSA PRIVATE KEY`, which upstream's controller writes). Other blocks, such as a certificate
/// in front of the key, are skipped, as Go's `keyutil.ParsePrivateKeyPEM` does.
pub fn parse_private_key_pem(pem: &[u8]) -> Result<PrivateDecryptingKey, PrivateKeyError> {
    let blocks = pem::parse_many(pem).map_err(|_| PrivateKeyError::NoPrivateKeyBlock)?;
    // Take every block's bytes into wiped buffers, so no key copy outlives this call.
    let blocks: Vec<(String, Zeroizing<Vec<u8>>)> = blocks
        .into_iter()
        .map(|block| {
            (
                block.tag().to_string(),
                Zeroizing::new(block.into_contents()),
            )
        })
        .collect();
    for (tag, der) in &blocks {
        match tag.as_str() {
            PKCS8_LABEL => {
                return PrivateDecryptingKey::from_pkcs8(der)
                    .map_err(|_| PrivateKeyError::Invalid { format: "PKCS#8" });
            }
            PKCS1_LABEL => {
                let pkcs8 = pkcs1_to_pkcs8(der);
                return PrivateDecryptingKey::from_pkcs8(&pkcs8)
                    .map_err(|_| PrivateKeyError::Invalid { format: "PKCS#1" });
            }
            EC_LABEL => return Err(PrivateKeyError::NotRsa),
            _ => {}
        }
    }
    Err(PrivateKeyError::NoPrivateKeyBlock)
}

/// DER of `AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }`.
const RSA_ALGORITHM_IDENTIFIER: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// DER of `INTEGER 0` (the PrivateKeyInfo version).
const VERSION_ZERO: [u8; 3] = [0x02, 0x01, 0x00];

/// Wraps a PKCS#1 `RSAPrivateKey` in a PKCS#8 `PrivateKeyInfo` (aws-lc's decrypting keys load
/// PKCS#8 only): `SEQUENCE { INTEGER 0, AlgorithmIdentifier, OCTET STRING pkcs1 }`.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Zeroizing<Vec<u8>> {
    let octet_string_len = 1 + der_length_len(pkcs1.len()) + pkcs1.len();
    let content_len = VERSION_ZERO.len() + RSA_ALGORITHM_IDENTIFIER.len() + octet_string_len;
    let total = 1 + der_length_len(content_len) + content_len;
    // Sized up front: a reallocation would leave an unwiped copy of the key behind.
    let mut out = Zeroizing::new(Vec::with_capacity(total));
    out.push(0x30);
    push_der_length(&mut out, content_len);
    out.extend_from_slice(&VERSION_ZERO);
    out.extend_from_slice(&RSA_ALGORITHM_IDENTIFIER);
    out.push(0x04);
    push_der_length(&mut out, pkcs1.len());
    out.extend_from_slice(pkcs1);
    out
}

/// How many bytes the DER encoding of `len` takes.
fn der_length_len(len: usize) -> usize {
    if len < 0x80 {
        1
    } else {
        1 + (usize::BITS as usize / 8 - len.leading_zeros() as usize / 8)
    }
}

/// Appends the DER definite-length encoding of `len`.
fn push_der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        // Short form: the length itself, below 128.
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let significant = &bytes[len.leading_zeros() as usize / 8..];
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(significant);
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

    /// Runs openssl (installed on every machine this project builds on) and returns stdout.
    fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or_default()).unwrap();
        drop(input);
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// The public key openssl derives from `private_pem`, as aws-lc loads it.
    fn openssl_public_key(private_pem: &[u8]) -> PublicEncryptingKey {
        let public_pem = openssl(&["pkey", "-pubout"], Some(private_pem));
        let der = pem::parse(public_pem).unwrap().into_contents();
        PublicEncryptingKey::from_der(&der).unwrap()
    }

    /// Sealing to openssl's idea of the public key opens with our parse of the private key.
    fn assert_key_pair(private_pem: &[u8]) {
        let private = parse_private_key_pem(private_pem).unwrap();
        let sealed = crate::seal(&openssl_public_key(private_pem), b"ns/db", b"v").unwrap();
        assert_eq!(
            crate::open(&private, b"ns/db", &sealed).unwrap().as_slice(),
            b"v"
        );
    }

    #[test]
    fn pkcs1_keys_like_upstream_writes_are_read() {
        let pem = openssl(&["genrsa", "-traditional", "2048"], None);
        assert!(String::from_utf8_lossy(&pem).contains("BEGIN RSA PRIVATE KEY"));
        assert_key_pair(&pem);
    }

    #[test]
    fn pkcs8_keys_are_read() {
        let pem = openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            None,
        );
        assert!(String::from_utf8_lossy(&pem).contains("BEGIN PRIVATE KEY"));
        assert_key_pair(&pem);
    }

    #[test]
    fn a_certificate_in_front_of_the_key_is_skipped() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let bundle = format!("{}{}", cert.pem(), key.serialize_pem());
        let private = parse_private_key_pem(bundle.as_bytes()).unwrap();
        let certificate = SealingCertificate::from_pem(cert.pem().as_bytes()).unwrap();
        let sealed = crate::seal(certificate.public_key(), b"", b"v").unwrap();
        assert_eq!(
            crate::open(&private, b"", &sealed).unwrap().as_slice(),
            b"v"
        );
    }

    #[test]
    fn non_rsa_and_garbage_keys_are_refused() {
        let ec = openssl(
            &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
            None,
        );
        assert_eq!(
            parse_private_key_pem(&ec).err(),
            Some(PrivateKeyError::NotRsa)
        );
        let ec8 = openssl(&["pkcs8", "-topk8", "-nocrypt"], Some(&ec));
        assert_eq!(
            parse_private_key_pem(&ec8).err(),
            Some(PrivateKeyError::Invalid { format: "PKCS#8" })
        );
        assert_eq!(
            parse_private_key_pem(b"{\"kind\": \"Secret\"}").err(),
            Some(PrivateKeyError::NoPrivateKeyBlock)
        );
        let broken = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(
            parse_private_key_pem(broken.as_bytes()).err(),
            Some(PrivateKeyError::Invalid { format: "PKCS#1" })
        );
    }

    #[test]
    fn der_lengths_use_the_short_and_long_forms() {
        for (len, expected) in [
            (0x7f_usize, vec![0x7f]),
            (0x80, vec![0x81, 0x80]),
            (0xff, vec![0x81, 0xff]),
            (0x100, vec![0x82, 0x01, 0x00]),
            (0x1_0000, vec![0x83, 0x01, 0x00, 0x00]),
        ] {
            let mut out = Vec::new();
            push_der_length(&mut out, len);
            assert_eq!(out, expected, "length {len:#x}");
            assert_eq!(der_length_len(len), expected.len());
        }
    }
}
