//! The shared consumer group API's answers to bad requests (the sharing
//! itself runs on every backend in `conformance`).

use serde_json::{Value, json};

use crate::harness::*;

async fn post(url: &str, body: Option<Value>) -> (u16, Value) {
    let request = client().post(url);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn bad_group_requests_get_clear_errors() {
    let ws = Workspace::new();
    ws.topic("jobs", 2, "").topic("mailed", 1, "");
    std::fs::create_dir_all(ws.path().join("handlers")).unwrap();
    // Its outputs go elsewhere: clients may not publish to a handler's outputs.
    std::fs::write(
        ws.path().join("handlers/mailer.toml"),
        "name = \"mailer\"\n[subscribe]\ntopic = \"jobs\"\n\
         [action]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
         [outputs]\nresults = \"mailed\"\ndead_letters = \"mailed\"\n",
    )
    .unwrap();
    let server = ws.serve(&[]);
    let group = |g: &str| format!("{}/v1/topics/jobs/groups/{g}", server.url);

    let cases: Vec<(String, Option<Value>, u16, &str, &str)> = vec![
        (
            format!("{}/receive?max=0", group("w")),
            None,
            400,
            "invalid_max",
            "parameter",
        ),
        (
            format!("{}/receive?lease=soon", group("w")),
            None,
            400,
            "invalid_duration",
            "parameter",
        ),
        (
            format!("{}/receive?wait=5m", group("w")),
            None,
            400,
            "invalid_duration",
            "parameter",
        ),
        (
            format!("{}/receive?start=middle", group("w")),
            None,
            400,
            "invalid_start",
            "parameter",
        ),
        (
            format!("{}/receive?colour=red", group("w")),
            None,
            400,
            "invalid_query",
            "message",
        ),
        (
            format!("{}/receive", group("mailer")),
            None,
            409,
            "group_in_use",
            "handler",
        ),
        (
            format!("{}/receive", group("bad/name")),
            None,
            404,
            "not_found",
            "message",
        ),
        (
            format!("{}/receive", group(".hidden")),
            None,
            400,
            "invalid_group",
            "message",
        ),
        (
            format!("{}/v1/topics/nope/groups/w/receive", server.url),
            None,
            404,
            "unknown_topic",
            "topic",
        ),
        (
            format!("{}/ack", group("w")),
            Some(json!({"receipts": []})),
            400,
            "invalid_receipts",
            "field",
        ),
        (
            format!("{}/ack", group("w")),
            Some(json!({"ids": ["x"]})),
            400,
            "invalid_json",
            "message",
        ),
        (
            format!("{}/nack", group("w")),
            Some(json!({"receipts": ["x"], "delay": "later"})),
            400,
            "invalid_duration",
            "parameter",
        ),
        (
            format!("{}/receive?member=no%20spaces", group("w")),
            None,
            400,
            "invalid_member",
            "parameter",
        ),
        (
            format!("{}/extend", group("w")),
            Some(json!({"receipts": ["x"], "lease": "soon"})),
            400,
            "invalid_duration",
            "parameter",
        ),
        (
            format!("{}/extend", group("w")),
            Some(json!({"receipts": ["x"], "delay": "1s"})),
            400,
            "invalid_json",
            "field",
        ),
        (
            format!("{}/nack", group("w")),
            Some(json!({"receipts": ["x"], "lease": "1s"})),
            400,
            "invalid_json",
            "field",
        ),
        (
            format!("{}/receive?filter=data.n%20%3E", group("w")),
            None,
            400,
            "invalid_filter",
            "parameter",
        ),
        (
            format!("{}/reset", group("w")),
            Some(json!({"to": "2026-13-01T00:00:00Z"})),
            400,
            "invalid_cursor",
            "parameter",
        ),
        (
            format!("{}/reset", group("w")),
            Some(json!({"from": "earliest"})),
            400,
            "invalid_json",
            "message",
        ),
        (
            format!("{}/reset", group("mailer")),
            Some(json!({"to": "earliest"})),
            409,
            "group_in_use",
            "handler",
        ),
    ];
    for (url, body, status, code, names) in cases {
        let (got, answer) = post(&url, body).await;
        assert_eq!(got, status, "{url}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{url}: {answer}");
        assert!(answer["error"][names].is_string(), "{url}: {answer}");
    }

    // A group in use: a receipt that is not one, and one whose lease is gone.
    let (status, _) = post(&format!("{}/receive?start=earliest", group("w")), None).await;
    assert_eq!(status, 200);
    let (status, answer) = post(
        &format!("{}/ack", group("w")),
        Some(json!({"receipts": ["x.y"]})),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_receipt")),
        "{answer}"
    );
    let (status, answer) = post(
        &format!("{}/ack", group("w")),
        Some(json!({"receipts": ["00000000.1.7.3"]})),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("lease_expired")),
        "{answer}"
    );
    assert_eq!(answer["error"]["expired"], json!(["00000000.1.7.3"]));

    // A bad filter names where it goes wrong.
    let (_, answer) = post(&format!("{}/receive?filter=data.n%20%3E", group("w")), None).await;
    assert_eq!(answer["error"]["line"], 1, "{answer}");
    assert!(answer["error"]["column"].as_u64().unwrap() >= 1, "{answer}");

    // Admin of groups that do not exist: unknown.
    let response = client().delete(group("never")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "unknown_group", "{answer}");
    let response = client()
        .get(format!("{}/v1/topics/nope/groups", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);

    // Status: a group never used is unknown; one in use says where it is.
    let response = client().get(group("never")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let status = get_json(&group("w")).await;
    assert_eq!(status["outstanding"], 0, "{status}");
    assert!(status["committed"].is_string(), "{status}");

    // And the server still serves.
    let (status, _) = publish(
        &client(),
        &server.events_url("jobs"),
        &event("after", 1, "k"),
    )
    .await;
    assert_eq!(status, 200);
}

/// A group declared with a filter in its topic file delivers only what
/// passes, to receives that name no filter; one naming another filter is
/// refused; the filter holds across a restart.
#[tokio::test]
async fn a_declared_group_filter_holds() {
    let ws = Workspace::new();
    ws.topic(
        "orders",
        2,
        "groups = [{ name = \"eu\", filter = 'data.k == \"k1\"' }]",
    );
    let server = ws.serve(&[]);
    // Keys k0..k6 by n % 7: k1 is 1 and 8.
    publish_numbered(&server.events_url("orders"), "o", 0..14).await;
    let eu = format!("{}/v1/topics/orders/groups/eu", server.url);
    let mut ids = Vec::new();
    let mut query = "start=earliest&max=50&wait=2s";
    loop {
        let (status, answer) = post(&format!("{eu}/receive?{query}"), None).await;
        assert_eq!(status, 200, "{answer}");
        query = "max=50&wait=500ms";
        let deliveries = answer["deliveries"].as_array().unwrap().clone();
        if deliveries.is_empty() {
            break;
        }
        let receipts: Vec<&str> = deliveries
            .iter()
            .map(|d| d["receipt"].as_str().unwrap())
            .collect();
        assert_eq!(
            post(&format!("{eu}/ack"), Some(json!({"receipts": receipts})))
                .await
                .0,
            200
        );
        ids.extend(
            deliveries
                .iter()
                .map(|d| d["event"]["id"].as_str().unwrap().to_owned()),
        );
    }
    ids.sort();
    assert_eq!(ids, ["o-1", "o-8"]);
    let (status, answer) = post(&format!("{eu}/receive?filter=true"), None).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "group_filter_mismatch", "{answer}");
    assert_eq!(answer["error"]["filter"], "data.k == \"k1\"", "{answer}");
    let same = crate::conformance::percent("data.k == \"k1\"");
    assert_eq!(
        post(&format!("{eu}/receive?filter={same}"), None).await.0,
        200
    );

    let server = server.restart();
    let eu = format!("{}/v1/topics/orders/groups/eu", server.url);
    let status = get_json(&eu).await;
    assert_eq!(status["filter"], "data.k == \"k1\"", "{status}");
    let list = get_json(&format!("{}/v1/topics/orders/groups", server.url)).await;
    assert_eq!(list["groups"][0]["name"], "eu", "{list}");
    assert_eq!(list["groups"][0]["lag"], 0, "{list}");
}
