//! The command line: `check`, `publish`, `tail`, `topics` against a server.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

fn switchyard(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn check_accepts_the_demo_topics_and_names_file_key_and_reason() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = switchyard(
        &["check", "--topics-dir", &format!("{repo}/topics")],
        repo.as_ref(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok:"));

    let ws = Workspace::new();
    ws.topic("fine", 1, "");
    std::fs::write(
        ws.topics_dir().join("broken.toml"),
        "name = \"Bad Name\"\npartitions = 0\n[types.\"x\"]\nschema = \"missing.json\"\n",
    )
    .unwrap();
    std::fs::write(
        ws.topics_dir().join("typo.toml"),
        "name = \"typo\"\npartitons = 2\n",
    )
    .unwrap();
    for (name, group) in [
        (
            "grouped",
            "{ name = \"g\", max_deliveries = 3, dead_letters = \"nowhere\" }",
        ),
        (
            "zero",
            "{ name = \"g\", max_deliveries = 0, dead_letters = \"fine\" }",
        ),
        ("filtered", "{ name = \"g\", filter = \"data.n >\" }"),
        ("half", "{ name = \"g\", max_deliveries = 2 }"),
    ] {
        std::fs::write(
            ws.topics_dir().join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\ngroups = [{group}]\n\
                 [types.\"test.event\"]\nschema = \"test.schema.json\"\n"
            ),
        )
        .unwrap();
    }
    let out = switchyard(&["check", "--topics-dir", "topics"], ws.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.toml: name:"), "{stderr}");
    assert!(stderr.contains("broken.toml: partitions:"), "{stderr}");
    assert!(
        stderr.contains("broken.toml: types.\"x\".schema: cannot read"),
        "{stderr}"
    );
    assert!(
        stderr.contains("typo.toml") && stderr.contains("partitons"),
        "{stderr}"
    );
    assert!(
        stderr.contains("zero.toml: groups[0].max_deliveries: must be at least 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("grouped.toml: groups.g.dead_letters: no topic named \"nowhere\""),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "filtered.toml: groups[0].filter: the filter is not a valid CEL expression: at line 1, column"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("half.toml: groups[0].dead_letters: is required with max_deliveries"),
        "{stderr}"
    );
}

/// `switchyard groups` lists a topic's groups with their lag, resets one
/// and deletes one, against a running server.
#[tokio::test]
async fn groups_lists_resets_and_deletes() {
    let ws = Workspace::new();
    ws.topic("jobs", 2, "");
    let server = ws.serve(&[]);
    publish_numbered(&server.events_url("jobs"), "j", 0..5).await;
    let group = format!("{}/v1/topics/jobs/groups/w", server.url);
    let got: serde_json::Value = client()
        .post(format!("{group}/receive?start=earliest&max=10&wait=2s"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let receipts: Vec<&str> = got["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["receipt"].as_str().unwrap())
        .collect();
    assert_eq!(receipts.len(), 5, "{got}");
    let acked = client()
        .post(format!("{group}/ack"))
        .json(&serde_json::json!({ "receipts": receipts }))
        .send()
        .await
        .unwrap();
    assert_eq!(acked.status(), 200);

    let url = server.url.clone();
    let run = move |args: &[&str]| {
        let mut all: Vec<&str> = vec!["groups", "jobs"];
        all.extend(args);
        all.extend(["--url", &url]);
        let out = switchyard(&all, std::env::temp_dir().as_path());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let lag_of_w = |listing: &str| -> Option<u64> {
        let line = listing.lines().find(|l| l.starts_with("w "))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let (ok, listing, err) = run(&[]);
    assert!(ok, "{err}");
    assert!(listing.starts_with("GROUP"), "{listing}");
    assert_eq!(lag_of_w(&listing), Some(0), "{listing}");

    let (ok, out, err) = run(&["reset", "w", "--to", "earliest"]);
    assert!(ok, "{err}");
    assert!(out.contains("group w reset to 0.0"), "{out}");
    assert_eq!(lag_of_w(&run(&[]).1), Some(5));

    let (ok, _, err) = run(&["reset", "w"]);
    assert!(!ok && err.contains("--to"), "{err}");

    let (ok, out, err) = run(&["delete", "w"]);
    assert!(ok, "{err}");
    assert!(out.contains("group w deleted"), "{out}");
    assert_eq!(lag_of_w(&run(&[]).1), None);
    let (ok, _, err) = run(&["delete", "w"]);
    assert!(
        !ok && err.contains("404") && err.contains("never consumed"),
        "{err}"
    );

    let help = switchyard(&["groups", "--help"], std::env::temp_dir().as_path());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("reset") && help.contains("group_active"),
        "{help}"
    );
}

/// A handler's consumer group is its own: one the topic declares for
/// workers to share is refused at load, naming both.
#[test]
fn check_refuses_a_handler_on_a_shared_group() {
    let ws = Workspace::new();
    ws.topic(
        "jobs",
        1,
        "groups = [{ name = \"mailer\", max_deliveries = 3, dead_letters = \"mailed\" }]",
    )
    .topic("mailed", 1, "");
    std::fs::create_dir_all(ws.path().join("handlers")).unwrap();
    std::fs::write(
        ws.path().join("handlers/mailer.toml"),
        "name = \"mailer\"\n[subscribe]\ntopic = \"jobs\"\n\
         [action]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
         [outputs]\ndead_letters = \"mailed\"\n",
    )
    .unwrap();
    let out = switchyard(&["check"], ws.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "mailer.toml: name: consumer group \"mailer\" is declared in topic \"jobs\"'s groups"
        ),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_bad_config_with_a_clear_error() {
    let ws = Workspace::new();
    ws.topic("a", 1, "");
    std::fs::write(ws.path().join("switchyard.toml"), "listen = \"nowhere\"\n").unwrap();
    let out = switchyard(&["serve"], ws.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("switchyard.toml: listen:"), "{stderr}");
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let ws = Workspace::new();
    ws.topic("a", 1, "");
    let _first = ws.serve(&[]);
    let out = switchyard(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"],
        ws.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another switchyard process holds"));
}

#[tokio::test]
async fn publish_and_tail_round_trip() {
    let ws = Workspace::new();
    ws.topic("cli", 2, "");
    let server = ws.serve(&[]);
    let url = server.url.clone();
    let dir = ws.path().to_owned();

    let out = Command::new(BIN)
        .args([
            "publish",
            "cli",
            "--type",
            "test.event",
            "{\"n\": 1, \"k\": \"a\"}",
            "--url",
            &url,
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"position\""));

    let out = Command::new(BIN)
        .args([
            "publish",
            "cli",
            "--type",
            "test.event",
            "{\"n\": -1}",
            "--url",
            &url,
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/data/n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut tail = Command::new(BIN)
        .args(["tail", "cli", "--from", "earliest", "--url", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(2)
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
    });
    let client = client();
    let (status, _) = publish(&client, &server.events_url("cli"), &event("second", 2, "b")).await;
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !lines.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "tail printed too little"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let lines = lines.join().unwrap();
    let ns: Vec<u64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, [1, 2]);

    let out = Command::new(BIN)
        .args(["topics", "--url", &url])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli"));
}
