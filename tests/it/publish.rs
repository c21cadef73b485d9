//! Publishing in every content mode, and every error with its JSON body.

use serde_json::{Value, json};

use crate::harness::*;

async fn post(
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = client().post(url).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        headers,
    )
}

#[tokio::test]
async fn every_publish_mode_is_stored_as_a_cloudevent() {
    let ws = Workspace::new();
    ws.topic("modes", 2, "");
    let server = ws.serve(&[]);
    let url = server.events_url("modes");

    // Structured.
    let (status, body, _) = post(
        &url,
        Some("application/cloudevents+json"),
        event("s-1", 1, "a").to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"][0]["id"], "s-1");
    assert!(body["events"][0]["position"].is_string());

    // Batch.
    let batch = json!([event("b-1", 2, "a"), event("b-2", 3, "b")]);
    let (status, body, _) = post(
        &url,
        Some("application/cloudevents-batch+json"),
        batch.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<_> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids, [json!("b-1"), json!("b-2")]);

    // Binary: attributes in ce- headers (one percent-encoded), data as body.
    let response = client()
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "bin-1")
        .header("ce-source", "/caf%C3%A9")
        .header("ce-type", "test.event")
        .header("ce-subject", "sub-1")
        .header(
            "ce-traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("content-type", "application/json")
        .body(r#"{"n": 4, "k": "b"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Plain JSON with ?type=: the bus fills id, time and source.
    let response = client()
        .post(format!("{url}?type=test.other&subject=plain"))
        .header("content-type", "application/json")
        .body(r#"{"n": 5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let plain_id = body["events"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&plain_id).unwrap().get_version_num(),
        7
    );

    let events = read_all(&client(), &url).await;
    assert_eq!(events.len(), 5);
    let by_id = |id: &str| {
        events
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing"))
            .clone()
    };
    assert_eq!(by_id("s-1")["data"], json!({"n": 1, "k": "a"}));
    assert_eq!(by_id("b-2")["data"]["n"], 3);
    let binary = by_id("bin-1");
    assert_eq!(binary["source"], "/café");
    assert_eq!(binary["subject"], "sub-1");
    assert_eq!(binary["datacontenttype"], "application/json");
    assert_eq!(
        binary["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(binary["data"], json!({"n": 4, "k": "b"}));
    let plain = by_id(&plain_id);
    assert_eq!(plain["type"], "test.other");
    assert_eq!(plain["source"], "/topics/modes");
    assert_eq!(plain["subject"], "plain");
    assert!(plain["time"].as_str().unwrap().ends_with('Z'));
    for event in &events {
        assert_eq!(event["specversion"], "1.0");
    }
}

#[tokio::test]
async fn errors_have_the_right_status_and_name_the_problem() {
    let ws = Workspace::new();
    ws.topic("errs", 1, "");
    let server = ws.serve(&["--max-event-bytes", "2KiB"]);
    let url = server.events_url("errs");
    let ce = "application/cloudevents+json";

    // 404: unknown topic, with the topic named.
    let (status, body, _) = post(
        &server.events_url("nope"),
        Some(ce),
        event("x", 1, "a").to_string(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_topic"))
    );
    assert_eq!(body["error"]["topic"], "nope");

    // 400: malformed JSON names line and column.
    let (status, body, _) = post(&url, Some(ce), "{\"specversion\": ").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    assert!(body["error"]["line"].is_number());

    // 400: a missing required attribute is named.
    let mut missing = event("x", 1, "a");
    missing.as_object_mut().unwrap().remove("source");
    let (status, body, _) = post(&url, Some(ce), missing.to_string()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_event"))
    );
    assert_eq!(body["error"]["attribute"], "source");

    // 400: an extension name outside [a-z0-9].
    let mut bad_ext = event("x", 1, "a");
    bad_ext["Trace_Id"] = json!("t");
    let (status, body, _) = post(&url, Some(ce), bad_ext.to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["attribute"], "Trace_Id");

    // 400: a batch names the index of the bad event; nothing is appended.
    let batch = json!([event("ok-1", 1, "a"), {"specversion": "1.0", "id": "y", "source": "/s"}]);
    let (status, body, _) = post(
        &url,
        Some("application/cloudevents-batch+json"),
        batch.to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["attribute"], "/1/type");

    // 400: plain JSON without ?type=.
    let (status, body, _) = post(&url, Some("application/json"), "{\"n\": 1}").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("missing_type"))
    );
    assert_eq!(body["error"]["parameter"], "type");

    // 415: unsupported or missing content type, naming the header.
    let (status, body, _) = post(&url, Some("text/plain"), "hello").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    assert_eq!(body["error"]["header"], "content-type");
    let (status, _, _) = post(&url, None, "{}").await;
    assert_eq!(status, 415);

    // 413: over max_event_bytes, naming the limit.
    let mut big = event("big", 1, "a");
    big["data"]["pad"] = json!("x".repeat(4096));
    let (status, body, _) = post(&url, Some(ce), big.to_string()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    assert_eq!(body["error"]["limit"], 2048);

    // 422: unknown type lists the accepted ones.
    let mut unknown = event("x", 1, "a");
    unknown["type"] = json!("test.nope");
    let (status, body, _) = post(&url, Some(ce), unknown.to_string()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("unknown_event_type"))
    );
    assert_eq!(
        body["error"]["accepted"],
        json!(["test.event", "test.other"])
    );

    // 422: schema violations name the JSON pointer and the keyword.
    let mut invalid = event("x", 1, "a");
    invalid["data"]["n"] = json!(-3);
    let (status, body, _) = post(&url, Some(ce), invalid.to_string()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("schema_violation"))
    );
    assert_eq!(body["error"]["pointer"], "/data/n");
    assert_eq!(body["error"]["keyword"], "minimum");
    let mut no_n = event("x", 1, "a");
    no_n["data"] = json!({"k": "a"});
    let (status, body, _) = post(&url, Some(ce), no_n.to_string()).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["keyword"], "required");

    // 400 on reads: a malformed cursor and a bad limit.
    let response = client()
        .get(&url)
        .query(&[("from", "1.x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_cursor");
    let response = client()
        .get(&url)
        .query(&[("limit", "0")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = client()
        .get(&url)
        .query(&[("from", "5")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "a cursor past the end is refused");

    // The server kept serving through all of it, and nothing bad got in.
    let (status, _, _) = post(&url, Some(ce), event("good", 1, "a").to_string()).await;
    assert_eq!(status, 200);
    let events = read_all(&client(), &url).await;
    let ids: Vec<_> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["good"]);

    // Errors are counted by code.
    let metrics = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchyard_http_errors_total{code=\"schema_violation\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_full_disk_answers_503_and_a_retry_succeeds_once_there_is_room() {
    let ws = Workspace::new();
    ws.topic("full", 1, "");
    // Files may grow to 64 KiB: the "disk" fills after ~60 small events.
    let limits = Limits {
        file_size: 64 * 1024,
        ..Limits::default()
    };
    let server = Server::start(ws.path(), &[], Some(limits));
    let url = server.events_url("full");
    let client = client();

    let mut acknowledged = Vec::new();
    let mut refused = None;
    for n in 0..2000u64 {
        let mut e = event(&format!("e-{n}"), n, "k");
        e["data"]["pad"] = json!("p".repeat(900));
        let (status, body) = publish(&client, &url, &e).await;
        match status {
            200 => acknowledged.push(format!("e-{n}")),
            503 => {
                refused = Some((n, body));
                break;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    let (refused_n, body) = refused.expect("the size limit was never hit");
    assert_eq!(body["error"]["code"], "broker_unavailable");
    // Readiness says why the log takes no writes (the failed write itself
    // was undone).
    let ready = client
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert!(
        ready["error"]["message"]
            .as_str()
            .unwrap()
            .contains("File too large"),
        "{ready}"
    );

    // Make room (lift the limit); the same event now goes in.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    let rc = unsafe {
        libc::prlimit(
            server.pid() as i32,
            libc::RLIMIT_FSIZE,
            &unlimited,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit");
    let mut retry = event(&format!("e-{refused_n}"), refused_n, "k");
    retry["data"]["pad"] = json!("p".repeat(900));
    let (status, body) = publish(&client, &url, &retry).await;
    assert_eq!(status, 200, "{body}");
    acknowledged.push(format!("e-{refused_n}"));
    let ready = client
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "ready again once an append succeeded");

    // Every acknowledged event is there once, in order, and no half-written
    // record survived, even across a restart.
    let server = server.restart();
    let events = read_all(&client, &server.events_url("full")).await;
    let ids: Vec<_> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, acknowledged);
}

#[tokio::test]
async fn a_503_carries_retry_after() {
    let ws = Workspace::new();
    ws.topic("ra", 1, "");
    let server = Server::start(
        ws.path(),
        &[],
        Some(Limits {
            file_size: 1,
            ..Limits::default()
        }),
    );
    let (status, body, headers) = post(
        &server.events_url("ra"),
        Some("application/cloudevents+json"),
        event("x", 1, "a").to_string(),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not store")
    );
}

#[tokio::test]
async fn deep_data_and_control_characters_are_refused_by_name() {
    let ws = Workspace::new();
    ws.topic("t", 1, "");
    let server = ws.serve(&[]);
    // Data nested 127 deep parses, but its stored form (inside the
    // envelope) would be deeper than JSON readers accept.
    let deep = format!("{}1{}", "[".repeat(127), "]".repeat(127));
    let response = client()
        .post(format!("{}?type=test.event", server.events_url("t")))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["attribute"], "data", "{body}");
    // A line break smuggled into an attribute, percent-encoded.
    let response = client()
        .post(server.events_url("t"))
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", "x1")
        .header("ce-source", "/t")
        .header("ce-type", "test.event")
        .header("ce-subject", "a%0Aevent: forged")
        .body(r#"{"n": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["attribute"], "subject", "{body}");
    assert!(
        read_all(&client(), &server.events_url("t"))
            .await
            .is_empty()
    );
}

/// A producer on the CloudEvents Python SDK: its `to_binary` sends JSON
/// data with no Content-Type. The body is taken as the JSON it is, and
/// checked against the type's schema like any other.
#[tokio::test]
async fn binary_mode_without_content_type_takes_a_json_body() {
    let ws = Workspace::new();
    ws.topic("sdk", 1, "");
    let server = ws.serve(&[]);
    let url = server.events_url("sdk");
    let encode = |id: &str, data: &str| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/signers");
        let out = std::process::Command::new(dir.join(".venv/bin/python"))
            .arg(dir.join("ce_binary.py"))
            .args([id, "test.event", "/py", data])
            .output()
            .expect("run scripts/test: it installs the cloudevents SDK");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let encoded: Value = serde_json::from_slice(&out.stdout).unwrap();
        encoded
    };
    let send = |encoded: Value| {
        let url = url.clone();
        async move {
            let mut request = client().post(&url);
            for (name, value) in encoded["headers"].as_object().unwrap() {
                request = request.header(name, value.as_str().unwrap());
            }
            let response = request
                .body(encoded["body"].as_str().unwrap().to_owned())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let encoded = encode("py-1", r#"{"n": 7, "k": "a"}"#);
    assert!(
        encoded["headers"].get("content-type").is_none(),
        "{encoded}"
    );
    let (status, body) = send(encoded).await;
    assert_eq!(status, 200, "{body}");
    let events = read_all(&client(), &url).await;
    assert_eq!(events[0]["id"], "py-1");
    assert_eq!(events[0]["data"], json!({"n": 7, "k": "a"}));
    assert!(events[0].get("data_base64").is_none(), "{}", events[0]);

    // JSON that the schema refuses is named as a schema violation, not as
    // data_base64 the producer never sent.
    let (status, body) = send(encode("py-2", r#"{"n": "seven"}"#)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "schema_violation", "{body}");
    assert!(
        !body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("data_base64"),
        "{body}"
    );
}
