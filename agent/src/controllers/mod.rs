//! One module per controller; each has a `run` that drives it until shutdown.

pub mod application;
pub mod sealed_secret;
