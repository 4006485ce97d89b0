//! The mooring agent, as a library so that tests can run it in-process.
//!
//! `mooring run` connects to the cluster, serves `/healthz` and `/readyz`, and stops cleanly on
//! SIGTERM or Ctrl-C. The controllers (sync, SealedSecrets, ExternalSecrets) plug in here.

pub mod cli;
pub mod cluster;
pub mod controllers;
pub mod demo;
pub mod duration;
pub mod errors;
pub mod events;
pub mod external_secrets;
pub mod gitops;
pub mod http;
pub mod install;
pub mod leader;
pub mod metrics;
pub mod sealed_secrets;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{ControllerKind, RunArgs};
use crate::controllers::{Job, Stop};
use crate::metrics::Metrics;
use crate::sealed_secrets::keys::KeyRing;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster configuration could not be loaded.
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    /// An HTTP address could not be bound.
    #[error("failed to listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP server failed while running.
    #[error("failed to serve HTTP")]
    Serve(#[source] std::io::Error),
    /// A CRD could not be installed.
    #[error(transparent)]
    Install(#[from] install::Error),
    /// This replica led and lost the Lease: it stops so that it cannot write next to the new
    /// leader, and its pod restarts as a candidate.
    #[error("lost the leader election lease; stopping")]
    LostLeadership,
}

/// Whether the agent can serve: the API server has answered and a sealing key is loaded.
#[derive(Clone, Debug, Default)]
pub struct Health {
    api_server_answered: Arc<AtomicBool>,
    keys: Option<Arc<KeyRing>>,
}

impl Health {
    /// Ready once the API server answered and `keys` holds a key.
    pub fn new(keys: Arc<KeyRing>) -> Health {
        Health {
            api_server_answered: Arc::default(),
            keys: Some(keys),
        }
    }

    /// Whether the agent is ready to serve.
    pub fn is_ready(&self) -> bool {
        self.api_server_answered.load(Ordering::Acquire)
            && self.keys.as_ref().is_none_or(|k| !k.is_empty())
    }

    fn mark_api_server_answered(&self) {
        self.api_server_answered.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.len())
            .finish()
    }
}

/// An agent bound to its HTTP addresses, not yet running.
pub struct Agent {
    args: RunArgs,
    client: kube::Client,
    listener: TcpListener,
    metrics_listener: TcpListener,
    renew_now: Arc<tokio::sync::Notify>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

impl Agent {
    /// Loads the cluster configuration and binds the HTTP addresses.
    pub async fn bind(args: &RunArgs) -> Result<Agent, Error> {
        let listener = bind(args.http_addr).await?;
        Self::with_listener(args, listener).await
    }

    /// Like [`Agent::bind`], with the main HTTP port already bound (socket activation, or a
    /// listener opened in another network namespace).
    pub async fn with_listener(args: &RunArgs, listener: TcpListener) -> Result<Agent, Error> {
        let client = cluster::client(args.cluster.kubeconfig.as_deref()).await?;
        Ok(Agent {
            args: args.clone(),
            client,
            listener,
            metrics_listener: bind(args.metrics_addr).await?,
            renew_now: Arc::default(),
        })
    }

    /// Notifying this adds a new sealing key now, as SIGUSR1 does to a running agent (upstream's
    /// manual renewal).
    pub fn renew_handle(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.renew_now)
    }

    /// The bound HTTP address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(Error::Serve)
    }

    /// The bound metrics address.
    pub fn metrics_addr(&self) -> Result<SocketAddr, Error> {
        self.metrics_listener.local_addr().map_err(Error::Serve)
    }

    /// Runs until `shutdown` completes, then stops the controllers and the HTTP servers (in-flight
    /// requests finish).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "mooring agent starting");
        let stop = Stop::new();
        let metrics = Arc::new(Metrics::default());
        let keys = Arc::new(KeyRing::new(&metrics.sealed_secrets));
        let sealed_secrets = self.args.runs(ControllerKind::SealedSecrets);
        let health = if sealed_secrets {
            Health::new(Arc::clone(&keys))
        } else {
            Health::default()
        };
        let (leading, leader_stop, election) = self.start_election();
        let wiring = Wiring {
            client: self.client.clone(),
            args: &self.args,
            metrics: &metrics,
            events: events::EventSink::new(self.client.clone()),
            stop: stop.clone(),
        };

        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(stop.until(wait_for_api_server(self.client.clone(), health.clone())));
        // The controllers start once this replica leads.
        let mut controllers: Vec<Job> = Vec::new();
        if sealed_secrets {
            // Every replica watches the keys (to serve the certificate); only the leader
            // generates them.
            let key_manager = sealed_secrets::start_keys(
                &wiring,
                Arc::clone(&keys),
                Arc::clone(&self.renew_now),
                leading.clone(),
            );
            tasks.spawn(stop.until(key_manager));
            controllers.push(sealed_secrets::start_controller(&wiring, Arc::clone(&keys)));
        }
        let mut webhook = None;
        if self.args.runs(ControllerKind::Gitops) {
            let (controller, source) = gitops::start(&wiring);
            controllers.push(controller);
            // Every replica receives webhooks: a refresh is an annotation the leader sees (and
            // only the leader fetches ahead, into the cache its controller reads).
            let prefetcher = gitops::webhook::Prefetcher {
                source,
                leading: leading.clone(),
            };
            let (routes, work) = gitops::webhook_start(&wiring, prefetcher);
            tasks.spawn(stop.until(work));
            webhook = Some(routes);
        }
        if self.args.runs(ControllerKind::ExternalSecrets) {
            controllers.extend(external_secrets::start(&wiring));
        }
        drop(wiring);
        tasks.spawn(start_when_leading(
            controllers,
            leading.clone(),
            stop.clone(),
        ));

        let limiter =
            sealed_secrets::api::RateLimiter::new(self.args.rate_limit, self.args.rate_limit_burst);
        let mut kubeseal_api = sealed_secrets::api::router(keys, Arc::new(limiter));
        if let Some(webhook) = webhook {
            kubeseal_api = kubeseal_api.merge(webhook);
        }
        let app =
            http::router(health, kubeseal_api).into_make_service_with_connect_info::<SocketAddr>();
        let main_server = axum::serve(self.listener, app).with_graceful_shutdown(stop.signal());
        let metrics_server = axum::serve(self.metrics_listener, http::metrics_router(metrics))
            .with_graceful_shutdown(stop.signal());
        let servers = async {
            tokio::try_join!(main_server.into_future(), metrics_server.into_future()).map(|_| ())
        };

        let ended = serve_until_stopped(servers, shutdown, lost_leadership(leading), &stop).await;
        // Controllers finish their in-flight reconciles; anything else is cancelled.
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
        }
        // Only now, with no controller writing any more, the Lease is released for the next
        // replica.
        let _ = leader_stop.send(());
        if let Some(election) = election {
            let _ = election.await;
        }
        match ended {
            Ended::Served(served) => served.map_err(Error::Serve)?,
            Ended::LostLease(served) => {
                served.map_err(Error::Serve)?;
                return Err(Error::LostLeadership);
            }
        }
        tracing::info!("mooring agent stopped");
        Ok(())
    }
}

impl Agent {
    /// Starts the leader election when it is on. Returns whether this replica leads (from the
    /// start without election), the sender that releases the Lease, and the election's task.
    fn start_election(
        &self,
    ) -> (
        watch::Receiver<bool>,
        tokio::sync::oneshot::Sender<()>,
        Option<tokio::task::JoinHandle<()>>,
    ) {
        let (leading_tx, leading) = watch::channel(!self.args.leader_elect);
        let (leader_stop, leader_stopped) = tokio::sync::oneshot::channel::<()>();
        let election = self.args.leader_elect.then(|| {
            let identity = self
                .args
                .leader_identity
                .clone()
                .unwrap_or_else(leader::default_identity);
            let mut settings = leader::LeaseSettings::new(&self.args.namespace, &identity);
            settings.duration = self.args.leader_lease_duration;
            settings.retry =
                (settings.duration / 5).clamp(Duration::from_millis(200), Duration::from_secs(2));
            tokio::spawn(leader::run(
                self.client.clone(),
                settings,
                leading_tx,
                async move {
                    let _ = leader_stopped.await;
                },
            ))
        });
        (leading, leader_stop, election)
    }
}

/// How serving ended: the servers stopped (on their own or after a shutdown request), or this
/// replica lost the Lease.
enum Ended {
    Served(std::io::Result<()>),
    LostLease(std::io::Result<()>),
}

/// Serves until the servers end, `shutdown` completes or the Lease is `lost`; in the latter two
/// cases gives the stop signal and lets the servers finish their requests.
async fn serve_until_stopped(
    servers: impl Future<Output = std::io::Result<()>>,
    shutdown: impl Future<Output = ()>,
    lost: impl Future<Output = ()>,
    stop: &Stop,
) -> Ended {
    tokio::pin!(servers);
    let ended = tokio::select! {
        result = &mut servers => Ended::Served(result),
        () = shutdown => {
            stop.stop();
            Ended::Served(servers.await)
        }
        () = lost => {
            stop.stop();
            Ended::LostLease(servers.await)
        }
    };
    stop.stop();
    ended
}

/// What each job's start function is given: the cluster, the flags, the shared metrics and
/// event sink, and the agent's stop signal.
pub(crate) struct Wiring<'a> {
    /// The API client.
    pub client: kube::Client,
    /// The agent's flags.
    pub args: &'a RunArgs,
    /// Every metric family.
    pub metrics: &'a Metrics,
    /// Where events are published.
    pub events: events::EventSink,
    /// Completes when the agent stops.
    pub stop: Stop,
}

/// Runs `controllers` once this replica leads, until they end or the agent stops.
async fn start_when_leading(controllers: Vec<Job>, mut leading: watch::Receiver<bool>, stop: Stop) {
    tokio::select! {
        led = leading.wait_for(|leading| *leading) => if led.is_err() { return },
        () = stop.signal() => return,
    }
    futures::future::join_all(controllers).await;
}

/// Runs the agent until SIGTERM or Ctrl-C; SIGUSR1 adds a new sealing key, as upstream.
pub async fn run(args: RunArgs) -> Result<(), Error> {
    let agent = Agent::bind(&args).await?;
    let renew = agent.renew_handle();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
        Ok(mut usr1) => {
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    renew.notify_one();
                }
            });
        }
        Err(error) => {
            tracing::warn!(%error, "failed to listen for SIGUSR1; manual key renewal is off")
        }
    }
    agent.run(shutdown_signal()).await
}

/// Marks the agent ready once the API server answers a version request; retries with backoff
/// (capped at 10 s) for as long as the agent runs.
async fn wait_for_api_server(client: kube::Client, health: Health) {
    let mut delay = Duration::from_millis(200);
    loop {
        match client.apiserver_version().await {
            Ok(info) => {
                tracing::info!(version = %info.git_version, "connected to the API server");
                health.mark_api_server_answered();
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

/// Completes when this replica led and then stopped leading; never without election.
async fn lost_leadership(mut leading: watch::Receiver<bool>) {
    if leading.wait_for(|l| *l).await.is_err() || leading.wait_for(|l| !*l).await.is_err() {
        std::future::pending::<()>().await;
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
