//! Access control over real sockets: bearer tokens (HS256 and ES256, minted
//! by PyJWT) with per-topic scopes on every route, the browser ways of
//! presenting them, CORS, and handler output topics that clients may not
//! write.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Server, TokenMinter, Workspace, client, event};

const SECRET: &str = "a-test-secret-of-some-length-0123456789";

/// A workspace with topics `orders` and `audit`, a handler on `orders` that
/// writes `results` and `dead`, and an ES256 key pair.
fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.topic("orders", 2, "")
        .topic("audit", 1, "")
        .topic("results", 1, "")
        .topic("dead", 1, "");
    std::fs::create_dir_all(ws.path().join("handlers")).unwrap();
    std::fs::write(
        ws.path().join("handlers/copy.toml"),
        "name = \"copy\"\n[subscribe]\ntopic = \"orders\"\n\
         [action]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
         [outputs]\nresults = \"results\"\ndead_letters = \"dead\"\n",
    )
    .unwrap();
    TokenMinter::keypair(ws.path());
    ws
}

fn keyed_server(ws: &Workspace) -> Server {
    let public = ws.path().join("es256.pub.pem");
    ws.serve_with(
        &[],
        &[
            ("SWITCHYARD_JWT_SECRET", SECRET),
            ("SWITCHYARD_JWT_PUBLIC_KEY", public.to_str().unwrap()),
        ],
    )
}

/// One route and what it needs: (method, path, body, needed scope).
fn routes() -> Vec<(
    &'static str,
    &'static str,
    Option<Value>,
    Option<&'static str>,
)> {
    let receipts = json!({"receipts": ["nope"]});
    vec![
        (
            "POST",
            "/v1/topics/orders/events",
            Some(event("e-1", 1, "a")),
            Some("publish"),
        ),
        (
            "GET",
            "/v1/topics/orders/events?from=earliest",
            None,
            Some("subscribe"),
        ),
        (
            "GET",
            "/v1/topics/orders/stream?from=earliest",
            None,
            Some("subscribe"),
        ),
        (
            "GET",
            "/v1/topics/orders/groups/billing",
            None,
            Some("consume"),
        ),
        (
            "POST",
            "/v1/topics/orders/groups/billing/receive?wait=0s",
            None,
            Some("consume"),
        ),
        (
            "POST",
            "/v1/topics/orders/groups/billing/ack",
            Some(receipts.clone()),
            Some("consume"),
        ),
        (
            "POST",
            "/v1/topics/orders/groups/billing/nack",
            Some(receipts),
            Some("consume"),
        ),
        ("GET", "/v1/topics", None, Some("token")),
        ("GET", "/v1/handlers", None, Some("admin")),
        ("GET", "/v1/topics/orders/groups", None, Some("admin")),
        (
            "POST",
            "/v1/topics/orders/groups/billing/reset",
            Some(json!({"to": "latest"})),
            Some("admin"),
        ),
        (
            "DELETE",
            "/v1/topics/orders/groups/billing",
            None,
            Some("admin"),
        ),
        ("POST", "/v1/handlers/copy/replay", None, Some("admin")),
        ("GET", "/metrics", None, Some("admin")),
        ("GET", "/healthz", None, None),
        ("GET", "/readyz", None, None),
        ("POST", "/v1/webhooks/nosuch", Some(json!({})), None),
    ]
}

/// Sends one route's request; returns the status, the WWW-Authenticate
/// header and the JSON body (null for streams and non-JSON answers).
async fn call(
    server: &Server,
    route: &(&str, &str, Option<Value>, Option<&str>),
    token: Option<&str>,
) -> (u16, Option<String>, Value) {
    let (method, path, body, _) = route;
    let url = format!("{}{path}", server.url);
    let mut request = match *method {
        "GET" => client().get(&url),
        "DELETE" => client().delete(&url),
        _ => client().post(&url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header(
                "content-type",
                if path.ends_with("/events") {
                    "application/cloudevents+json"
                } else {
                    "application/json"
                },
            )
            .body(body.to_string());
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let is_stream = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let body = if is_stream {
        Value::Null
    } else {
        // Streams never end; everything else is a small JSON answer.
        tokio::time::timeout(Duration::from_secs(10), response.json())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(Value::Null)
    };
    (status, challenge, body)
}

#[tokio::test]
async fn every_route_asks_for_the_scope_it_needs() {
    let ws = workspace();
    let server = keyed_server(&ws);
    let es256 = ws.path().join("es256.pem");
    let es256 = es256.to_str().unwrap();
    let mut minter = TokenMinter::new();
    let grant = |scopes: Value| json!({"sub": "tests", "exp_in": 600, "switchyard": scopes});

    // (name, token, the scopes it has on `orders` / group `billing`)
    let tokens: Vec<(&str, String, &[&str])> = vec![
        (
            "publish orders (HS256)",
            minter.mint("HS256", SECRET, grant(json!({"publish": ["orders"]}))),
            &["publish", "token"],
        ),
        (
            "subscribe orders.* and orders (ES256)",
            minter.mint(
                "ES256",
                es256,
                grant(json!({"subscribe": ["orders", "shop.*"]})),
            ),
            &["subscribe", "token"],
        ),
        (
            "consume billing on orders (ES256)",
            minter.mint(
                "ES256",
                es256,
                grant(json!({"subscribe": ["orders"], "consume": ["billing"]})),
            ),
            &["subscribe", "consume", "token"],
        ),
        (
            "everything on another topic (HS256)",
            minter.mint(
                "HS256",
                SECRET,
                grant(json!({"publish": ["audit"], "subscribe": ["audit"], "consume": ["*"]})),
            ),
            &["token"],
        ),
        (
            "admin (HS256)",
            minter.mint("HS256", SECRET, grant(json!({"admin": true}))),
            &["publish", "subscribe", "consume", "admin", "token"],
        ),
    ];

    for route in &routes() {
        let (method, path, _, need) = route;
        // Without a token: 401 with a Bearer challenge, except open routes.
        let (status, challenge, body) = call(&server, route, None).await;
        match need {
            None => assert!(
                status != 401 && status != 403,
                "{method} {path} is open, got {status} {body}"
            ),
            Some(_) => {
                assert_eq!(status, 401, "{method} {path} without a token: {body}");
                assert_eq!(body["error"]["code"], "missing_token", "{method} {path}");
                assert!(
                    challenge
                        .as_deref()
                        .unwrap_or("")
                        .starts_with("Bearer realm="),
                    "{method} {path}: challenge {challenge:?}"
                );
            }
        }
        let Some(need) = need else { continue };
        for (name, token, has) in &tokens {
            let (status, challenge, body) = call(&server, route, Some(token)).await;
            if has.contains(need) {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} with token {name:?} must be allowed, got {status} {body}"
                );
            } else {
                assert_eq!(
                    status, 403,
                    "{method} {path} with token {name:?} must be refused: {body}"
                );
                assert_eq!(body["error"]["code"], "forbidden");
                let scope = body["error"]["scope"].as_str().unwrap();
                assert!(
                    scope == *need || (*need == "consume" && scope == "subscribe"),
                    "{method} {path} with {name:?}: names scope {scope}"
                );
                assert!(
                    challenge.unwrap().contains("insufficient_scope"),
                    "{method} {path}: 403 challenge"
                );
            }
        }
    }

    // Tokens that are not good: expired, signed with another key, garbage,
    // and an ES256 token passed off as HS256 by its header.
    let bad = [
        (
            "expired",
            minter.mint(
                "HS256",
                SECRET,
                json!({"exp_in": -3600, "switchyard": {"admin": true}}),
            ),
            "expired",
        ),
        (
            "another secret",
            minter.mint(
                "HS256",
                "some-other-secret-0123456789abcdef",
                grant(json!({"admin": true})),
            ),
            "signature",
        ),
        ("garbage", "not.a.jwt".to_owned(), "not a JWT"),
    ];
    for (name, token, says) in &bad {
        let route = &routes()[1];
        let (status, challenge, body) = call(&server, route, Some(token)).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error"]["code"], "invalid_token", "{name}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{name}: {message}");
        assert!(challenge.unwrap().contains("error=\"invalid_token\""));
    }

    // The topic list shows only what a token may use.
    let subscriber = &tokens[1].1;
    let topics: Value = client()
        .get(format!("{}/v1/topics", server.url))
        .bearer_auth(subscriber)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders"]);
}

#[tokio::test]
async fn browsers_present_tokens_as_a_cookie_or_a_query_parameter() {
    let ws = workspace();
    let server = keyed_server(&ws);
    let mut minter = TokenMinter::new();
    let reader = minter.mint(
        "HS256",
        SECRET,
        json!({"exp_in": 600, "switchyard": {"subscribe": ["orders"]}}),
    );
    let page = format!("{}?from=earliest", server.events_url("orders"));
    let by_cookie = client()
        .get(&page)
        .header("cookie", format!("theme=dark; switchyard_token={reader}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), 200);
    let by_query = client()
        .get(format!("{page}&access_token={reader}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);
    let stream = client()
        .get(format!(
            "{}?from=earliest&access_token={reader}",
            server.stream_url("orders")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    // The same token may not read another topic, whichever way it comes.
    let other = client()
        .get(format!(
            "{}?from=earliest&access_token={reader}",
            server.events_url("audit")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
}

#[tokio::test]
async fn clients_cannot_write_handler_outputs() {
    let ws = workspace();
    let server = keyed_server(&ws);
    let mut minter = TokenMinter::new();
    let admin = minter.mint(
        "HS256",
        SECRET,
        json!({"exp_in": 600, "switchyard": {"admin": true}}),
    );
    // A forged outcome and a forged dead letter: refused even for an admin.
    for topic in ["results", "dead"] {
        let forged = json!({
            "specversion": "1.0", "id": "forged", "source": "/attacker",
            "type": "test.event", "data": {"n": 1},
        });
        let response = client()
            .post(server.events_url(topic))
            .bearer_auth(&admin)
            .header("content-type", "application/cloudevents+json")
            .body(forged.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "publish to {topic}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "handler_output");
        assert_eq!(body["error"]["handler"], "copy");
    }
    let page: Value = client()
        .get(format!("{}?from=earliest", server.events_url("dead")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"], json!([]), "nothing forged was stored");
    // Other topics take the admin's publishes.
    let response = client()
        .post(server.events_url("audit"))
        .bearer_auth(&admin)
        .header("content-type", "application/cloudevents+json")
        .body(event("fine", 1, "a").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn cors_answers_listed_origins_only() {
    let ws = workspace();
    let server = ws.serve(&["--cors-origins", "http://dash.test:3000,https://ops.test"]);
    let url = server.stream_url("orders");
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header(
                "access-control-request-headers",
                "authorization, last-event-id",
            )
            .send()
    };
    let listed = preflight("http://dash.test:3000").await.unwrap();
    assert!(listed.status().is_success(), "{}", listed.status());
    let h = listed.headers();
    assert_eq!(h["access-control-allow-origin"], "http://dash.test:3000");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("last-event-id") && allowed.contains("authorization"));

    // Signing out (DELETE /v1/session) works cross-origin too.
    let sign_out = client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/session", server.url),
        )
        .header("origin", "https://ops.test")
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .unwrap();
    let methods = sign_out.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("DELETE"), "{methods}");

    let unlisted = preflight("http://evil.test").await.unwrap();
    assert!(
        unlisted
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert!(
        unlisted
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );

    // A simple request: the listed origin may read the answer, the other not.
    for (origin, allowed) in [("https://ops.test", true), ("http://evil.test", false)] {
        let response = client()
            .get(format!("{}?from=earliest", server.events_url("orders")))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_some(),
            allowed,
            "{origin}"
        );
    }
}

#[tokio::test]
async fn without_a_key_serve_refuses_a_network_address() {
    use std::process::Command;
    let ws = workspace();
    let output = Command::new(crate::harness::BIN)
        .current_dir(ws.path())
        .args(["serve", "--listen", "0.0.0.0:0", "--topics-dir", "topics"])
        .env_remove("SWITCHYARD_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SWITCHYARD_JWT_SECRET") && stderr.contains("--allow-anonymous"),
        "{stderr}"
    );
    // With --allow-anonymous it serves, and says so loudly.
    let mut child = Command::new(crate::harness::BIN)
        .current_dir(ws.path())
        .args(["serve", "--listen", "0.0.0.0:0", "--topics-dir", "topics"])
        .args(["--data-dir", "data", "--allow-anonymous"])
        .env_remove("SWITCHYARD_JWT_SECRET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line.trim().rsplit(':').next().unwrap().to_owned();
    let (status, _) = crate::harness::publish(
        &client(),
        &format!("http://127.0.0.1:{port}/v1/topics/orders/events"),
        &event("anon", 1, "a"),
    )
    .await;
    assert_eq!(status, 200);
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ANONYMOUS ACCESS"), "{stderr}");
}

#[tokio::test]
async fn switchyard_token_mints_what_the_server_accepts() {
    use std::process::Command;
    let ws = workspace();
    let server = keyed_server(&ws);
    let minted = Command::new(crate::harness::BIN)
        .args(["token", "--publish", "orders", "--ttl", "5m"])
        .env("SWITCHYARD_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(minted.status.success());
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    // The CLI's own publish presents it.
    let published = Command::new(crate::harness::BIN)
        .args(["publish", "orders", "--type", "test.event", r#"{"n": 7}"#])
        .env("SWITCHYARD_URL", &server.url)
        .env("SWITCHYARD_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    // It may not read.
    let read = client()
        .get(server.events_url("orders"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 403);
}
