//! `kubeseal`: seal Secrets for a mooring (or bitnami sealed-secrets) cluster; a drop-in for
//! upstream bitnami kubeseal, with the same flags and `SEALED_SECRETS_*` environment variables.

mod cert;
mod cli;
mod cluster;
mod documents;
mod merge;
mod output;
mod recovery;
mod run;

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let invocation = cli::parse();
    match run::run(invocation).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
