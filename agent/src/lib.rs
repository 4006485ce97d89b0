//! The mooring agent, as a library so that tests can run it in-process.
//!
//! `mooring run` connects to the cluster, serves `/healthz` and `/readyz`, and stops cleanly on
//! SIGTERM or Ctrl-C. The controllers (sync, SealedSecrets, ExternalSecrets) plug in here.

pub mod cli;
pub mod cluster;
pub mod demo;
pub mod http;
pub mod install;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::cli::RunArgs;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster configuration could not be loaded.
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    /// The HTTP address could not be bound.
    #[error("failed to listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed while running.
    #[error("failed to serve HTTP")]
    Serve(#[source] std::io::Error),
    /// A CRD could not be installed.
    #[error(transparent)]
    Install(#[from] install::Error),
    /// A request to the API server failed.
    #[error("failed to {action}")]
    Request {
        /// What was being done, as a verb phrase.
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// What the HTTP endpoints report; shared between the server and the background tasks.
#[derive(Clone, Debug, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Whether the agent is ready to serve: the API server has answered.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

/// An agent bound to its HTTP address, not yet running.
pub struct Agent {
    client: kube::Client,
    listener: TcpListener,
    health: Health,
}

impl Agent {
    /// Loads the cluster configuration and binds the HTTP address.
    pub async fn bind(args: &RunArgs) -> Result<Agent, Error> {
        let client = cluster::client(args.cluster.kubeconfig.as_deref()).await?;
        let listener = TcpListener::bind(args.http_addr)
            .await
            .map_err(|source| Error::Listen {
                addr: args.http_addr,
                source,
            })?;
        Ok(Agent {
            client,
            listener,
            health: Health::default(),
        })
    }

    /// The bound HTTP address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(Error::Serve)
    }

    /// Runs until `shutdown` completes, then stops accepting and finishes in-flight requests.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "mooring agent starting");
        let readiness = tokio::spawn(wait_for_api_server(
            self.client.clone(),
            self.health.clone(),
        ));
        let app = http::router(self.health.clone());
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        readiness.abort();
        served.map_err(Error::Serve)?;
        tracing::info!("mooring agent stopped");
        Ok(())
    }
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs) -> Result<(), Error> {
    Agent::bind(&args).await?.run(shutdown_signal()).await
}

/// Marks the agent ready once the API server answers a version request; retries with backoff
/// (capped at 10 s) for as long as the agent runs.
async fn wait_for_api_server(client: kube::Client, health: Health) {
    let mut delay = Duration::from_millis(200);
    loop {
        match client.apiserver_version().await {
            Ok(info) => {
                tracing::info!(version = %info.git_version, "connected to the API server");
                health.mark_ready();
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "API server not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Completes on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "failed to listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}
