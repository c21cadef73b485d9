//! The in-process baseline: a bare axum server that answers `{}` and does
//! nothing else (the `publish` baseline, the `handler` scenario's sink),
//! and the count of requests it answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Requests a bare server answered, and when the first and last arrived:
/// the handler scenario's sink rate is measured where the requests land.
pub struct Hits {
    /// Shared with the progress line.
    pub count: Arc<AtomicU64>,
    /// Nanoseconds since `epoch`.
    pub first_ns: AtomicU64,
    pub last_ns: AtomicU64,
    pub epoch: Instant,
}

impl Hits {
    pub fn new() -> Self {
        Self {
            count: Arc::new(AtomicU64::new(0)),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        self.first_ns.store(u64::MAX, Ordering::SeqCst);
        self.last_ns.store(0, Ordering::SeqCst);
    }

    pub fn hit(&self) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.first_ns.fetch_min(now, Ordering::Relaxed);
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Requests since the last reset and the time from the first to the last.
    pub fn span(&self) -> (u64, Duration) {
        let (first, last) = (
            self.first_ns.load(Ordering::SeqCst),
            self.last_ns.load(Ordering::SeqCst),
        );
        (
            self.count(),
            Duration::from_nanos(last.saturating_sub(first)),
        )
    }

    pub fn rate(&self) -> f64 {
        let (count, span) = self.span();
        count as f64 / span.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// The baseline: an axum server whose route `path` reads the body and
/// answers `{}` (counting into `hits` if given). It runs on its own runtime
/// and threads, sized like switchyard's, so it does not share the client's
/// scheduler: the same footing as a separate process.
pub struct BareServer {
    pub addr: SocketAddr,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl BareServer {
    pub fn start(path: &'static str, hits: Option<Arc<Hits>>) -> Result<Self> {
        let app = axum::Router::new().route(
            path,
            axum::routing::post(move |_body: bytes::Bytes| {
                let hits = hits.clone();
                async move {
                    if let Some(hits) = hits {
                        hits.hit();
                    }
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        "{}",
                    )
                }
            }),
        );
        Self::serve(app)
    }

    /// Serves `app` on a free loopback port, on its own runtime and thread,
    /// until dropped: the bare server's footing for any in-process endpoint
    /// (the `scaleout` scenario's slow sink).
    pub fn serve(app: axum::Router) -> Result<Self> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the bare server")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime =
            tokio::runtime::Runtime::new().context("starting the bare server's runtime")?;
        let thread = std::thread::Builder::new()
            .name("bare-axum".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("a std listener converts");
                    tokio::select! {
                        served = axum::serve(listener, app) => {
                            if let Err(err) = served {
                                eprintln!("bare server: {err}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                // Open keep-alive connections would otherwise hold it up.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
