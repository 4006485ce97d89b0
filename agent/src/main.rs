//! `mooring`: the agent and its operator commands.

use std::process::ExitCode;

use clap::Parser;
use mooring_agent::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    mooring_agent::telemetry::init(cli.log_format);
    let result: anyhow::Result<()> = match cli.command {
        Command::Run(args) => mooring_agent::run(*args).await.map_err(Into::into),
        Command::Demo(args) => mooring_agent::demo::run(args).await.map_err(Into::into),
        Command::RenderExec(args) => {
            let Some((program, rest)) = args.command.split_first() else {
                return ExitCode::from(2);
            };
            let error = mooring_agent::gitops::render::sandbox::exec(
                &args.read,
                &args.write,
                args.required,
                std::path::Path::new(program),
                rest,
            );
            eprintln!(
                "mooring render-exec: {}",
                mooring_agent::errors::error_chain(&error)
            );
            return ExitCode::from(126);
        }
        Command::Install(args) => {
            let kubeconfig = args.cluster.kubeconfig.as_deref();
            let options = mooring_agent::install::Options {
                overlay: args.overlay,
                image: &args.image,
                argocd_api: args.argocd_api,
            };
            mooring_agent::install::run(&options, args.apply, kubeconfig)
                .await
                .map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mooring: {error:#}");
            ExitCode::FAILURE
        }
    }
}
