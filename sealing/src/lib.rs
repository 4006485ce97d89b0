//! The kubeseal wire format, shared by the agent (which opens) and the CLI (which seals).
//!
//! Compatible byte for byte with bitnami sealed-secrets: values sealed by upstream `kubeseal`
//! open here, and values sealed here open in the upstream controller. No Kubernetes client.

pub mod envelope;
pub mod keys;
pub mod scope;
pub mod secret;

pub use envelope::{EnvelopeError, open, seal};
pub use keys::{CertificateError, PrivateKeyError, SealingCertificate, parse_private_key_pem};
pub use scope::Scope;
pub use secret::{
    Base64Error, KeyErrors, OpenOne, SealError, UnsealError, decode_base64, encode_base64,
    seal_secret, unseal, update_scope_annotations,
};
