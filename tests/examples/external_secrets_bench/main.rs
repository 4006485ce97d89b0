//! The ExternalSecret measurements that `tests/bench/external-secrets` runs against the real
//! peers of `tests/realenv/up`. Not tests: each prints one line of numbers, and fails only when
//! what it measures falls apart (see each module).
//!
//! `external-secrets-bench few-keys | refresh-storm`; the sizes come from the environment (see
//! the script).

mod few_keys;
mod refresh_storm;
mod support;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("few-keys") => few_keys::run().await,
        Some("refresh-storm") => refresh_storm::run().await,
        _ => anyhow::bail!("usage: external-secrets-bench few-keys|refresh-storm"),
    }
}
