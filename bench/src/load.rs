//! The publish-shaped load client shared by `publish`, `webhook`, `auth` and
//! `backends`: what each request carries (`Load`), and `drive_publish`,
//! which keeps a number of connections busy for a warm-up and a measured
//! window and reports the round.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine;
use serde::Serialize;

use crate::cli::PublishParams;
use crate::report::Progress;
use crate::stats::{Percentiles, mib};
use crate::usage::{CpuSplit, CpuWindow, ProcUsage};
use crate::{
    CONNECT_TIMEOUT, ERROR_BACKOFF, EVENT_TYPE, KEYS, PUBLISH_BODY_BYTES, REQUEST_TIMEOUT,
    STRUCTURED, WEBHOOK_SECRET_BYTES,
};

/// One round of load against one server.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub server: &'static str,
    pub round: u32,
    pub requests_per_s: f64,
    pub latency_ms: Percentiles,
    pub ok: u64,
    /// Non-2xx answers.
    pub errors_status: u64,
    /// Requests that got no answer (connect failure, reset, timeout).
    pub errors_transport: u64,
    /// Webhooks answered `"duplicate": true`, stored nothing (counted in `ok`).
    pub duplicates: u64,
    /// CPU time during the measured window.
    pub cpu: CpuSplit,
    /// The switchyard process's peak resident memory (VmHWM).
    pub server_peak_rss_mib: Option<f64>,
}

/// What one client connection saw.
#[derive(Default)]
struct WorkerTally {
    latencies: Vec<u64>,
    errors_status: u64,
    errors_transport: u64,
    duplicates: u64,
    first_error: Option<String>,
}

/// What the load workers send.
#[derive(Clone)]
pub enum Load {
    /// 1 KiB structured CloudEvents to `POST /v1/topics/bench/events`.
    Publish,
    /// The same, each with this `Authorization: Bearer …` header (built
    /// once, so the client does no per-request work for it beyond sending it).
    Authorized(reqwest::header::HeaderValue),
    /// 1 KiB JSON bodies to `POST /v1/webhooks/bench`, signed per Standard
    /// Webhooks with this key (the secret without `whsec_`, decoded).
    Webhook(Arc<[u8]>),
}

impl Load {
    pub fn body(&self, id: &str, seq: u64, pad: &str) -> String {
        match self {
            Self::Publish | Self::Authorized(_) => publish_body(id, seq, pad),
            Self::Webhook(_) => webhook_body(seq, pad),
        }
    }

    /// Fills each body up to `PUBLISH_BODY_BYTES`.
    pub fn padding(&self) -> String {
        // Ids are fixed-width, so one length stands for all.
        let unpadded = self.body(&event_id(0, 0, 0), 0, "").len();
        "x".repeat(PUBLISH_BODY_BYTES.saturating_sub(unpadded))
    }

    pub fn request(
        &self,
        client: &reqwest::Client,
        url: &str,
        id: &str,
        body: String,
    ) -> reqwest::RequestBuilder {
        let request = client.post(url).timeout(REQUEST_TIMEOUT);
        match self {
            Self::Publish => request
                .header(reqwest::header::CONTENT_TYPE, STRUCTURED)
                .body(body),
            Self::Authorized(authorization) => request
                .header(reqwest::header::CONTENT_TYPE, STRUCTURED)
                .header(reqwest::header::AUTHORIZATION, authorization.clone())
                .body(body),
            Self::Webhook(key) => {
                let timestamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
                    .to_string();
                let signature = sign_webhook(key, id, &timestamp, body.as_bytes());
                request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("webhook-id", id)
                    .header("webhook-timestamp", timestamp)
                    .header("webhook-signature", format!("v1,{signature}"))
                    .body(body)
            }
        }
    }
}

/// A unique, fixed-width id: a source deduplicates webhook ids, so a reused
/// one would be answered without being stored.
pub fn event_id(round: u32, worker: usize, seq: u64) -> String {
    format!("{round:02}-{worker:04}-{seq:012}")
}

/// A 1 KiB structured CloudEvent; `id` and `k` vary, `pad` fills it up.
pub fn publish_body(id: &str, seq: u64, pad: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"/bench","type":"{EVENT_TYPE}","data":{{"k":"k{:03}","pad":"{pad}"}}}}"#,
        seq % KEYS
    )
}

/// A webhook's body: the event's data, keyed like a published event's.
pub fn webhook_body(seq: u64, pad: &str) -> String {
    format!(r#"{{"k":"k{:03}","pad":"{pad}"}}"#, seq % KEYS)
}

/// A fresh `whsec_…` secret and the key it encodes.
pub fn webhook_secret() -> (String, Arc<[u8]>) {
    let key: Vec<u8> = (0..WEBHOOK_SECRET_BYTES)
        .map(|_| fastrand::u8(..))
        .collect();
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(&key)
    );
    (secret, key.into())
}

/// Standard Webhooks: base64 of HMAC-SHA256 over `id.timestamp.body`.
fn sign_webhook(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
        mac.update(part);
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub fn http_client(pool: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .context("building the HTTP client")
}

/// Drives one server with `connections` workers, each posting `load` back
/// to back, and measures what completes inside the window after the warm-up.
/// `server` names the rounds; `usage_of` is the server process to measure.
pub async fn drive_publish(
    server: &'static str,
    load: &Load,
    url: String,
    round: u32,
    params: &PublishParams,
    usage_of: Option<u32>,
) -> Result<Round> {
    let label = format!("{server}, round {round}");
    let client = http_client(params.connections)?;
    let pad: Arc<str> = load.padding().into();
    let warmup = Duration::from_secs_f64(params.warmup_s);
    let window = Duration::from_secs_f64(params.duration_s);
    let started = Instant::now();
    let measure_from = started + warmup;
    let end = measure_from + window;
    let completed = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        label.clone(),
        warmup + window,
        Arc::clone(&completed),
        "requests",
    );

    let workers: Vec<_> = (0..params.connections)
        .map(|worker| {
            let (client, url, pad, completed, load) = (
                client.clone(),
                url.clone(),
                Arc::clone(&pad),
                Arc::clone(&completed),
                load.clone(),
            );
            tokio::spawn(async move {
                let mut tally = WorkerTally::default();
                for seq in 0.. {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let id = event_id(round, worker, seq);
                    let request = load.request(&client, &url, &id, load.body(&id, seq, &pad));
                    let outcome = match request.send().await {
                        // Read the whole answer so the connection is reused.
                        Ok(response) => {
                            let status = response.status();
                            let body = response.bytes().await;
                            Ok((status, body))
                        }
                        Err(err) => Err(err),
                    };
                    let done = Instant::now();
                    completed.fetch_add(1, Ordering::Relaxed);
                    let counted = sent >= measure_from && done <= end;
                    match outcome {
                        Ok((status, Ok(body))) if status.is_success() => {
                            if counted {
                                tally.latencies.push((done - sent).as_nanos() as u64);
                                if is_duplicate(&body) {
                                    tally.duplicates += 1;
                                }
                            }
                        }
                        Ok((status, body)) => {
                            if counted {
                                tally.errors_status += 1;
                            }
                            if tally.first_error.is_none() {
                                let body = body
                                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                                    .unwrap_or_default();
                                tally.first_error = Some(format!("{status}: {body}"));
                            }
                        }
                        Err(err) => {
                            if counted {
                                tally.errors_transport += 1;
                            }
                            if tally.first_error.is_none() {
                                tally.first_error = Some(format!("{err:#}"));
                            }
                            tokio::time::sleep(ERROR_BACKOFF).await;
                        }
                    }
                }
                tally
            })
        })
        .collect();

    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_window = CpuWindow::start(usage_of)?;
    let mut latencies = Vec::new();
    let (mut errors_status, mut errors_transport, mut duplicates, mut first_error) =
        (0, 0, 0, None);
    for worker in workers {
        let tally = worker.await.context("a load worker panicked")?;
        latencies.extend(tally.latencies);
        errors_status += tally.errors_status;
        errors_transport += tally.errors_transport;
        duplicates += tally.duplicates;
        first_error = first_error.or(tally.first_error);
    }
    let cpu = cpu_window.end()?;
    let peak_rss = usage_of
        .map(ProcUsage::read)
        .transpose()?
        .map(|u| mib(u.peak_rss_bytes));
    drop(progress);
    if let Some(error) = first_error {
        eprintln!("  {label}: first error: {error}");
    }
    let ok = latencies.len() as u64;
    Ok(Round {
        server,
        round,
        requests_per_s: ok as f64 / window.as_secs_f64(),
        latency_ms: Percentiles::of(&mut latencies),
        ok,
        errors_status,
        errors_transport,
        duplicates,
        cpu,
        server_peak_rss_mib: peak_rss,
    })
}

/// Whether a webhook answer says the delivery id was seen before. Only a
/// webhook answer holds the key, so publish answers cost a failed search.
fn is_duplicate(body: &[u8]) -> bool {
    const MARK: &[u8] = br#""duplicate":true"#;
    body.windows(MARK.len()).any(|window| window == MARK)
}

/// Rounds of the publish load against servers of the scenario's own, with
/// what their logs said and where their data lived.
#[derive(Default)]
pub struct FreshRounds {
    pub rounds: Vec<Round>,
    pub log_lines: Vec<String>,
    pub data_fs: String,
}

impl FreshRounds {
    /// The `publish` load on sides that differ in their server's `Setup`,
    /// rounds alternating, each on a fresh server (`scenario`
    /// names the run in its progress line).
    pub async fn alternate<const SIDES: usize>(
        scenario: &str,
        sides: [(&'static str, &crate::server::Setup); SIDES],
        server_args: &crate::cli::ServerArgs,
        params: &PublishParams,
    ) -> Result<Self> {
        eprintln!(
            "{scenario}: {} connections, {}s warm-up + {}s measured, {} rounds of each, fsync {}",
            params.connections, params.warmup_s, params.duration_s, params.rounds, params.fsync
        );
        let mut fresh = Self::default();
        for round in 1..=params.rounds {
            for (side, setup) in sides {
                fresh
                    .run(side, &Load::Publish, (server_args, setup), round, params)
                    .await?;
            }
        }
        Ok(fresh)
    }

    /// One round of `load` on a fresh server started with `setup` (and a
    /// fresh log), so that no round inherits another's segments or memory;
    /// the server is stopped after it.
    pub async fn run(
        &mut self,
        side: &'static str,
        load: &Load,
        (server_args, setup): (&crate::cli::ServerArgs, &crate::server::Setup),
        round: u32,
        params: &PublishParams,
    ) -> Result<()> {
        let server = crate::server::Switchyard::start(server_args, setup)?;
        self.data_fs = server.data_filesystem();
        let url = server.url(&format!("/v1/topics/{}/events", crate::TOPIC));
        let pid = server.pid();
        self.rounds
            .push(drive_publish(side, load, url, round, params, Some(pid)).await?);
        self.log_lines.extend(server.log_lines());
        drop(server);
        tokio::time::sleep(crate::ROUND_PAUSE).await;
        Ok(())
    }
}
