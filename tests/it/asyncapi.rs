//! The AsyncAPI document (`GET /v1/asyncapi.json`, `switchyard asyncapi`)
//! of the demo topics, handlers and webhook sources, validated by the
//! official parser (npm `@asyncapi/parser`, tests/asyncapi/validate.mjs):
//! no errors, and every demo topic, event type and webhook source in it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::*;

pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// What the demo topic files declare: topics, `topic/type`s, webhook sources.
pub(crate) fn declared() -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let (mut topics, mut types, mut sources) = Default::default();
    for entry in std::fs::read_dir(repo().join("topics")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let file: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = file["name"].as_str().unwrap().to_owned();
        for ty in file
            .get("types")
            .and_then(|t| t.as_table())
            .into_iter()
            .flatten()
        {
            BTreeSet::insert(&mut types, format!("{name}/{}", ty.0));
        }
        for hook in file
            .get("webhooks")
            .and_then(|w| w.as_array())
            .into_iter()
            .flatten()
        {
            BTreeSet::insert(&mut sources, hook["source"].as_str().unwrap().to_owned());
        }
        BTreeSet::insert(&mut topics, name);
    }
    (topics, types, sources)
}

/// The parser's verdict on `document`.
fn validate(document: &Value, dir: &Path) -> Value {
    let script = repo().join("tests/asyncapi/validate.mjs");
    assert!(
        repo()
            .join("tests/asyncapi/node_modules/@asyncapi/parser")
            .exists(),
        "the AsyncAPI parser is not installed: run scripts/test (it installs tests/asyncapi)"
    );
    let file: PathBuf = dir.join("asyncapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(document).unwrap()).unwrap();
    let out = Command::new("node")
        .arg(script)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_asyncapi_document_of_the_demo_is_valid_and_complete() {
    let ws = Workspace::new();
    copy_dir(&repo().join("topics"), &ws.topics_dir());
    copy_dir(&repo().join("handlers"), &ws.path().join("handlers"));
    let server = ws.serve(&[]);
    let document = get_json(&format!("{}/v1/asyncapi.json", server.url)).await;
    let verdict = validate(&document, ws.path());
    assert_eq!(verdict["errors"], json!([]), "{verdict}");
    assert_eq!(verdict["version"], "3.0.0");

    let (topics, types, sources) = declared();
    assert!(
        topics.len() >= 5 && !sources.is_empty(),
        "{topics:?} {sources:?}"
    );
    let channels: BTreeSet<String> = verdict["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    for topic in &topics {
        for address in [
            format!("/v1/topics/{topic}/events"),
            format!("/v1/topics/{topic}/stream"),
        ] {
            assert!(
                channels.contains(&address),
                "{address} missing: {channels:?}"
            );
        }
    }
    for source in &sources {
        let address = format!("/v1/webhooks/{source}");
        assert!(
            channels.contains(&address),
            "{address} missing: {channels:?}"
        );
    }
    // Every declared type is a message, with its topic's schema as `data`.
    let messages = document["components"]["messages"].as_object().unwrap();
    let described: BTreeSet<String> = messages
        .values()
        .map(|m| {
            let topic = m["payload"]["description"]
                .as_str()
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap();
            format!("{topic}/{}", m["name"].as_str().unwrap())
        })
        .collect();
    assert_eq!(described, types);
    let created = messages
        .values()
        .find(|m| m["name"] == "order.created")
        .unwrap();
    assert_eq!(
        created["payload"]["properties"]["data"]["required"],
        json!(["order_id", "amount"])
    );
    // The demo handler writes its outcome topics.
    let operations = verdict["operations"].as_array().unwrap();
    assert!(
        operations
            .iter()
            .any(|o| o["id"] == "audit-orders_to_outcomes" && o["action"] == "send"),
        "{operations:?}"
    );

    // The command line prints the same channels.
    let out = Command::new(BIN)
        .args(["asyncapi", "--topics-dir"])
        .arg(repo().join("topics"))
        .arg("--handlers-dir")
        .arg(repo().join("handlers"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["channels"], document["channels"]);
    assert_eq!(validate(&printed, ws.path())["errors"], json!([]));
}

/// A token sees the channels of the topics it may use, no others.
#[tokio::test]
async fn a_token_sees_only_its_topics() {
    const SECRET: &str = "a-test-secret-of-some-length-0123456789";
    let ws = Workspace::new();
    ws.topic("orders", 1, "").topic("secret", 1, "");
    let server = ws.serve_with(&[], &[("SWITCHYARD_JWT_SECRET", SECRET)]);
    let mut minter = TokenMinter::new();
    let token = minter.mint(
        "HS256",
        SECRET,
        json!({"sub": "reader", "exp_in": 600, "switchyard": {"subscribe": ["orders"]}}),
    );
    let document: Value = client()
        .get(format!("{}/v1/asyncapi.json", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let channels: Vec<&str> = document["channels"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        channels,
        ["/v1/topics/orders/events", "/v1/topics/orders/stream"]
    );
    assert_eq!(
        document["servers"]["switchyard"]["security"],
        json!([{"$ref": "#/components/securitySchemes/bearer"}])
    );
}
