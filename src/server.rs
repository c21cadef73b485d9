//! Wiring and lifecycle: open the broker, start the fan-out hubs, serve HTTP,
//! and shut down in order (stop intake, end SSE streams, close connections
//! after a grace period, flush the log, release the data directory).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::{Broker, BrokerError};
use crate::config::Config;
use crate::fanout::Hubs;
use crate::group::Groups;
use crate::handler::{self, Handlers};
use crate::http::{AppState, router};
use crate::ingest::Ingest;
use crate::ingest::webhook::Webhooks;
use crate::metrics::Metrics;
use crate::problem::ConfigProblem;
use crate::topic::Topics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigProblem>),
    /// Shown with the backend's detail: the operator must fix it.
    #[error("cannot open the broker: {}", .0.detail())]
    Broker(BrokerError),
    #[error("invalid token key: {0}")]
    Keys(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl From<BrokerError> for StartError {
    fn from(err: BrokerError) -> Self {
        Self::Broker(err)
    }
}

/// A server that is accepting connections.
pub struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    broker: Arc<Broker>,
    groups: Arc<Groups>,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A token that, when cancelled, starts the graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops intake, ends SSE streams, waits for in-flight requests and
    /// background tasks, then flushes and closes the broker.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Runs until the shutdown token is cancelled, then shuts down.
    pub async fn wait(self) -> std::io::Result<()> {
        let served = self
            .serve
            .await
            .unwrap_or_else(|err| Err(std::io::Error::other(err)));
        self.shutdown.cancel();
        // Shared groups hand their partitions to the other processes now.
        self.groups.leave_all().await;
        self.tracker.close();
        self.tracker.wait().await;
        self.broker.close().await;
        info!("stopped");
        served
    }
}

/// Loads topics, opens the broker and starts serving on `config.listen`.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let verifier = crate::auth::Verifier::load(&config.keys).map_err(StartError::Keys)?;
    if verifier.is_none() && !config.listen.ip().is_loopback() {
        warn!(
            listen = %config.listen,
            "ANONYMOUS ACCESS: no token key is configured and the address is reachable from the network; anyone who reaches it may publish, read and administer"
        );
    }
    if let Some(name) = &config.instance {
        crate::broker::membership::set_process_name(name);
    }
    let topics = Topics::load(&config.topics_dir).map_err(StartError::Config)?;
    let broker = Arc::new(Broker::open(&config.broker, &topics).await?);
    // Topics defined over the API, which handlers may use too.
    let catalog_end = crate::catalog::recover(&topics, &broker).await?;
    let handler_specs = handler::load(&config.handlers_dir, &topics).map_err(StartError::Config)?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let metrics = Arc::new(Metrics::default());
    let hubs = Hubs::start(
        topics.iter().map(|t| t.name.clone()),
        &broker,
        &tracker,
        &shutdown,
    )
    .await?;
    let ingest = Arc::new(Ingest::new(
        topics.clone(),
        Arc::clone(&broker),
        Arc::clone(&metrics),
        config.max_event_bytes,
    ));
    let scheduling = topics.get(crate::topic::SCHEDULE_TOPIC).is_some();
    if scheduling {
        crate::schedule::start(
            Arc::clone(&broker),
            Arc::clone(&ingest),
            config.groups.session,
            &tracker,
            shutdown.clone(),
        );
    }
    let catalog = crate::catalog::Catalog::new(
        topics.clone(),
        Arc::clone(&broker),
        Arc::clone(&ingest),
        hubs.clone(),
        tracker.clone(),
        shutdown.clone(),
    );
    catalog.follow(catalog_end);
    let webhooks = Arc::new(Webhooks::new(
        &topics,
        Arc::clone(&ingest),
        Arc::clone(&metrics),
    ));
    webhooks.recover(&broker).await?;
    // Handlers' groups are theirs alone: shared groups may not take them.
    let reserved = handler_specs
        .iter()
        .flat_map(|spec| {
            spec.groups()
                .into_iter()
                .map(|key| (key, spec.name.clone()))
        })
        .collect();
    let groups = Arc::new(Groups::new(
        Arc::clone(&broker),
        Arc::clone(&ingest),
        topics.clone(),
        reserved,
        config.groups,
    ));
    let services = handler::Services {
        broker: Arc::clone(&broker),
        ingest: Arc::clone(&ingest),
        metrics: Arc::clone(&metrics),
        shutdown: shutdown.clone(),
        session: config.groups.session,
    };
    let handlers = Handlers::start(handler_specs, &topics, &services, &tracker);
    let reloader = Arc::new(crate::reload::Reloader {
        topics_dir: config.topics_dir.clone(),
        handlers_dir: config.handlers_dir.clone(),
        topics: topics.clone(),
        hubs: hubs.clone(),
        handlers: handlers.clone(),
        webhooks: Arc::clone(&webhooks),
        services: services.clone(),
        tracker: tracker.clone(),
        scheduling: scheduling.into(),
        running: Default::default(),
    });
    reloader.on_sighup();
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let state = Arc::new(AppState {
        ingest,
        webhooks,
        handlers,
        groups: Arc::clone(&groups),
        topics,
        catalog,
        reloader,
        broker: Arc::clone(&broker),
        hubs,
        metrics,
        max_event_bytes: config.max_event_bytes,
        max_batch_bytes: config.max_batch_bytes,
        heartbeat: config.heartbeat,
        shutdown: shutdown.clone(),
        verifier,
        metrics_open: config.metrics_open,
        cors_origins: config.cors_origins.clone(),
        port: addr.port(),
    });
    let limits = Limits {
        header_timeout: config.header_timeout,
        max_connections: connection_cap(config.max_connections),
        grace: config.shutdown_grace,
    };
    let serve = tokio::spawn(serve(listener, router(state), limits, shutdown.clone()));
    info!(%addr, broker = broker.kind(), "serving");
    Ok(Running {
        addr,
        shutdown,
        tracker,
        serve,
        broker,
        groups,
    })
}

/// What bounds the connections of one server.
struct Limits {
    header_timeout: Duration,
    max_connections: usize,
    grace: Duration,
}

/// The most connections to serve at once: as configured, else the default
/// within what the open-file limit leaves after the descriptors reserved for
/// the log, so that a flood of connections cannot starve it.
fn connection_cap(configured: Option<usize>) -> usize {
    use crate::config::{DEFAULT_MAX_CONNECTIONS, RESERVED_FILES};
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let open_files = if known {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    let room = open_files.saturating_sub(RESERVED_FILES).max(16);
    match configured {
        Some(cap) => {
            if cap > room {
                warn!(
                    max_connections = cap,
                    open_files,
                    "max_connections leaves fewer than {RESERVED_FILES} of the process's open files for the log; raise the limit (ulimit -n) or lower max_connections"
                );
            }
            cap
        }
        None => room.min(DEFAULT_MAX_CONNECTIONS),
    }
}

/// The accept loop. A connection gets `header_timeout` to send each
/// request's headers (slowloris and idle keep-alive connections are closed);
/// past `max_connections` a new connection is closed at once, so a flood
/// costs the flooder, not the descriptors the log needs. On shutdown it stops
/// accepting, asks every connection to finish, and closes what is still
/// open after `grace`.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // A client that shuts its sending side after the request still
        // gets the answer.
        .half_close(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors or a connection that died in the
                    // backlog: pause rather than spin.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("connection limit reached; closing a new connection");
            drop(stream);
            continue;
        };
        // No Nagle: SSE frames and small answers go out at once.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let app = app.clone();
        let first_byte = limits.header_timeout;
        connections.spawn(async move {
            let _slot = slot;
            // A connection that sends nothing at all is closed like one
            // that sends its headers too slowly.
            let mut first = [0u8; 1];
            if tokio::time::timeout(first_byte, stream.peek(&mut first))
                .await
                .is_err()
            {
                return;
            }
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app))
                .into_owned();
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        info!(connections = open, grace = ?limits.grace, "waiting for open connections");
    }
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            connections = connections.len(),
            "closing connections still open after the shutdown grace period"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    Ok(())
}
