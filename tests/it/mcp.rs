//! Agents over MCP (`POST /mcp`), driven by the official Python SDK (PyPI
//! `mcp`, tests/agents/agent.py) on both protocol revisions: tools with
//! their schemas, publish (a schema violation is a tool error naming the
//! pointer), reads that resume from a cursor (the same cursor pages use),
//! the queue, an agent that keeps its place across its own kill and a
//! Switchyard restart, and tokens and scopes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{
    Server, TokenMinter, Workspace, client, event, get_json, publish, publish_numbered,
};

const REVISIONS: [(&str, &str); 2] = [("2026-07-28", "2026-07-28"), ("legacy", "2025-11-25")];

fn agents_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agents")
}

fn python() -> PathBuf {
    let python = agents_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "the MCP client is not installed: run scripts/test (it installs tests/agents)"
    );
    python
}

fn mcp_url(server: &Server) -> String {
    format!("{}/mcp", server.url)
}

/// Runs agent.py with `args`; its one line of JSON.
async fn agent(args: &[&str]) -> Value {
    let mut command = tokio::process::Command::new(python());
    command.arg(agents_dir().join("agent.py"));
    run_client(command, args).await
}

/// Runs legacy.mjs (the npm SDK) with `args`; its one line of JSON.
async fn legacy(args: &[&str]) -> Value {
    let mut command = tokio::process::Command::new("node");
    command.arg(legacy_script());
    run_client(command, args).await
}

fn legacy_script() -> PathBuf {
    assert!(
        agents_dir()
            .join("node_modules/@modelcontextprotocol/sdk")
            .exists(),
        "the npm MCP SDK is not installed: run scripts/test (it installs tests/agents)"
    );
    agents_dir().join("legacy.mjs")
}

async fn run_client(mut command: tokio::process::Command, args: &[&str]) -> Value {
    let out = command.args(args).output().await.unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|err| panic!("{args:?} printed {stdout:?}: {err}"))
}

async fn call(server: &Server, mode: &str, tool: &str, arguments: Value) -> (bool, Value) {
    let answer = agent(&["call", &mcp_url(server), mode, tool, &arguments.to_string()]).await;
    (answer["is_error"] == true, answer["structured"].clone())
}

/// Every tool listed with an output schema (read-only ones marked), the
/// revision the client asked for, publish and read with cursors shared
/// with pages, a schema violation named, and the queue, on both revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_publish_read_and_queue_on_both_revisions() {
    let ws = Workspace::new();
    ws.topic("notes-0", 1, "").topic("notes-1", 1, "");
    let server = ws.serve(&[]);
    for (round, (mode, revision)) in REVISIONS.into_iter().enumerate() {
        let what = format!("MCP {revision}");
        // A topic per revision, so that each starts empty.
        let notes = format!("notes-{round}");
        let listed = agent(&["tools", &mcp_url(&server), mode]).await;
        assert_eq!(listed["protocol"], revision, "{what}");
        let tools = listed["tools"].as_object().unwrap();
        for name in [
            "list_topics",
            "describe_topic",
            "publish_event",
            "read_events",
            "receive",
            "ack",
            "nack",
            "extend",
            "group_status",
        ] {
            let tool = &tools[name];
            assert_eq!(tool["output"]["type"], "object", "{what}: {name}");
            assert_eq!(tool["input"]["type"], "object", "{what}: {name}");
        }
        assert_eq!(tools["read_events"]["read_only"], true, "{what}");
        assert_eq!(tools["publish_event"]["read_only"], false, "{what}");

        let (failed, described) =
            call(&server, mode, "describe_topic", json!({"topic": notes})).await;
        assert!(!failed, "{what}: {described}");
        assert_eq!(described["partitions"], 1, "{what}");
        assert!(
            described["types"]["test.event"]["schema"].is_object(),
            "{what}: {described}"
        );
        let head = described["head"].as_str().unwrap().to_owned();

        // Three events published through MCP, read in two calls from the
        // head cursor taken before.
        let mut ids = Vec::new();
        for n in 0..3 {
            let (failed, published) = call(
                &server,
                mode,
                "publish_event",
                json!({"topic": notes, "type": "test.event", "data": {"n": n, "k": "a"}, "subject": format!("note/{n}")}),
            )
            .await;
            assert!(!failed, "{what}: {published}");
            assert!(published["position"].is_string(), "{what}: {published}");
            ids.push(published["id"].as_str().unwrap().to_owned());
        }
        let (failed, first) = call(
            &server,
            mode,
            "read_events",
            json!({"topic": notes, "after": head, "limit": 2}),
        )
        .await;
        assert!(!failed, "{what}: {first}");
        let got: Vec<&str> = first["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, [ids[0].as_str(), ids[1].as_str()], "{what}");
        assert_eq!(first["has_more"], true, "{what}");
        let cursor = first["next_cursor"].as_str().unwrap();
        let (_, second) = call(
            &server,
            mode,
            "read_events",
            json!({"topic": notes, "after": cursor, "wait_ms": 200}),
        )
        .await;
        let got: Vec<&str> = second["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, [ids[2].as_str()], "{what}");
        assert_eq!(second["has_more"], false, "{what}");
        // The same cursor on the HTTP API: the same next event.
        let page = get_json(&format!("{}?from={cursor}", server.events_url(&notes))).await;
        assert_eq!(page["events"][0]["id"], ids[2], "{what}: {page}");
        // A filter on the subject.
        let (_, filtered) = call(
            &server,
            mode,
            "read_events",
            json!({"topic": notes, "after": head, "subject": "note/1"}),
        )
        .await;
        assert_eq!(
            filtered["events"].as_array().unwrap().len(),
            1,
            "{what}: {filtered}"
        );
        assert_eq!(filtered["events"][0]["id"], ids[1], "{what}");

        // A schema violation is a tool error that names the place.
        let (failed, refused) = call(
            &server,
            mode,
            "publish_event",
            json!({"topic": notes, "type": "test.event", "data": {"n": -1}}),
        )
        .await;
        assert!(failed, "{what}: {refused}");
        assert_eq!(
            refused["error"]["code"], "schema_violation",
            "{what}: {refused}"
        );
        assert_eq!(refused["error"]["pointer"], "/data/n", "{what}: {refused}");
        assert_eq!(refused["error"]["keyword"], "minimum", "{what}: {refused}");
        let (failed, unknown) = call(&server, mode, "read_events", json!({"topic": "nope"})).await;
        assert!(failed, "{what}: {unknown}");
        assert_eq!(
            unknown["error"]["code"], "unknown_topic",
            "{what}: {unknown}"
        );

        // The queue: receive, nack, receive again (attempt 2), ack.
        let group = "agents";
        let receive =
            json!({"topic": notes, "group": group, "start": "earliest", "max": 1, "wait": "2s"});
        let (failed, got) = call(&server, mode, "receive", receive.clone()).await;
        assert!(!failed, "{what}: {got}");
        assert_eq!(got["deliveries"][0]["event"]["id"], ids[0], "{what}: {got}");
        let receipt = got["deliveries"][0]["receipt"].clone();
        let (failed, nacked) = call(
            &server,
            mode,
            "nack",
            json!({"topic": notes, "group": group, "receipts": [receipt], "delay": "0s"}),
        )
        .await;
        assert!(!failed, "{what}: {nacked}");
        assert_eq!(nacked["nacked"], 1, "{what}");
        let (_, again) = call(&server, mode, "receive", receive).await;
        assert_eq!(
            again["deliveries"][0]["event"]["id"], ids[0],
            "{what}: {again}"
        );
        assert_eq!(again["deliveries"][0]["attempt"], 2, "{what}: {again}");
        let receipt = again["deliveries"][0]["receipt"].clone();
        let (failed, acked) = call(
            &server,
            mode,
            "ack",
            json!({"topic": notes, "group": group, "receipts": [receipt]}),
        )
        .await;
        assert!(!failed, "{what}: {acked}");
        assert_eq!(acked["acked"], 1, "{what}");
        let (_, status) = call(
            &server,
            mode,
            "group_status",
            json!({"topic": notes, "group": group}),
        )
        .await;
        assert!(status["committed"].is_string(), "{what}: {status}");
        let (failed, refused) = call(
            &server,
            mode,
            "ack",
            json!({"topic": notes, "group": group, "receipts": [receipt], "delay": "1s"}),
        )
        .await;
        assert!(failed, "{what}: ack takes no delay: {refused}");
        assert_eq!(refused["error"]["argument"], "delay", "{what}: {refused}");
    }
}

/// An agent that saves its cursor after each read gets every event once:
/// killed (-9) mid-follow, and started again after Switchyard itself was
/// killed and restarted, it goes on from its saved place. The agent is the
/// README's example, examples/mcp_agent.py (it listens for notifications
/// between reads: the events published while it waits wake it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_keeps_its_place_across_its_kill_and_a_switchyard_restart() {
    let ws = Workspace::new();
    ws.topic("orders", 3, "");
    let server = ws.serve(&[]);
    let cursor_file = ws.path().join("agent.cursor");
    let orders = server.events_url("orders");
    publish_numbered(&orders, "o", 0..6).await;
    let mut seen = follow(&server, &cursor_file, 6).await;
    let server = server.restart();
    let orders = server.events_url("orders");
    publish_numbered(&orders, "o", 6..9).await;
    // Three more while the agent waits: its subscription wakes it.
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        publish_numbered(&orders, "o", 9..12).await;
    });
    seen.extend(follow(&server, &cursor_file, 6).await);
    later.await.unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for id in &seen {
        *counts.entry(id.clone()).or_default() += 1;
    }
    let expected: HashMap<String, usize> = (0..12).map(|n| (format!("o-{n}"), 1)).collect();
    assert_eq!(counts, expected, "every event exactly once: {seen:?}");
}

/// Runs the following agent until it printed `count` events and then a
/// second more (to catch repeats), and kills it (-9): the ids it printed.
async fn follow(server: &Server, cursor_file: &Path, count: usize) -> Vec<String> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mcp_agent.py");
    let mut child = tokio::process::Command::new(python())
        .arg(example)
        .args(["orders", "--url", &mcp_url(server), "--cursor-file"])
        .arg(cursor_file)
        // Only a notification wakes it while the test runs.
        .args(["--idle-read-seconds", "600"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let wait = if ids.len() >= count {
            Duration::from_secs(1)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                let printed: Value = serde_json::from_str(&line).unwrap();
                ids.push(printed["id"].as_str().unwrap().to_owned());
            }
            Ok(_) => panic!("the agent stopped after {ids:?}"),
            Err(_) => break,
        }
    }
    assert!(ids.len() >= count, "the agent printed only {ids:?}");
    child.kill().await.unwrap();
    ids
}

/// /mcp takes the HTTP API's tokens: none → 401 with a Bearer challenge
/// pointing at the RFC 9728 metadata; a token without the scope a tool
/// needs → 403 naming it; a
/// browser page from another origin is refused; an unknown revision is
/// answered with the ones supported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scopes_origins_and_revisions() {
    const SECRET: &str = "a-test-secret-of-some-length-0123456789";
    let ws = Workspace::new();
    ws.topic("orders", 1, "");
    const ISSUER: &str = "https://auth.example";
    let server = ws.serve_with(
        &[],
        &[
            ("SWITCHYARD_JWT_SECRET", SECRET),
            ("SWITCHYARD_JWT_ISSUER", ISSUER),
        ],
    );
    let url = mcp_url(&server);
    let discover = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }}});
    let post = |version: &str| {
        client()
            .post(&url)
            .header("Accept", "application/json, text/event-stream")
            .header("MCP-Protocol-Version", version)
            .header("Mcp-Method", "server/discover")
    };
    let answer = post("2026-07-28").json(&discover).send().await.unwrap();
    assert_eq!(answer.status(), 401);
    let challenge = answer.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    // Where to learn how to get a token (RFC 9728): the metadata names
    // this resource and the issuer.
    let metadata_url = format!("{}/.well-known/oauth-protected-resource/mcp", server.url);
    assert!(
        challenge.contains(&format!("resource_metadata=\"{metadata_url}\"")),
        "{challenge}"
    );
    let metadata = get_json(&metadata_url).await;
    assert_eq!(metadata["resource"], url, "{metadata}");
    assert_eq!(
        metadata["authorization_servers"],
        json!([ISSUER]),
        "{metadata}"
    );
    assert_eq!(
        metadata["bearer_methods_supported"],
        json!(["header"]),
        "{metadata}"
    );

    let mut minter = TokenMinter::new();
    let grant =
        |scopes: Value| json!({"sub": "agent", "iss": ISSUER, "exp_in": 600, "switchyard": scopes});
    let publisher = minter.mint("HS256", SECRET, grant(json!({"publish": ["orders"]})));
    let answer = post("2026-07-28")
        .bearer_auth(&publisher)
        .json(&discover)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(
        body["result"]["supportedVersions"],
        json!(["2026-07-28", "2025-11-25"]),
        "{body}"
    );

    // An unknown revision: the spec's error, listing the supported ones.
    let mut old = discover.clone();
    old["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "1999-01-01".into();
    let answer = post("1999-01-01")
        .bearer_auth(&publisher)
        .json(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32022, "{body}");
    assert_eq!(
        body["error"]["data"]["supported"],
        json!(["2026-07-28", "2025-11-25"]),
        "{body}"
    );

    // A page on another origin (DNS rebinding) gets nothing.
    let answer = post("2026-07-28")
        .bearer_auth(&publisher)
        .header("Origin", "http://evil.example")
        .json(&discover)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);

    // A tool the token lacks the scope for: 403 naming it, on either
    // revision, before any tool runs.
    for (_, revision) in REVISIONS {
        let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "read_events", "arguments": {"topic": "orders"},
            "_meta": {"io.modelcontextprotocol/protocolVersion": revision, "io.modelcontextprotocol/clientCapabilities": {}},
        }});
        let answer = client()
            .post(&url)
            .header("Accept", "application/json, text/event-stream")
            .header("MCP-Protocol-Version", revision)
            .header("Mcp-Method", "tools/call")
            .header("Mcp-Name", "read_events")
            .bearer_auth(&publisher)
            .json(&call)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403, "{revision}");
        let challenge = answer.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.contains("error=\"insufficient_scope\"")
                && challenge.contains("scope=\"subscribe\""),
            "{revision}: {challenge}"
        );
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["scope"], "subscribe", "{revision}: {body}");
        assert_eq!(body["error"]["topic"], "orders", "{revision}: {body}");
    }

    // A 2025-11-25 session belongs to the token that opened it: another
    // token, even one allowed to read, cannot use its id.
    let reader = minter.mint(
        "HS256",
        SECRET,
        grant(json!({"subscribe": ["orders"], "publish": ["orders"]})),
    );
    let session = legacy_session(&url, &publisher).await;
    let list = |token: &str| {
        client()
            .post(&url)
            .header("Accept", "application/json, text/event-stream")
            .header("MCP-Protocol-Version", "2025-11-25")
            .header("Mcp-Session-Id", &session)
            .bearer_auth(token)
            .json(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "list_topics", "arguments": {}}}))
            .send()
    };
    let own = rpc_answer(list(&publisher).await.unwrap()).await;
    assert!(
        own["result"]["structuredContent"]["topics"].is_array(),
        "{own}"
    );
    let other = rpc_answer(list(&reader).await.unwrap()).await;
    assert!(
        other["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("another token"),
        "{other}"
    );

    // Through the SDK: may publish; a read fails with the 403.
    for (mode, revision) in REVISIONS {
        let (failed, published) = token_call(
            &url,
            mode,
            "publish_event",
            json!({"topic": "orders", "type": "test.event", "data": {"n": 1}}),
            &publisher,
        )
        .await;
        assert!(!failed, "{revision}: {published}");
        let (failed, refused) = token_call(
            &url,
            mode,
            "read_events",
            json!({"topic": "orders"}),
            &publisher,
        )
        .await;
        assert!(failed, "{revision}: {refused}");
        assert!(refused["exception"].is_string(), "{revision}: {refused}");
    }
}

async fn token_call(
    url: &str,
    mode: &str,
    tool: &str,
    arguments: Value,
    token: &str,
) -> (bool, Value) {
    let answer = agent(&["call", url, mode, tool, &arguments.to_string(), token]).await;
    match answer.get("exception") {
        Some(_) => (true, answer),
        None => (answer["is_error"] == true, answer["structured"].clone()),
    }
}

/// Listens on `uri` (`agent.py listen` in `mode`, or `legacy.mjs
/// subscribe` for mode "npm"), with `token` if given: the child (killed
/// when dropped) once the server acknowledged, with the lines still to come.
async fn listen(
    server: &Server,
    mode: &str,
    uri: &str,
    token: Option<&str>,
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    let mut command = if mode == "npm" {
        let mut command = tokio::process::Command::new("node");
        command
            .arg(legacy_script())
            .args(["subscribe", &mcp_url(server), uri])
            .args(token);
        command
    } else {
        let mut command = tokio::process::Command::new(python());
        command
            .arg(agents_dir().join("agent.py"))
            .args(["listen", &mcp_url(server), mode, uri])
            .args(token);
        command
    };
    let mut child = command
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the listener was acknowledged")
        .unwrap()
        .expect("the listener printed a line");
    let first: Value = serde_json::from_str(&first).unwrap();
    let expected = if mode == "npm" {
        json!({"subscribed": uri})
    } else {
        json!({"listening": [uri]})
    };
    assert_eq!(first, expected, "{mode}");
    if mode == "2026-07-28" {
        // A listen starts with one notification (the acknowledgment goes
        // out before the watch exists: whatever came in between is told).
        let start = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the start notification")
            .unwrap()
            .unwrap_or_default();
        assert_eq!(
            serde_json::from_str::<Value>(&start).unwrap(),
            json!({"updated": uri})
        );
    }
    (child, lines)
}

/// Resources (the topics, a topic with its head, an event, a group),
/// `get_event`, trace context from `_meta`, and notifications: an agent
/// listening on a topic hears that it moved after a publish (coalesced:
/// fewer notifications than events), then reads what is new from its
/// cursor; on both revisions (`subscriptions/listen`, `resources/subscribe`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_get_event_and_notifications_on_both_revisions() {
    let ws = Workspace::new();
    ws.topic("feed-0", 2, "").topic("feed-1", 2, "");
    let server = ws.serve(&[]);
    let url = mcp_url(&server);
    for (round, (mode, revision)) in REVISIONS.into_iter().enumerate() {
        let feed = format!("feed-{round}");
        let feed_uri = format!("switchyard://topics/{feed}");
        let listed = agent(&["resources", &url, mode]).await;
        let resources = listed["resources"].as_array().unwrap();
        assert!(
            resources.contains(&json!("switchyard://topics")),
            "{revision}: {listed}"
        );
        assert!(resources.contains(&json!(feed_uri)), "{revision}: {listed}");
        assert_eq!(
            listed["templates"],
            json!([
                "switchyard://topics/{topic}",
                "switchyard://topics/{topic}/events/{id}",
                "switchyard://topics/{topic}/groups/{group}"
            ]),
            "{revision}"
        );
        let read = agent(&["read", &url, mode, &feed_uri]).await;
        assert_eq!(read["mime_type"], "application/json", "{revision}: {read}");
        let head = read["contents"]["head"].as_str().unwrap().to_owned();
        assert_eq!(read["contents"]["partitions"], 2, "{revision}: {read}");

        // Listening, then 40 events in one publish: a few notifications.
        let (mut listener, mut lines) = listen(&server, mode, &feed_uri, None).await;
        let batch: Vec<Value> = (0..40)
            .map(|n| event(&format!("{feed}-{n}"), n, &format!("k{n}")))
            .collect();
        let answer = client()
            .post(server.events_url(&feed))
            .header("Content-Type", "application/cloudevents-batch+json")
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{revision}");
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a notification after the publish")
            .unwrap()
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap(),
            json!({"updated": feed_uri}),
            "{revision}"
        );
        let mut notifications = 1;
        while let Ok(Ok(Some(_))) =
            tokio::time::timeout(Duration::from_secs(1), lines.next_line()).await
        {
            notifications += 1;
        }
        assert!(
            notifications < 40,
            "{revision}: {notifications} notifications for one publish"
        );
        // What the notification means: read_events from the cursor has it all.
        let (failed, page) = call(
            &server,
            mode,
            "read_events",
            json!({"topic": feed, "after": head, "limit": 100}),
        )
        .await;
        assert!(!failed, "{revision}: {page}");
        assert_eq!(page["events"].as_array().unwrap().len(), 40, "{revision}");
        // A later publish is heard too (the listener is still there).
        let (status, body) = publish(
            &client(),
            &server.events_url(&feed),
            &event(&format!("{feed}-late"), 99, "k"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a notification after the second publish")
            .unwrap()
            .unwrap();
        assert!(line.contains("updated"), "{revision}: {line}");
        listener.kill().await.unwrap();

        // One event: as a resource and through get_event.
        let id = format!("{feed}-7");
        let read = agent(&["read", &url, mode, &format!("{feed_uri}/events/{id}")]).await;
        assert_eq!(
            read["contents"]["event"]["id"],
            id.as_str(),
            "{revision}: {read}"
        );
        let (failed, found) =
            call(&server, mode, "get_event", json!({"topic": feed, "id": id})).await;
        assert!(!failed, "{revision}: {found}");
        assert_eq!(found["event"]["data"]["n"], 7, "{revision}: {found}");
        let (failed, missing) = call(
            &server,
            mode,
            "get_event",
            json!({"topic": feed, "id": "nope"}),
        )
        .await;
        assert!(failed, "{revision}: {missing}");
        assert_eq!(
            missing["error"]["code"], "unknown_event",
            "{revision}: {missing}"
        );
        assert_eq!(missing["error"]["complete"], true, "{revision}: {missing}");
        // Not found: -32002 before 2026-07-28, which made it -32602.
        let not_found = if mode == "legacy" { -32002 } else { -32602 };
        let read = agent(&["read", &url, mode, "switchyard://topics/nope"]).await;
        assert_eq!(read["error"]["code"], not_found, "{revision}: {read}");
        assert_eq!(
            read["error"]["data"]["error"]["code"], "unknown_topic",
            "{revision}: {read}"
        );
        let read = agent(&["read", &url, mode, "switchyard://elsewhere"]).await;
        assert_eq!(read["error"]["code"], not_found, "{revision}: {read}");

        // A group as a resource, once it has consumed.
        let (failed, got) = call(
            &server,
            mode,
            "receive",
            json!({"topic": feed, "group": "g", "start": "earliest", "max": 1}),
        )
        .await;
        assert!(!failed, "{revision}: {got}");
        let read = agent(&["read", &url, mode, &format!("{feed_uri}/groups/g")]).await;
        assert!(
            read["contents"]["committed"].is_string(),
            "{revision}: {read}"
        );

        // Trace context from the request's _meta reaches the event.
        let traceparent =
            format!("00-4bf92f3577b34da6a3ce929d0e0e47{round:02}-00f067aa0ba902b7-01");
        let answer = agent(&[
            "call",
            &url,
            mode,
            "publish_event",
            &json!({"topic": feed, "type": "test.event", "data": {"n": 1}}).to_string(),
            "",
            &json!({"traceparent": traceparent}).to_string(),
        ])
        .await;
        assert_eq!(answer["is_error"], false, "{revision}: {answer}");
        let traced = answer["structured"]["id"].as_str().unwrap();
        let (_, found) = call(
            &server,
            mode,
            "get_event",
            json!({"topic": feed, "id": traced}),
        )
        .await;
        assert_eq!(
            found["event"]["traceparent"],
            traceparent.as_str(),
            "{revision}: {found}"
        );
    }
}

/// Handlers through MCP, with the admin scope: their status, and dead
/// letters replayed once the target recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_status_and_replay_through_mcp() {
    use std::sync::atomic::Ordering;

    use crate::handler::{handler, outcomes, workspace};
    use crate::sink::Sink;

    let sink = Sink::start().await;
    sink.state.failing.store(true, Ordering::SeqCst);
    let ws = workspace();
    handler(
        &ws,
        "relay",
        &format!("{}/toggle", sink.url),
        "",
        "max_attempts = 2",
    );
    let server = ws.serve(&[]);
    for n in 0..2 {
        let (status, body) = publish(
            &client(),
            &server.events_url("jobs"),
            &event(&format!("job-{n}"), n, "k"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let dead = outcomes(&server, "dead", "switchyard.handler.failed", 2).await;
    let (failed, status) = call(
        &server,
        "2026-07-28",
        "handler_status",
        json!({"handler": "relay"}),
    )
    .await;
    assert!(!failed, "{status}");
    assert_eq!(status["handlers"][0]["name"], "relay", "{status}");
    assert_eq!(status["handlers"][0]["dead_letters"], "dead", "{status}");
    let (failed, unknown) = call(
        &server,
        "legacy",
        "replay_dead_letters",
        json!({"handler": "nope"}),
    )
    .await;
    assert!(failed, "{unknown}");
    assert_eq!(unknown["error"]["code"], "unknown_handler", "{unknown}");

    sink.state.failing.store(false, Ordering::SeqCst);
    let one = dead[0]["id"].as_str().unwrap();
    let (failed, replay) = call(
        &server,
        "legacy",
        "replay_dead_letters",
        json!({"handler": "relay", "ids": [one]}),
    )
    .await;
    assert!(!failed, "{replay}");
    assert_eq!(replay["replaying"], 1, "{replay}");
    let results = outcomes(&server, "results", crate::handler::RESULT, 1).await;
    assert_eq!(
        results[0]["causationid"], dead[0]["causationid"],
        "{results:?}"
    );
}

/// Revision 2025-11-25 with the npm SDK 1.32 (initialize, Mcp-Session-Id,
/// `resources/subscribe` with notifications on the session's GET stream):
/// tools, publish, reads with cursors, a schema violation, the queue, a
/// subscription that hears a publish, and tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_revision_with_the_npm_sdk() {
    const SECRET: &str = "a-test-secret-of-some-length-0123456789";
    let ws = Workspace::new();
    ws.topic("orders", 2, "");
    let server = ws.serve_with(&[], &[("SWITCHYARD_JWT_SECRET", SECRET)]);
    let url = mcp_url(&server);
    let mut minter = TokenMinter::new();
    let grant = |scopes: Value| json!({"sub": "agent", "exp_in": 600, "switchyard": scopes});
    let agent = minter.mint(
        "HS256",
        SECRET,
        grant(json!({"publish": ["orders"], "subscribe": ["orders"], "consume": ["workers"]})),
    );
    let reader = minter.mint("HS256", SECRET, grant(json!({"subscribe": ["orders"]})));

    let listed = legacy(&["tools", &url, &agent]).await;
    assert_eq!(listed["protocol"], "2025-11-25", "{listed}");
    for name in [
        "publish_event",
        "read_events",
        "receive",
        "ack",
        "nack",
        "get_event",
    ] {
        assert!(
            listed["tools"].as_array().unwrap().contains(&json!(name)),
            "{listed}"
        );
    }
    let call = |tool: &'static str, arguments: Value, token: String| {
        let url = url.clone();
        async move { legacy(&["call", &url, tool, &arguments.to_string(), &token]).await }
    };
    let described = call("describe_topic", json!({"topic": "orders"}), agent.clone()).await;
    let head = described["structured"]["head"].as_str().unwrap().to_owned();

    // Subscribed to the topic: a publish is heard.
    let (mut subscriber, mut lines) =
        listen(&server, "npm", "switchyard://topics/orders", Some(&agent)).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let published = call(
            "publish_event",
            json!({"topic": "orders", "type": "test.event", "data": {"n": n}, "subject": format!("o/{n}")}),
            agent.clone(),
        )
        .await;
        assert_eq!(published["is_error"], false, "{published}");
        ids.push(published["structured"]["id"].as_str().unwrap().to_owned());
    }
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a notification after the publish")
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap(),
        json!({"updated": "switchyard://topics/orders"})
    );
    subscriber.kill().await.unwrap();

    // Reads from the cursor, in two steps.
    let first = call(
        "read_events",
        json!({"topic": "orders", "after": head, "limit": 2}),
        agent.clone(),
    )
    .await;
    let page = &first["structured"];
    assert_eq!(page["events"].as_array().unwrap().len(), 2, "{first}");
    let second = call(
        "read_events",
        json!({"topic": "orders", "after": page["next_cursor"], "limit": 10}),
        agent.clone(),
    )
    .await;
    let mut read: Vec<String> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["structured"]["events"].as_array().unwrap())
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    read.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(read, expected, "every event once across the two reads");
    assert_eq!(second["structured"]["has_more"], false, "{second}");

    // A schema violation names the pointer.
    let refused = call(
        "publish_event",
        json!({"topic": "orders", "type": "test.event", "data": {"n": -1}}),
        agent.clone(),
    )
    .await;
    assert_eq!(refused["is_error"], true, "{refused}");
    assert_eq!(
        refused["structured"]["error"]["pointer"], "/data/n",
        "{refused}"
    );

    // The queue: receive, nack, receive (attempt 2), ack.
    let receive =
        json!({"topic": "orders", "group": "workers", "start": "earliest", "max": 1, "wait": "2s"});
    let got = call("receive", receive.clone(), agent.clone()).await;
    let delivery = &got["structured"]["deliveries"][0];
    assert_eq!(delivery["attempt"], 1, "{got}");
    let nacked = call(
        "nack",
        json!({"topic": "orders", "group": "workers", "receipts": [delivery["receipt"]]}),
        agent.clone(),
    )
    .await;
    assert_eq!(nacked["structured"]["nacked"], 1, "{nacked}");
    let again = call("receive", receive, agent.clone()).await;
    let redelivered = &again["structured"]["deliveries"][0];
    assert_eq!(
        redelivered["event"]["id"], delivery["event"]["id"],
        "{again}"
    );
    assert_eq!(redelivered["attempt"], 2, "{again}");
    let acked = call(
        "ack",
        json!({"topic": "orders", "group": "workers", "receipts": [redelivered["receipt"]]}),
        agent.clone(),
    )
    .await;
    assert_eq!(acked["structured"]["acked"], 1, "{acked}");

    // Tokens: none is a 401; a reader may not publish (403).
    let refused = legacy(&["call", &url, "list_topics", "{}"]).await;
    assert!(
        refused["exception"].as_str().unwrap().contains("401"),
        "{refused}"
    );
    let refused = call(
        "publish_event",
        json!({"topic": "orders", "type": "test.event", "data": {"n": 1}}),
        reader,
    )
    .await;
    let exception = refused["exception"].as_str().unwrap();
    assert!(
        exception.contains("403") && exception.contains("publish"),
        "{refused}"
    );
}

/// The MCP conformance suite (npm `@modelcontextprotocol/conformance`) on
/// both revisions, each against its frozen requirement list. The failures
/// it may report are listed, check by check, in
/// tests/agents/conformance/expected-<revision>.yaml (the README says why
/// each fails); any other failure, or a listed one that now passes, fails
/// this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_conformance_suite() {
    let ws = Workspace::new();
    ws.topic("orders", 1, "");
    let server = ws.serve(&[]);
    let url = mcp_url(&server);
    for revision in ["2026-07-28", "2025-11-25"] {
        let baseline = agents_dir().join(format!("conformance/expected-{revision}.yaml"));
        let out = tokio::process::Command::new("npm")
            .current_dir(agents_dir())
            .args(["exec", "--no", "--", "conformance", "server", "--url", &url])
            .args(["--requirements", revision, "--expected-failures"])
            .arg(&baseline)
            .arg("--output-dir")
            .arg(ws.path().join(format!("conformance-{revision}")))
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "conformance {revision}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Opens a 2025-11-25 session with `token` (initialize, initialized): its id.
async fn legacy_session(url: &str, token: &str) -> String {
    let answer = client()
        .post(url)
        .header("Accept", "application/json, text/event-stream")
        .bearer_auth(token)
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"},
            }}),
        )
        .send()
        .await
        .unwrap();
    let session = answer.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let initialized = rpc_answer(answer).await;
    assert_eq!(
        initialized["result"]["protocolVersion"], "2025-11-25",
        "{initialized}"
    );
    let answer = client()
        .post(url)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-11-25")
        .header("Mcp-Session-Id", &session)
        .bearer_auth(token)
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    session
}

/// The JSON-RPC answer in a response, as JSON or as the data of an SSE
/// event (the legacy session answers on a stream).
async fn rpc_answer(answer: reqwest::Response) -> Value {
    let text = answer.text().await.unwrap();
    let json = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .find(|data| data.contains("\"jsonrpc\""))
        .unwrap_or(&text)
        .to_owned();
    serde_json::from_str(&json).unwrap_or_else(|err| panic!("{text:?}: {err}"))
}
