//! The `switchyard` command line: `serve`, and small clients of a running
//! server (`publish`, `tail`, `topics`), and `check` for config files.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde_json::Value;

use crate::config::{Config, Overrides};
use crate::topic::Topics;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "An event bus for integrations: typed CloudEvents on a durable log, published over HTTP, tailed over SSE",
    after_help = "Start with `switchyard serve`, then `switchyard publish orders --type order.created '{\"order_id\":\"o-1\",\"amount\":5}'` and `switchyard tail orders --from earliest`."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text (for people) or JSON (one object a line, for log shippers)
    #[arg(long, global = true, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GroupAction {
    /// Move the group's committed cursor to --to
    Reset,
    /// Remove the group's committed cursor
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: HTTP API, SSE fan-out and the embedded log
    Serve(Box<Overrides>),
    /// Publish one event to a topic and print where it landed
    Publish {
        /// Topic to publish to
        topic: String,
        /// Event type: wraps the JSON as the data of a new CloudEvent;
        /// without it the JSON must be a whole CloudEvent
        #[arg(long = "type", short = 't')]
        ty: Option<String>,
        /// Subject of the new event (with --type)
        #[arg(long, requires = "ty")]
        subject: Option<String>,
        /// The JSON: inline, @file, or - for standard input
        json: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow a topic and print each event as one JSON line; reconnects and
    /// resumes by itself
    Tail {
        /// Topic to follow
        topic: String,
        /// Where to start: earliest, latest, a cursor, or an RFC 3339 time (e.g. 2026-12-01T09:00:00Z: the first event stored then or later)
        #[arg(long, default_value = "latest")]
        from: String,
        /// Only these event types (comma-separated)
        #[arg(long)]
        types: Option<String>,
        /// Only events whose subject starts with this
        #[arg(long)]
        subject: Option<String>,
        /// Only events a CEL expression is true of, e.g. 'data.amount > 100 && data.currency == "EUR"'
        #[arg(long)]
        filter: Option<String>,
        /// Print the SSE id (cursor) before each event, tab-separated
        #[arg(long)]
        cursors: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the server's topics and their event types
    Topics {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a topic's consumer groups with their lag, or reset or delete one
    /// (needs the admin scope)
    #[command(
        after_help = "Examples:\n  switchyard groups orders                                   list groups, lag per partition, who is active\n  switchyard groups orders reset billing --to earliest       deliver everything retained again\n  switchyard groups orders reset billing --to 2026-12-01T09:00:00Z\n  switchyard groups orders reset billing --to latest         skip everything stored so far\n  switchyard groups orders delete billing                    forget the group; the next receive starts it afresh\n\nReset and delete are refused (409 group_active) while a member holds a lease or waits in a receive, or another Switchyard process serves the group."
    )]
    Groups {
        /// Topic whose groups to list or change
        topic: String,
        /// What to do with one group (without it: list them all)
        #[arg(value_enum, requires = "group")]
        action: Option<GroupAction>,
        /// The group to reset or delete
        group: Option<String>,
        /// Where reset moves the group: earliest, latest, an RFC 3339 time (the first event stored then or later) or a cursor
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Re-drive a handler's dead letters through it (all of them, or by id
    /// or cursor range over the dead-letter topic)
    Replay {
        /// Handler whose dead letters to re-drive
        handler: String,
        /// Only these dead-letter event ids (comma-separated)
        #[arg(long, value_delimiter = ',')]
        ids: Vec<String>,
        /// Start of the cursor range over the dead-letter topic
        #[arg(long)]
        from: Option<String>,
        /// End of the cursor range over the dead-letter topic
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Mint a bearer token (HS256, signed with SWITCHYARD_JWT_SECRET) and print it
    #[command(
        after_help = "Example: switchyard token --publish orders --subscribe 'orders.*' --consume billing --ttl 30d\nPresent it as `Authorization: Bearer <token>`, the switchyard_token cookie, or ?access_token=."
    )]
    Token {
        /// Topics it may publish to (patterns: orders, orders.*, *); repeat or comma-separate
        #[arg(long, value_delimiter = ',')]
        publish: Vec<String>,
        /// Topics it may read over SSE and pages
        #[arg(long, value_delimiter = ',')]
        subscribe: Vec<String>,
        /// Consumer groups it may receive, ack and nack in
        #[arg(long, value_delimiter = ',')]
        consume: Vec<String>,
        /// May replay dead letters, see handler status and metrics, and do everything else
        #[arg(long)]
        admin: bool,
        /// How long it is valid, e.g. 1h, 30d
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Who it is for (the sub claim)
        #[arg(long)]
        subject: Option<String>,
        /// The HS256 secret the server checks tokens with
        #[arg(long, env = "SWITCHYARD_JWT_SECRET", hide_env_values = true)]
        secret: String,
    },
    /// Validate the config file and every topic file; non-zero exit on any problem
    Check {
        #[command(flatten)]
        files: FilesArgs,
    },
    /// Print the AsyncAPI 3.0 document of the topics, webhook sources and
    /// handlers (the server serves it at GET /v1/asyncapi.json)
    Asyncapi {
        #[command(flatten)]
        files: FilesArgs,
        /// The server's host:port, as clients reach it [default: the config's listen address]
        #[arg(long)]
        host: Option<String>,
    },
}

/// Where the files are, for the commands that read them without a server.
#[derive(Debug, clap::Args)]
pub struct FilesArgs {
    /// Config file [default: ./switchyard.toml when it exists]
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of topic definitions [default: ./topics]
    #[arg(long, env = "SWITCHYARD_TOPICS_DIR")]
    topics_dir: Option<PathBuf>,
    /// Directory of handler definitions [default: ./handlers]
    #[arg(long, env = "SWITCHYARD_HANDLERS_DIR")]
    handlers_dir: Option<PathBuf>,
}

impl FilesArgs {
    fn overrides(self) -> Overrides {
        Overrides {
            config: self.config,
            topics_dir: self.topics_dir,
            handlers_dir: self.handlers_dir,
            ..Overrides::default()
        }
    }
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// Base URL of the Switchyard server
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token for a server that needs one (see `switchyard token`)
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ClientArgs {
    /// An HTTP client that presents the token, when there is one.
    fn http(&self) -> Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &self.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .default_headers(headers)
            .build()
            .context("building the HTTP client")
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(overrides) => serve(*overrides).await,
        Command::Publish {
            topic,
            ty,
            subject,
            json,
            client,
        } => publish(&client, &topic, ty, subject, &json).await,
        Command::Tail {
            topic,
            from,
            types,
            subject,
            filter,
            cursors,
            client,
        } => tail(&client, &topic, from, [types, subject, filter], cursors).await,
        Command::Topics { client } => topics(&client).await,
        Command::Groups {
            topic,
            action,
            group,
            to,
            client,
        } => groups(&client, &topic, action.zip(group), to).await,
        Command::Replay {
            handler,
            ids,
            from,
            to,
            client,
        } => {
            let selection = serde_json::json!({"ids": ids, "from": from, "to": to});
            let response = client
                .http()?
                .post(client.endpoint(&format!("/v1/handlers/{handler}/replay")))
                .json(&selection)
                .send()
                .await
                .with_context(|| format!("cannot reach {}", client.url))?;
            if !response.status().is_success() {
                return fail_with(response).await;
            }
            println!("{}", response.text().await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            publish,
            subscribe,
            consume,
            admin,
            ttl,
            subject,
            secret,
        } => {
            use crate::auth::{Pattern, Scopes};
            let ttl = crate::problem::parse_duration(&ttl, "30d")
                .map_err(|reason| anyhow::anyhow!("--ttl {reason}"))?;
            let patterns = |names: Vec<String>| names.into_iter().map(Pattern::new).collect();
            let scopes = Scopes {
                publish: patterns(publish),
                subscribe: patterns(subscribe),
                consume: patterns(consume),
                admin,
            };
            if scopes == Scopes::default() {
                anyhow::bail!(
                    "the token would allow nothing: give --publish, --subscribe, --consume or --admin"
                );
            }
            if secret.len() < crate::auth::MIN_SECRET_BYTES {
                anyhow::bail!(
                    "the secret is shorter than {} bytes, so the server would refuse it; use a long random one (e.g. `openssl rand -hex 32`)",
                    crate::auth::MIN_SECRET_BYTES
                );
            }
            let claims = crate::auth::claims_for(scopes, subject, ttl);
            let token = crate::auth::mint(&secret, &claims).map_err(anyhow::Error::msg)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { files } => check(files.overrides()),
        Command::Asyncapi { files, host } => asyncapi(files.overrides(), host),
    }
}

async fn serve(overrides: Overrides) -> Result<ExitCode> {
    let config = Config::load(&overrides).map_err(|problems| {
        anyhow::anyhow!(
            "invalid configuration:\n{}",
            problems
                .iter()
                .map(|p| format!("  {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let running = crate::server::start(config).await?;
    println!("switchyard listening on http://{}", running.local_addr());
    std::io::stdout().flush()?;
    let token = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    running.wait().await?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Prints a server error body readably and turns it into a failure.
async fn fail_with(response: reqwest::Response) -> Result<ExitCode> {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or(body);
    eprintln!("error: {status}: {message}");
    Ok(ExitCode::FAILURE)
}

fn read_json_arg(arg: &str) -> Result<Vec<u8>> {
    let bytes = if arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        buf
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read(path).with_context(|| format!("reading {path}"))?
    } else {
        arg.as_bytes().to_vec()
    };
    serde_json::from_slice::<Value>(&bytes).context("the event is not valid JSON")?;
    Ok(bytes)
}

async fn publish(
    args: &ClientArgs,
    topic: &str,
    ty: Option<String>,
    subject: Option<String>,
    json: &str,
) -> Result<ExitCode> {
    let body = read_json_arg(json)?;
    let url = args.endpoint(&format!("/v1/topics/{topic}/events"));
    let request = match &ty {
        Some(ty) => {
            let mut query = vec![("type", ty.clone())];
            query.extend(subject.map(|s| ("subject", s)));
            args.http()?
                .post(url)
                .query(&query)
                .header("content-type", "application/json")
        }
        None => args
            .http()?
            .post(url)
            .header("content-type", "application/cloudevents+json"),
    };
    let response = request
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.url))?;
    if !response.status().is_success() {
        return fail_with(response).await;
    }
    println!("{}", response.text().await?);
    Ok(ExitCode::SUCCESS)
}

async fn topics(args: &ClientArgs) -> Result<ExitCode> {
    let response = args
        .http()?
        .get(args.endpoint("/v1/topics"))
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.url))?;
    if !response.status().is_success() {
        return fail_with(response).await;
    }
    let body: Value = response.json().await?;
    println!("{:<24} {:>10}  TYPES", "TOPIC", "PARTITIONS");
    for topic in body["topics"].as_array().into_iter().flatten() {
        let types: Vec<&str> = topic["types"]
            .as_object()
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default();
        println!(
            "{:<24} {:>10}  {}",
            topic["name"].as_str().unwrap_or(""),
            topic["partitions"],
            types.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `switchyard groups`: the list, or one group reset or deleted.
async fn groups(
    args: &ClientArgs,
    topic: &str,
    action: Option<(GroupAction, String)>,
    to: Option<String>,
) -> Result<ExitCode> {
    let http = args.http()?;
    let base = args.endpoint(&format!("/v1/topics/{topic}/groups"));
    let request = match (&action, to) {
        (None, None) => http.get(&base),
        (Some((GroupAction::Reset, group)), Some(to)) => http
            .post(format!("{base}/{group}/reset"))
            .json(&serde_json::json!({ "to": to })),
        (Some((GroupAction::Reset, _)), None) => {
            anyhow::bail!("reset needs --to earliest|latest|<RFC 3339 time>|<cursor>")
        }
        (Some((GroupAction::Delete, group)), None) => http.delete(format!("{base}/{group}")),
        (_, Some(_)) => anyhow::bail!("--to is for reset only"),
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.url))?;
    if !response.status().is_success() {
        return fail_with(response).await;
    }
    let body: Value = response.json().await?;
    match action {
        Some((GroupAction::Reset, group)) => {
            println!(
                "group {group} reset to {}",
                body["committed"].as_str().unwrap_or("")
            );
        }
        Some((GroupAction::Delete, group)) => println!("group {group} deleted"),
        None => {
            println!(
                "{:<24} {:>8} {:<8} {:<24} COMMITTED",
                "GROUP", "LAG", "ACTIVE", "MEMBERS"
            );
            for group in body["groups"].as_array().into_iter().flatten() {
                let members: Vec<&str> = group["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(group["processes"].as_array().into_iter().flatten())
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "{:<24} {:>8} {:<8} {:<24} {}",
                    group["name"].as_str().unwrap_or(""),
                    group["lag"],
                    if group["active"] == true { "yes" } else { "no" },
                    if members.is_empty() {
                        "-".to_owned()
                    } else {
                        members.join(",")
                    },
                    group["committed"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit code of `tail` when the server says the cursor fell behind retention.
const EXIT_LAGGED: u8 = 3;

/// `filters`: `types`, `subject` and `filter` (CEL), as the stream takes them.
async fn tail(
    args: &ClientArgs,
    topic: &str,
    from: String,
    filters: [Option<String>; 3],
    cursors: bool,
) -> Result<ExitCode> {
    let http = args.http()?;
    let url = args.endpoint(&format!("/v1/topics/{topic}/stream"));
    let mut last_id: Option<String> = None;
    let mut backoff = Duration::from_millis(crate::fanout::RETRY_HINT_MS);
    let mut stdout = std::io::stdout().lock();
    loop {
        let mut query = vec![("from", from.clone())];
        for (name, value) in ["types", "subject", "filter"].into_iter().zip(&filters) {
            query.extend(value.clone().map(|value| (name, value)));
        }
        let mut request = http.get(&url).query(&query);
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = match request.send().await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) if response.status().is_client_error() => {
                return fail_with(response).await;
            }
            Ok(response) => {
                eprintln!(
                    "tail: server answered {}; retrying in {backoff:?}",
                    response.status()
                );
                tokio::time::sleep(backoff).await;
                continue;
            }
            Err(err) => {
                eprintln!(
                    "tail: cannot reach {}: {err}; retrying in {backoff:?}",
                    args.url
                );
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let mut events = eventsource_stream::EventStream::new(response.bytes_stream());
        while let Some(item) = events.next().await {
            let event = match item {
                Ok(event) => event,
                Err(err) => {
                    eprintln!("tail: stream interrupted: {err}; resuming");
                    break;
                }
            };
            match event.event.as_str() {
                "lagged" => {
                    eprintln!("tail: fell behind the topic's retention: {}", event.data);
                    return Ok(ExitCode::from(EXIT_LAGGED));
                }
                "error" => {
                    eprintln!("tail: server error: {}; resuming", event.data);
                    break;
                }
                _ => {}
            }
            if !event.id.is_empty() {
                last_id = Some(event.id.clone());
            }
            if cursors {
                writeln!(stdout, "{}\t{}", event.id, event.data)?;
            } else {
                writeln!(stdout, "{}", event.data)?;
            }
            stdout.flush()?;
        }
        tokio::time::sleep(backoff).await;
        backoff = Duration::from_millis(crate::fanout::RETRY_HINT_MS);
    }
}

/// The config, topics and handlers, or the exit after reporting why not.
fn load_files(
    overrides: &Overrides,
) -> std::result::Result<(Config, Topics, Vec<crate::handler::HandlerSpec>), ExitCode> {
    let config = Config::load(overrides).map_err(|problems| {
        for problem in problems {
            eprintln!("{problem}");
        }
        ExitCode::FAILURE
    })?;
    let topics = Topics::load(&config.topics_dir).map_err(|problems| report(&problems))?;
    let handlers = crate::handler::load(&config.handlers_dir, &topics)
        .map_err(|problems| report(&problems))?;
    Ok((config, topics, handlers))
}

fn asyncapi(overrides: Overrides, host: Option<String>) -> Result<ExitCode> {
    let (config, topics, handlers) = match load_files(&overrides) {
        Ok(loaded) => loaded,
        Err(exit) => return Ok(exit),
    };
    let mut described = crate::asyncapi::Described::all(&topics, handlers);
    described.host = Some(host.unwrap_or_else(|| config.listen.to_string()));
    described.secured = config.keys.is_set();
    println!(
        "{}",
        serde_json::to_string_pretty(&crate::asyncapi::document(&described))?
    );
    Ok(ExitCode::SUCCESS)
}

fn check(overrides: Overrides) -> Result<ExitCode> {
    let (config, topics, handlers) = match load_files(&overrides) {
        Ok(loaded) => loaded,
        Err(exit) => return Ok(exit),
    };
    let types: usize = topics.iter().map(|t| t.types.len()).sum();
    let sources = topics.webhook_sources();
    // A missing webhook secret is deployment state, not a file error: the
    // source fails closed, and we say so.
    for source in &sources {
        let set = source
            .secrets_env
            .iter()
            .any(|name| crate::problem::env_value(name).is_some());
        if !set {
            eprintln!(
                "warning: webhook source {:?}: none of {} is set, so it rejects every request",
                source.name,
                source.secrets_env.join(", ")
            );
        }
    }
    println!(
        "ok: {} topics, {types} event types, {} webhook sources in {}; {} handlers in {}",
        topics.len(),
        sources.len(),
        config.topics_dir.display(),
        handlers.len(),
        config.handlers_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn report(problems: &[crate::problem::ConfigProblem]) -> ExitCode {
    for problem in problems {
        eprintln!("{problem}");
    }
    ExitCode::FAILURE
}
