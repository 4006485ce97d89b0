//! One module per controller; each has a `run` that drives it until shutdown.

pub mod sealed_secret;
