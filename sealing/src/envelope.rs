//! Seal and open one value in the bitnami sealed-secrets hybrid format:
//!
//! ```text
//! u16 BE length of the RSA part ‖ RSA-OAEP(SHA-256, MGF1-SHA-256, label)(32-byte session key)
//!                              ‖ AES-256-GCM(session key, zero nonce, no AAD)(value)
//! ```
//!
//! The nonce is all zeros because every session key is fresh and used for exactly one value.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use rand::Rng;
use zeroize::Zeroizing;

/// AES-256 key length.
const SESSION_KEY_LEN: usize = 32;

/// Why sealing or opening failed. Messages never contain the value or key material.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The RSA public key could not be used for OAEP.
    #[error("failed to use the public key for RSA-OAEP")]
    PublicKey,
    /// The RSA private key could not be used for OAEP.
    #[error("failed to use the private key for RSA-OAEP")]
    PrivateKey,
    /// RSA-OAEP encryption of the session key failed.
    #[error("failed to encrypt the session key")]
    EncryptSessionKey,
    /// AES-GCM encryption failed.
    #[error("failed to encrypt the value")]
    EncryptValue,
    /// The ciphertext is shorter than its own length prefix says.
    #[error("failed to open the value: ciphertext is truncated")]
    Truncated,
    /// RSA-OAEP decryption failed: another key, another scope label, or corrupted bytes.
    #[error("failed to open the value: no key could decrypt it (wrong key or wrong scope)")]
    DecryptSessionKey,
    /// The AES-GCM tag did not verify.
    #[error("failed to open the value: the encrypted data is corrupted")]
    DecryptValue,
}

/// Seals `plaintext` for the holder of the private key matching `public_key`, bound to `label`.
pub fn seal(
    public_key: &PublicEncryptingKey,
    label: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let oaep =
        OaepPublicEncryptingKey::new(public_key.clone()).map_err(|_| EnvelopeError::PublicKey)?;
    let mut session_key = Zeroizing::new([0u8; SESSION_KEY_LEN]);
    rand::rng().fill_bytes(session_key.as_mut_slice());

    let mut rsa_part = vec![0u8; oaep.ciphertext_size()];
    let rsa_len = oaep
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            session_key.as_slice(),
            &mut rsa_part,
            Some(label),
        )
        .map_err(|_| EnvelopeError::EncryptSessionKey)?
        .len();
    rsa_part.truncate(rsa_len);
    let prefix = u16::try_from(rsa_len).map_err(|_| EnvelopeError::EncryptSessionKey)?;

    let cipher = Aes256Gcm::new_from_slice(session_key.as_slice())
        .map_err(|_| EnvelopeError::EncryptValue)?;
    let aes_part = cipher
        .encrypt(&Nonce::default(), plaintext)
        .map_err(|_| EnvelopeError::EncryptValue)?;

    let mut out = Vec::with_capacity(2 + rsa_part.len() + aes_part.len());
    out.extend_from_slice(&prefix.to_be_bytes());
    out.extend_from_slice(&rsa_part);
    out.extend_from_slice(&aes_part);
    Ok(out)
}

/// Opens a value sealed by [`seal`] (or by upstream kubeseal) with `private_key` and `label`.
pub fn open(
    private_key: &PrivateDecryptingKey,
    label: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    let (prefix, rest) = ciphertext
        .split_at_checked(2)
        .ok_or(EnvelopeError::Truncated)?;
    let rsa_len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    let (rsa_part, aes_part) = rest
        .split_at_checked(rsa_len)
        .ok_or(EnvelopeError::Truncated)?;

    let oaep = OaepPrivateDecryptingKey::new(private_key.clone())
        .map_err(|_| EnvelopeError::PrivateKey)?;
    let mut session_key = Zeroizing::new(vec![0u8; oaep.min_output_size()]);
    let key_len = oaep
        .decrypt(
            &OAEP_SHA256_MGF1SHA256,
            rsa_part,
            &mut session_key,
            Some(label),
        )
        .map_err(|_| EnvelopeError::DecryptSessionKey)?
        .len();
    if key_len != SESSION_KEY_LEN {
        return Err(EnvelopeError::DecryptSessionKey);
    }
    let cipher = Aes256Gcm::new_from_slice(&session_key[..SESSION_KEY_LEN])
        .map_err(|_| EnvelopeError::DecryptSessionKey)?;
    cipher
        .decrypt(&Nonce::default(), aes_part)
        .map(Zeroizing::new)
        .map_err(|_| EnvelopeError::DecryptValue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::KeySize;

    fn test_key() -> PrivateDecryptingKey {
        // 2048 bits keeps the debug-build test fast; the format does not depend on the size.
        PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap()
    }

    #[test]
    fn sealed_value_opens_with_the_same_key_and_label() {
        let key = test_key();
        let sealed = seal(&key.public_key(), b"ns/name", b"hunter2").unwrap();
        assert_eq!(
            &sealed[..2],
            &256u16.to_be_bytes(),
            "RSA-2048 part is 256 bytes"
        );
        assert_eq!(
            sealed.len(),
            2 + 256 + 7 + 16,
            "prefix, RSA part, value, GCM tag"
        );
        assert_eq!(
            open(&key, b"ns/name", &sealed).unwrap().as_slice(),
            b"hunter2"
        );
    }

    #[test]
    fn each_seal_uses_a_fresh_session_key() {
        let key = test_key();
        let first = seal(&key.public_key(), b"", b"same").unwrap();
        let second = seal(&key.public_key(), b"", b"same").unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn wrong_label_or_key_is_refused() {
        let key = test_key();
        let sealed = seal(&key.public_key(), b"ns/name", b"v").unwrap();
        assert_eq!(
            open(&key, b"ns/other", &sealed),
            Err(EnvelopeError::DecryptSessionKey)
        );
        assert_eq!(
            open(&test_key(), b"ns/name", &sealed),
            Err(EnvelopeError::DecryptSessionKey)
        );
    }

    #[test]
    fn truncated_and_corrupted_input_is_refused() {
        let key = test_key();
        let mut sealed = seal(&key.public_key(), b"", b"value").unwrap();
        assert_eq!(open(&key, b"", &sealed[..1]), Err(EnvelopeError::Truncated));
        assert_eq!(
            open(&key, b"", &sealed[..100]),
            Err(EnvelopeError::Truncated)
        );
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(open(&key, b"", &sealed), Err(EnvelopeError::DecryptValue));
    }

    #[test]
    fn empty_value_round_trips() {
        let key = test_key();
        let sealed = seal(&key.public_key(), b"ns", b"").unwrap();
        assert!(open(&key, b"ns", &sealed).unwrap().is_empty());
    }
}
