//! `SIGHUP` reloads `topics/` and `handlers/` without a restart: all or
//! nothing, so a broken file keeps the running set and is reported;
//! fixed, the new topics and handlers serve and the old handlers restart.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::handler::handler;
use crate::harness::*;
use crate::sink::Sink;

fn hangup(server: &Server) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until the server's log has `text` (after `from` bytes of it).
async fn logged(server: &Server, from: usize, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = server.log();
        if log.len() > from && log[from..].contains(text) {
            return log[from..].to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the log never said {text:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn reload(server: &Server) -> (u16, Value) {
    let response = client()
        .post(format!("{}/v1/reload", server.url))
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn sighup_refuses_a_broken_file_then_serves_the_fixed_set() {
    let ws = crate::handler::workspace();
    let sink = Sink::start().await;
    handler(&ws, "worker", &format!("{}/ok", sink.url), "", "");
    let server = ws.serve(&[]);
    let client = client();
    publish_numbered(&server.events_url("jobs"), "before", 0..2).await;
    sink.wait_for(2).await;

    // One valid new topic, one broken file: nothing changes.
    ws.topic("added", 1, "");
    std::fs::write(
        ws.topics_dir().join("broken.toml"),
        "name = \"broken\"\npartitions = 0\n[types.\"test.event\"]\nschema = \"test.schema.json\"\n",
    )
    .unwrap();
    let mark = server.log().len();
    hangup(&server);
    let said = logged(&server, mark, "reload refused").await;
    assert!(
        said.contains("broken.toml") && said.contains("partitions"),
        "{said}"
    );
    let (status, body) = publish(&client, &server.events_url("added"), &event("a-1", 1, "k")).await;
    assert_eq!(status, 404, "not served yet: {body}");
    publish_numbered(&server.events_url("jobs"), "during", 0..1).await;
    sink.wait_for(3).await;
    let (status, body) = reload(&server).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config", "{body}");
    assert_eq!(body["error"]["problems"][0]["key"], "partitions", "{body}");
    assert!(
        body["error"]["problems"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with("broken.toml"),
        "{body}"
    );

    // Fixed, with a handler on the new topic: both serve.
    std::fs::remove_file(ws.topics_dir().join("broken.toml")).unwrap();
    let second = std::fs::read_to_string(ws.path().join("handlers/worker.toml"))
        .unwrap()
        .replace("name = \"worker\"", "name = \"second\"")
        .replace("topic = \"jobs\"", "topic = \"added\"");
    std::fs::write(ws.path().join("handlers/second.toml"), second).unwrap();
    let mark = server.log().len();
    hangup(&server);
    logged(&server, mark, "reloaded").await;
    let (status, body) = publish(&client, &server.events_url("added"), &event("a-1", 1, "k")).await;
    assert_eq!(status, 200, "{body}");
    publish_numbered(&server.events_url("jobs"), "after", 0..1).await;
    let received = sink.wait_for(5).await;
    let mut ids: Vec<String> = received.iter().map(|r| r.event_id()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["a-1", "after-0", "before-0", "before-1", "during-0"],
        "each event once: the old handler drained, the new set took over"
    );

    // A topic whose file is gone stops being served.
    std::fs::remove_file(ws.path().join("handlers/second.toml")).unwrap();
    std::fs::remove_file(ws.topics_dir().join("added.toml")).unwrap();
    let (status, body) = reload(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["reloaded"]["topics_removed"],
        serde_json::json!(["added"]),
        "{body}"
    );
    assert_eq!(
        body["reloaded"]["handlers"],
        serde_json::json!(["worker"]),
        "{body}"
    );
    let (status, _) = publish(&client, &server.events_url("added"), &event("a-2", 1, "k")).await;
    assert_eq!(status, 404);
}
