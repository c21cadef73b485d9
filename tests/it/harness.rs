//! Test harness: a real `switchyard serve` process on a loopback port with
//! its own directory of topics and data, killed when dropped (started by
//! the test kit, tests/kit, which the load tool shares), and the clients
//! the tests drive it with.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A permissive schema for test events: `n` (integer) is required.
pub const TEST_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["n"],
  "properties": {
    "n": { "type": "integer", "minimum": 0 },
    "k": { "type": "string" },
    "pad": { "type": "string" }
  }
}"#;

/// A directory holding `topics/` and `data/` for one test.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("topics")).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn topics_dir(&self) -> PathBuf {
        self.path().join("topics")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// Declares topic `name` with `partitions`, keyed by `/data/k`, accepting
    /// `test.event` and `test.other`, plus any `extra` TOML lines.
    pub fn topic(&self, name: &str, partitions: usize, extra: &str) -> &Self {
        std::fs::write(self.topics_dir().join("test.schema.json"), TEST_SCHEMA).unwrap();
        let toml = format!(
            "name = \"{name}\"\npartitions = {partitions}\nkey = \"/data/k\"\n{extra}\n\
             [types.\"test.event\"]\nschema = \"test.schema.json\"\n\
             [types.\"test.other\"]\nschema = \"test.schema.json\"\n"
        );
        std::fs::write(self.topics_dir().join(format!("{name}.toml")), toml).unwrap();
        self
    }

    /// Starts a server on this workspace.
    pub fn serve(&self, args: &[&str]) -> Server {
        Server::start(self.path(), args, None)
    }

    /// Starts a server with extra environment variables (webhook secrets).
    pub fn serve_with_env(&self, env: &[(&str, &str)]) -> Server {
        self.serve_with(&[], env)
    }

    /// Starts a server with extra arguments and environment variables.
    pub fn serve_with(&self, args: &[&str], env: &[(&str, &str)]) -> Server {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args = args.iter().map(|s| s.to_string()).collect();
        Server::start_with(self.path(), args, None, env)
    }
}

pub use switchyard_testkit::Limits;

/// A `switchyard serve` on a workspace (tests/kit starts it), killed when
/// dropped.
pub struct Server {
    process: switchyard_testkit::Switchyard,
    pub url: String,
    pub addr: String,
    dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Server {
    pub fn start(dir: &Path, args: &[&str], limits: Option<Limits>) -> Server {
        Self::start_with(
            dir,
            args.iter().map(|s| s.to_string()).collect(),
            limits,
            Vec::new(),
        )
    }

    fn start_with(
        dir: &Path,
        args: Vec<String>,
        limits: Option<Limits>,
        env: Vec<(String, String)>,
    ) -> Server {
        let mut serve = switchyard_testkit::Serve::new(BIN, dir)
            .args(["--data-dir", "data", "--topics-dir", "topics"])
            .args(&args);
        for (key, value) in &env {
            serve = serve.env(key, value);
        }
        if let Some(limits) = limits {
            serve = serve.limits(limits);
        }
        let process = serve.start().unwrap_or_else(|err| panic!("{err:#}"));
        Server {
            url: process.url().to_owned(),
            addr: process.addr().to_owned(),
            process,
            dir: dir.to_owned(),
            args,
            env,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn events_url(&self, topic: &str) -> String {
        format!("{}/v1/topics/{topic}/events", self.url)
    }

    pub fn stream_url(&self, topic: &str) -> String {
        format!("{}/v1/topics/{topic}/stream", self.url)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, then waits for the exit (bounded).
    pub fn terminate(&mut self) -> ExitStatus {
        self.process
            .terminate(Duration::from_secs(20))
            .unwrap_or_else(|err| panic!("{err:#}"))
    }

    /// Kills this process and starts another on the same directory (with
    /// the same arguments and environment, without limits).
    pub fn restart(mut self) -> Server {
        self.kill();
        Self::start_with(&self.dir, self.args.clone(), None, self.env.clone())
    }

    /// Kills this process (SIGKILL) and starts another on the same
    /// directory and the same address, so that clients holding its URL (a
    /// browser's EventSource) reconnect to the new one by themselves.
    pub fn restart_same_port(mut self) -> Server {
        self.kill();
        let mut args = vec!["--listen".to_owned(), self.addr.clone()];
        let mut rest = self.args.iter();
        while let Some(arg) = rest.next() {
            if arg == "--listen" {
                rest.next();
            } else {
                args.push(arg.clone());
            }
        }
        Self::start_with(&self.dir, args, None, self.env.clone())
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A structured CloudEvent for the test topics.
pub fn event(id: &str, n: u64, key: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/tests",
        "type": "test.event",
        "data": {"n": n, "k": key},
    })
}

/// Publishes events `{prefix}-{n}` for each `n` of `range` to `url` (a
/// topic's events URL), one request each, key `k{n % 7}`; each must be
/// accepted.
pub async fn publish_numbered(url: &str, prefix: &str, range: std::ops::Range<u64>) {
    let client = client();
    for n in range {
        let (status, body) = publish(
            &client,
            url,
            &event(&format!("{prefix}-{n}"), n, &format!("k{}", n % 7)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Publishes one structured event; returns status and body.
pub async fn publish(client: &reqwest::Client, url: &str, event: &Value) -> (u16, Value) {
    let response = client
        .post(url)
        .header("content-type", "application/cloudevents+json")
        .body(event.to_string())
        .send()
        .await
        .expect("publish request");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// GETs `url` and parses the answer as JSON, whatever the status.
pub async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Reads the whole topic from `from` by paging; returns (cursor, event) pairs.
pub async fn read_all(client: &reqwest::Client, url: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut from = "earliest".to_owned();
    loop {
        let page: Value = client
            .get(url)
            .query(&[("from", from.as_str()), ("limit", "1000")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let Some(batch) = page["events"].as_array().cloned() else {
            panic!("not a page of events: {page}");
        };
        from = page["next"].as_str().expect("next cursor").to_owned();
        if batch.is_empty() {
            return events;
        }
        events.extend(batch);
    }
}

/// One SSE event as a client saw it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: Value,
}

/// An SSE client built on a third-party SSE parser (eventsource-stream).
pub struct Sse {
    events: std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<eventsource_stream::Event, String>> + Send>,
    >,
}

impl Sse {
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> Sse {
        let client = reqwest::Client::new();
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("connect SSE");
        assert_eq!(response.status(), 200, "SSE status");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "SSE content type"
        );
        let events = eventsource_stream::EventStream::new(response.bytes_stream())
            .map(|item| item.map_err(|e| e.to_string()));
        Sse {
            events: Box::pin(events),
        }
    }

    /// The next event within `timeout`, or `None` when the stream ended.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let item = tokio::time::timeout(timeout, self.events.next())
            .await
            .expect("timed out waiting for an SSE event")?;
        let event = item.ok()?;
        Some(SseEvent {
            id: event.id,
            event: event.event,
            data: serde_json::from_str(&event.data).unwrap_or(Value::String(event.data)),
        })
    }

    /// Collects `count` events.
    pub async fn take(&mut self, count: usize) -> Vec<SseEvent> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            match self.next(Duration::from_secs(20)).await {
                Some(event) => out.push(event),
                None => panic!("stream ended after {} of {count} events", out.len()),
            }
        }
        out
    }
}

/// A third-party signing library, driven over stdin/stdout by the scripts
/// in tests/signers (installed by scripts/test).
pub struct Signer {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

#[derive(Clone, Copy, Debug)]
pub enum SignerLang {
    /// tests/signers/sign.mjs: standardwebhooks, @octokit/webhooks-methods, stripe
    Node,
    /// tests/signers/sign.py: standardwebhooks, slack-sdk, hmac
    Python,
}

/// One request to sign.
pub fn sign_request(scheme: &str, secret: &str, body: &str, timestamp: i64, id: &str) -> Value {
    json!({"scheme": scheme, "secret": secret, "body": body, "timestamp": timestamp, "id": id})
}

impl Signer {
    pub fn new(lang: SignerLang) -> Signer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/signers");
        let (program, script) = match lang {
            SignerLang::Node => ("node".to_owned(), "sign.mjs"),
            SignerLang::Python => (
                dir.join(".venv/bin/python").display().to_string(),
                "sign.py",
            ),
        };
        let installed = match lang {
            SignerLang::Node => dir.join("node_modules").exists(),
            SignerLang::Python => dir.join(".venv").exists(),
        };
        assert!(
            installed,
            "the signing libraries are not installed: run scripts/test (it installs them into tests/signers)"
        );
        let mut child = Command::new(program)
            .arg(script)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the signer");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Signer {
            child,
            stdin,
            stdout,
        }
    }

    /// Headers for one request.
    pub fn sign(&mut self, request: &Value) -> Vec<(String, String)> {
        use std::io::Write;
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
        let line = self.stdout.next().expect("signer answered").unwrap();
        let headers: serde_json::Map<String, Value> = serde_json::from_str(&line).unwrap();
        headers
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap().to_owned()))
            .collect()
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, in bytes (from /proc).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// Mints tokens with PyJWT (tests/signers/jwt_tokens.py), a third-party
/// JWT library, so that the server's verification is not checked against
/// its own signing code.
pub struct TokenMinter {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl TokenMinter {
    fn python() -> (PathBuf, PathBuf) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/signers");
        let python = dir.join(".venv/bin/python");
        assert!(
            python.exists(),
            "the test libraries are not installed: run scripts/test (it installs them into tests/signers)"
        );
        (python, dir.join("jwt_tokens.py"))
    }

    /// Writes an ES256 key pair into `dir`: es256.pem and es256.pub.pem.
    pub fn keypair(dir: &Path) {
        let (python, script) = Self::python();
        let status = Command::new(python)
            .arg(script)
            .arg("keypair")
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "keypair generation failed");
    }

    pub fn new() -> TokenMinter {
        let (python, script) = Self::python();
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the token minter");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        TokenMinter {
            child,
            stdin,
            stdout,
        }
    }

    /// A token signed with `alg` and `key` (a secret for HS256, a private
    /// PEM path otherwise). `claims` may hold `exp_in`: seconds from now.
    pub fn mint(&mut self, alg: &str, key: &str, claims: Value) -> String {
        use std::io::Write;
        let request = json!({"alg": alg, "key": key, "claims": claims});
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
        self.stdout.next().expect("minter answered").unwrap()
    }
}

impl Drop for TokenMinter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
