//! Limits that hold under abuse: body sizes, idle and slowloris
//! connections, a connection cap, a shutdown deadline; and operational
//! hygiene (`promtool check metrics`, JSON logs).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Workspace, client, event, publish, rss_bytes};

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_within(mut stream: &TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err)
                if err.kind() == std::io::ErrorKind::WouldBlock
                    || err.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// POSTs `len` bytes of JSON-ish body over a raw socket, writing on one
/// thread while reading the answer on this one (a server may answer 413 and
/// close before the body is all sent); returns the status and JSON body.
fn post_oversized(addr: &str, path: &str, len: usize) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    let sender = std::thread::spawn(move || {
        if writer.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < len {
            if writer.write_all(&chunk).is_err() {
                return;
            }
            sent += chunk.len();
        }
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let (status, body) = loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => panic!(
                "{path}: connection ended before a whole answer: {:?}",
                String::from_utf8_lossy(&answer)
            ),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&answer).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("content-length in the answer");
        if body.len() >= length {
            let status = head.split(' ').nth(1).unwrap().parse().unwrap();
            break (status, serde_json::from_str(&body[..length]).unwrap());
        }
    };
    drop(stream);
    let _ = sender.join();
    (status, body)
}

#[tokio::test]
async fn oversized_bodies_get_413_in_json_and_cost_no_memory() {
    let ws = Workspace::new();
    ws.topic("jobs", 1, "").topic("inbox", 1, "");
    std::fs::create_dir_all(ws.path().join("handlers")).unwrap();
    std::fs::write(
        ws.path().join("handlers/mailer.toml"),
        "name = \"mailer\"\n[subscribe]\ntopic = \"jobs\"\n\
         [action]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
         [outputs]\nresults = \"jobs\"\ndead_letters = \"jobs\"\n",
    )
    .unwrap();
    let server = ws.serve(&[]);
    let routes = [
        "/v1/topics/inbox/events",
        "/v1/topics/jobs/groups/w/ack",
        "/v1/topics/jobs/groups/w/nack",
        "/v1/handlers/mailer/replay",
    ];
    let before = rss_bytes(server.pid());
    for _ in 0..5 {
        for path in routes {
            let (status, body) = post_oversized(&server.addr, path, 8 * 1024 * 1024);
            assert_eq!(status, 413, "{path}: {body}");
            assert!(
                body["error"]["code"]
                    .as_str()
                    .unwrap()
                    .contains("too_large"),
                "{path}: {body}"
            );
            assert!(body["error"]["limit"].as_u64().unwrap() < 8 * 1024 * 1024);
        }
    }
    let grown = rss_bytes(server.pid()).saturating_sub(before);
    assert!(
        grown < 32 * 1024 * 1024,
        "20 requests of 8 MiB grew the server by {grown} bytes"
    );
    // Still serving.
    let (status, _) = publish(&client(), &server.events_url("inbox"), &event("ok", 1, "a")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn idle_and_slowloris_connections_are_closed_and_the_cap_holds() {
    let ws = Workspace::new();
    ws.topic("t", 1, "");
    let server = ws.serve(&["--header-timeout", "2s", "--max-connections", "600"]);
    let idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    let mut slow: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect(&server.addr).unwrap();
            s.write_all(b"POST /v1/topics/t/events HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    // Over the cap: some of the 1,000 were closed at once.
    std::thread::sleep(Duration::from_millis(500));
    let closed_at_once = idle
        .iter()
        .chain(slow.iter())
        .filter(|s| closed_within(s, Duration::from_millis(1)))
        .count();
    assert!(
        closed_at_once >= 400,
        "only {closed_at_once} of 1000 connections over a cap of 600 were closed"
    );
    // The slowloris keeps trickling header bytes; the timeout still ends it.
    for s in slow.iter_mut() {
        let _ = s.write_all(b"X-Slow: 1\r\n");
    }
    let started = Instant::now();
    let still_open = idle
        .iter()
        .chain(slow.iter())
        .filter(|s| !closed_within(s, Duration::from_secs(6).saturating_sub(started.elapsed())))
        .count();
    assert_eq!(
        still_open, 0,
        "connections still open past the header timeout"
    );
    // A fresh connection publishes.
    let (status, _) = publish(&client(), &server.events_url("t"), &event("after", 1, "a")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sigterm_with_stalled_clients_exits_within_the_grace_period() {
    let ws = Workspace::new();
    ws.topic("t", 1, "");
    let mut server = ws.serve(&["--shutdown-grace", "2s", "--header-timeout", "60s"]);
    // Enough events to fill a stalled reader's socket buffers.
    let pad = "p".repeat(900 * 1024);
    for i in 0..12 {
        let mut e = event(&format!("e{i}"), i, "a");
        e["data"]["pad"] = json!(pad);
        let (status, body) = publish(&client(), &server.events_url("t"), &e).await;
        assert_eq!(status, 200, "{body}");
    }
    // A reader that never reads, and a slowloris.
    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    stalled
        .write_all(b"GET /v1/topics/t/stream?from=earliest HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    let status = server.terminate();
    let took = started.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(8),
        "took {took:?} to exit with a grace period of 2 s"
    );
    // The data directory's lock is free: a new server starts on it and has
    // every event.
    let next = ws.serve(&[]);
    let events = crate::harness::read_all(&client(), &next.events_url("t")).await;
    assert_eq!(events.len(), 12);
    drop((stalled, slow));
}

#[tokio::test]
async fn metrics_pass_promtool_and_logs_are_json_lines() {
    let ws = Workspace::new();
    ws.topic("t", 1, "");
    let mut server = ws.serve(&["--log-format", "json"]);
    let (status, _) = publish(&client(), &server.events_url("t"), &event("a", 1, "a")).await;
    assert_eq!(status, 200);
    let bad = client()
        .post(server.events_url("t"))
        .header("content-type", "application/cloudevents+json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let response = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/setup installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // OpenMetrics for scrapers that ask for it.
    let open = client()
        .get(format!("{}/metrics", server.url))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(open.text().await.unwrap().ends_with("# EOF\n"));

    server.terminate();
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not a JSON log line ({err}): {line:?}"));
        assert!(
            parsed["level"].is_string() && parsed["fields"].is_object(),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "ANSI escape in {line:?}");
    }
}

#[tokio::test]
async fn stalled_readers_of_large_events_hold_a_bounded_amount_of_memory() {
    let ws = Workspace::new();
    ws.topic("big", 2, "");
    let server = ws.serve(&[]);
    // 48 events of ~900 KB: ~43 MB on the log.
    let pad = "p".repeat(900 * 1024);
    for i in 0..48 {
        let mut e = event(&format!("e{i}"), i, &format!("k{i}"));
        e["data"]["pad"] = json!(pad);
        let (status, body) = publish(&client(), &server.events_url("big"), &e).await;
        assert_eq!(status, 200, "{body}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_bytes(server.pid());
    // Readers that ask for everything and never read an answer: SSE
    // streams and pages from the start, and consumer groups that each read
    // ahead.
    let mut stalled = Vec::new();
    for i in 0..4 {
        for request in [
            "GET /v1/topics/big/stream?from=earliest HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            "GET /v1/topics/big/events?from=earliest&limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n"
                .to_owned(),
            format!(
                "POST /v1/topics/big/groups/g{i}/receive?max=1&start=earliest HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            ),
        ] {
            let mut s = TcpStream::connect(&server.addr).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            stalled.push(s);
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let grown = rss_bytes(server.pid()).saturating_sub(before);
    eprintln!("12 stalled readers: +{} MiB", grown >> 20);
    // Live: 4 SSE + 4 pages at ~1 MiB each beyond socket buffers, 4
    // groups at ~4 MiB of read-ahead each. RSS also keeps what the
    // allocator freed but did not return (measured: ~50 MiB in all, debug
    // build); without the byte bounds these readers took ~600 MiB.
    assert!(
        grown < 96 * 1024 * 1024,
        "12 stalled readers grew the server by {} MiB",
        grown >> 20
    );
    // The server still serves.
    let (status, _) = publish(
        &client(),
        &server.events_url("big"),
        &event("after", 1, "a"),
    )
    .await;
    assert_eq!(status, 200);
    drop(stalled);
}

#[tokio::test]
async fn out_of_file_descriptors_a_segment_roll_fails_cleanly_and_recovers() {
    use crate::harness::{Limits, Server};
    let ws = Workspace::new();
    // ~1 KB events in 4 KiB segments: a new segment file every few events.
    ws.topic("t", 1, "segment_bytes = \"4KiB\"");
    let limits = Limits {
        open_files: 256,
        ..Limits::default()
    };
    // A connection cap above what the descriptors allow, so that a flood
    // of connections can take them all.
    let server = Server::start(
        ws.path(),
        &["--max-connections", "5000", "--header-timeout", "60s"],
        Some(limits),
    );
    // One client with a warm connection, opened before the flood.
    let warm = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let url = server.events_url("t");
    let sized = |n: u64| {
        let mut e = event(&format!("e{n}"), n, "a");
        e["data"]["pad"] = json!("p".repeat(900));
        e
    };
    let (status, _) = publish(&warm, &url, &sized(0)).await;
    assert_eq!(status, 200);
    let mut acknowledged = vec!["e0".to_owned()];

    // Connect until the server has taken every descriptor it may hold.
    let addr: std::net::SocketAddr = server.addr.parse().unwrap();
    let open_fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let mut flood: Vec<TcpStream> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // More than it may hold: the rest wait in the listen backlog.
    while flood.len() < 320 && std::time::Instant::now() < deadline {
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            flood.push(stream);
        }
        if flood.len().is_multiple_of(50) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    while open_fds() < 256 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut starved = None;
    for n in 1..40 {
        let (status, body) = publish(&warm, &url, &sized(n)).await;
        match status {
            200 => acknowledged.push(format!("e{n}")),
            503 => {
                starved = Some((n, body));
                break;
            }
            other => panic!("{other}: {body}"),
        }
    }
    let (n, body) = starved.unwrap_or_else(|| {
        let fds = open_fds();
        panic!(
            "no append failed while {} connections took the descriptors (the server holds {fds})",
            flood.len()
        )
    });
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("open files"),
        "{body}"
    );

    // The flood ends; the same append now goes in, with no restart.
    drop(flood);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = publish(&warm, &url, &sized(n)).await;
        if status == 200 {
            acknowledged.push(format!("e{n}"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for m in n + 1..n + 10 {
        let (status, body) = publish(&warm, &url, &sized(m)).await;
        assert_eq!(status, 200, "{body}");
        acknowledged.push(format!("e{m}"));
    }
    let ready = client()
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // Every acknowledged event is there once, in order, across a restart.
    let server = server.restart();
    let ids: Vec<String> = crate::harness::read_all(&client(), &server.events_url("t"))
        .await
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, acknowledged);
}

#[tokio::test]
async fn a_flood_of_connections_cannot_take_the_descriptors_the_log_needs() {
    use crate::harness::{Limits, Server};
    let ws = Workspace::new();
    ws.topic("t", 1, "segment_bytes = \"4KiB\"");
    let limits = Limits {
        open_files: 2300,
        ..Limits::default()
    };
    // No --max-connections: the cap comes from what the open-file limit
    // leaves after the log's reserve.
    let server = Server::start(ws.path(), &["--header-timeout", "60s"], Some(limits));
    let warm = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let url = server.events_url("t");
    let (status, _) = publish(&warm, &url, &event("e0", 0, "a")).await;
    assert_eq!(status, 200);
    let addr: std::net::SocketAddr = server.addr.parse().unwrap();
    let flood: Vec<TcpStream> = (0..2400)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    // Appends that roll segment after segment all go in.
    for n in 1..40 {
        let mut e = event(&format!("e{n}"), n, "a");
        e["data"]["pad"] = json!("p".repeat(900));
        let (status, body) = publish(&warm, &url, &e).await;
        assert_eq!(
            status,
            200,
            "append {n} with {} connections open: {body}",
            flood.len()
        );
    }
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .count();
    assert!(fds < 2300, "{fds}");
}
