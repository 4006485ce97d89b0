//! The kubeseal wire format, shared by the agent (which opens) and the CLI (which seals).
//!
//! Compatible byte for byte with bitnami sealed-secrets: values sealed by upstream `kubeseal`
//! open here, and values sealed here open in the upstream controller. No Kubernetes client.

pub mod envelope;
pub mod keys;
pub mod scope;

pub use envelope::{EnvelopeError, open, seal};
pub use keys::{CertificateError, SealingCertificate};
pub use scope::Scope;
