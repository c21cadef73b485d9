//! Wiring and lifecycle: open the broker, start the fan-out hubs, serve HTTP,
//! and shut down in order (stop intake, end SSE streams, flush the log).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::broker::{Broker, BrokerError};
use crate::config::Config;
use crate::group::Groups;
use crate::handler::{self, Handlers};
use crate::http::{AppState, router};
use crate::ingest::Ingest;
use crate::ingest::webhook::Webhooks;
use crate::metrics::Metrics;
use crate::stream::Hubs;
use crate::topic::{ConfigProblem, Topics};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigProblem>),
    #[error("cannot open the broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A server that is accepting connections.
pub struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    broker: Arc<Broker>,
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
        self.tracker.close();
        self.tracker.wait().await;
        self.broker.close().await;
        info!("stopped");
        served
    }
}

/// Loads topics, opens the broker and starts serving on `config.listen`.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let topics = Topics::load(&config.topics_dir).map_err(StartError::Config)?;
    let handler_specs = handler::load(&config.handlers_dir, &topics).map_err(StartError::Config)?;
    let broker = Arc::new(Broker::open(&config.broker, &topics).await?);
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
    let webhooks = Webhooks::new(&topics, Arc::clone(&ingest), Arc::clone(&metrics));
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
    let groups = Groups::new(Arc::clone(&broker), reserved);
    let handlers = Handlers::start(
        handler_specs,
        &topics,
        &broker,
        &ingest,
        &metrics,
        &tracker,
        &shutdown,
    );
    let state = Arc::new(AppState {
        ingest,
        webhooks,
        handlers,
        groups,
        topics,
        broker: Arc::clone(&broker),
        hubs,
        metrics,
        max_event_bytes: config.max_event_bytes,
        max_batch_bytes: config.max_batch_bytes,
        heartbeat: config.heartbeat,
        shutdown: shutdown.clone(),
    });
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
    let app = router(state);
    let token = shutdown.clone();
    let serve = tokio::spawn(async move {
        // No Nagle: SSE frames and small answers go out at once.
        let listener = listener.tap_io(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
    });
    info!(%addr, broker = broker.kind(), "serving");
    Ok(Running {
        addr,
        shutdown,
        tracker,
        serve,
        broker,
    })
}
