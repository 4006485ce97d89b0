//! One module per controller; each has a `run` that drives it until shutdown.

pub mod application;
pub mod external_secret;
pub mod sealed_secret;
pub mod secret_store;
