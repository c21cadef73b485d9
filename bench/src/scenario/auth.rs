//! `auth`: publish with an HS256 bearer token (minted by `switchyard
//! token`) against publish to a server started without a key.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Map, json};
use switchyard_testkit::{KillOnDrop, known_environment};

use crate::cli::{PublishParams, ServerArgs};
use crate::compare::{Comparison, Report};
use crate::load::{Load, drive_publish, event_id, http_client};
use crate::server::{Setup, Switchyard};
use crate::{
    AUTH_TARGET_RATIO, JWT_SECRET_BYTES, JWT_SECRET_ENV, ROUND_PAUSE, SERVER_START_TIMEOUT,
    TOKEN_MINT_TIMEOUT, TOKEN_TTL_MARGIN, TOPIC,
};

/// The two sides of the `auth` scenario, each on servers of its own.
const NO_TOKEN_SIDE: &str = "no token";
const TOKEN_SIDE: &str = "token";

/// A fresh HS256 secret: random bytes, hex-encoded.
pub fn jwt_secret() -> String {
    (0..JWT_SECRET_BYTES)
        .map(|_| format!("{:02x}", fastrand::u8(..)))
        .collect()
}

/// Mints a token that may publish to the bench topic for `ttl`, with the
/// server binary's own `switchyard token` (as an operator would), signed
/// with `secret`.
async fn mint_token(server_args: &ServerArgs, secret: &str, ttl: Duration) -> Result<String> {
    let binary = server_args.binary()?;
    let ttl = format!("{}s", ttl.as_secs());
    let args = [
        "token",
        "--publish",
        TOPIC,
        "--ttl",
        &ttl,
        "--subject",
        "switchyard-bench",
    ];
    let started = Instant::now();
    // The token is a few hundred bytes: it fits in the pipe, so the child
    // never blocks on it before exiting.
    let mut child = KillOnDrop(
        known_environment(&mut Command::new(&binary))
            .args(args)
            .env(JWT_SECRET_ENV, secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} token", binary.display()))?,
    );
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        if started.elapsed() > TOKEN_MINT_TIMEOUT {
            bail!("`switchyard token` printed nothing in {TOKEN_MINT_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let read = |pipe: Option<&mut dyn std::io::Read>| {
        let mut text = String::new();
        if let Some(pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text.trim().to_owned()
    };
    let token = read(child.0.stdout.as_mut().map(|p| p as &mut dyn std::io::Read));
    if !status.success() || token.is_empty() {
        let stderr = read(child.0.stderr.as_mut().map(|p| p as &mut dyn std::io::Read));
        bail!(
            "`{} {}` failed ({status}): {stderr}",
            binary.display(),
            args.join(" ")
        );
    }
    Ok(token)
}

/// Checks that a server started with the secret refuses a publish without
/// a token (else the token rounds would measure nothing) and accepts one
/// with it (else every request of the round would fail).
async fn check_token_required(server: &Switchyard, path: &str, token: &Load) -> Result<()> {
    let client = http_client(1)?;
    let url = server.url(path);
    let id = event_id(0, 0, 0);
    for (load, wanted) in [
        (&Load::Publish, reqwest::StatusCode::UNAUTHORIZED),
        (token, reqwest::StatusCode::OK),
    ] {
        let response = load
            .request(&client, &url, &id, load.body(&id, 0, ""))
            .send()
            .await
            .context("checking that the server asks for the token")?;
        let status = response.status();
        if status != wanted {
            let body = response.text().await.unwrap_or_default();
            let with = if wanted.is_success() {
                "with"
            } else {
                "without"
            };
            bail!("a publish {with} the token was answered {status} ({body}), not {wanted}");
        }
    }
    Ok(())
}

/// Publish with an HS256 bearer token on every request against the same
/// publish to a server started without a key (no header): the same client,
/// body and connections, a fresh server per round, rounds alternating.
pub async fn auth_scenario(params: &PublishParams, server_args: &ServerArgs) -> Result<()> {
    let binary = server_args.describe_binary()?;
    let secret = jwt_secret();
    // The token must outlive every server of the run, each started within
    // SERVER_START_TIMEOUT.
    let per_round = 2.0
        * (params.warmup_s
            + params.duration_s
            + (ROUND_PAUSE + SERVER_START_TIMEOUT).as_secs_f64());
    let ttl = TOKEN_TTL_MARGIN + Duration::from_secs_f64(per_round * f64::from(params.rounds));
    let token = mint_token(server_args, &secret, ttl).await?;
    let mut authorization = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .context("the minted token is not a valid header value")?;
    authorization.set_sensitive(true);
    let token_load = Load::Authorized(authorization);
    let without_key = Setup::default();
    let with_key = Setup {
        jwt_secret: Some(secret),
        ..Setup::default()
    };
    let path = format!("/v1/topics/{TOPIC}/events");
    let mut rounds = Vec::new();
    let mut log_lines = Vec::new();
    let mut data_fs = String::new();
    eprintln!(
        "auth: {} connections, {}s warm-up + {}s measured, {} rounds of each, fsync {}; token of {} B",
        params.connections,
        params.warmup_s,
        params.duration_s,
        params.rounds,
        params.fsync,
        token.len()
    );
    for round in 1..=params.rounds {
        for (side, setup, load) in [
            (NO_TOKEN_SIDE, &without_key, &Load::Publish),
            (TOKEN_SIDE, &with_key, &token_load),
        ] {
            // A fresh server and log per round, as in `publish`: the two
            // sides need servers started differently, and neither inherits
            // the other's segments or memory.
            let server = Switchyard::start(server_args, setup)?;
            data_fs = server.data_filesystem();
            if setup.jwt_secret.is_some() {
                check_token_required(&server, &path, load).await?;
            }
            let pid = server.pid();
            rounds.push(
                drive_publish(side, load, server.url(&path), round, params, Some(pid)).await?,
            );
            log_lines.extend(server.log_lines());
            drop(server);
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }

    let comparison = Comparison::of(&rounds, NO_TOKEN_SIDE, TOKEN_SIDE);
    let cpu_text = match (
        comparison.measured.server_cpu_us_per_request,
        comparison.base.server_cpu_us_per_request,
    ) {
        (Some(token), Some(none)) => {
            format!("; server CPU {token:.0} vs {none:.0} µs/request")
        }
        _ => String::new(),
    };
    let mut results = Map::new();
    results.insert(
        "jwt".into(),
        json!({
            "alg": "HS256",
            "token_bytes": token.len(),
            "publish": [TOPIC],
            "ttl_s": ttl.as_secs(),
            "minted_by": "switchyard token",
        }),
    );
    let report = Report {
        scenario: "auth",
        sent: "structured events".into(),
        notes: vec![
            format!(
                "token: HS256, {} B, may publish to {TOPIC:?}, minted by `switchyard token`, sent as `Authorization: Bearer` on every request \
                 to a server started with {JWT_SECRET_ENV}; no token: a server started without a key, no header",
                token.len()
            ),
            "a fresh server per round; CPU columns: seconds in the measured window, other = the rest of the machine".into(),
        ],
        findings: Vec::new(),
        target: AUTH_TARGET_RATIO,
        condition: None,
        verdict_text: format!("token ≥ {AUTH_TARGET_RATIO}× no token"),
        headline_target: format!("publish with a token ≥ {AUTH_TARGET_RATIO}× without"),
        measured_extra: cpu_text,
        keys: ("no_token", "token"),
        results,
    };
    comparison.report(report, params, &rounds, binary, &data_fs, &log_lines)
}
