//! Crashes: SIGKILL under concurrent publishing, and torn writes by hand.
//! Every event whose publish got a 200 must survive; nothing corrupt may be
//! served.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

const CYCLES: usize = 10;
const PUBLISHERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_event() {
    let ws = Workspace::new();
    ws.topic("crash", 4, "segment_bytes = \"64KiB\"");
    let acknowledged: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let mut server = ws.serve(&[]);
    for cycle in 0..CYCLES {
        let url = server.events_url("crash");
        let mut publishers = Vec::new();
        for publisher in 0..PUBLISHERS {
            let url = url.clone();
            let acknowledged = Arc::clone(&acknowledged);
            publishers.push(tokio::spawn(async move {
                let client = client();
                for i in 0.. {
                    let n = (cycle as u64) * 1_000_000 + i;
                    let mut e = event(
                        &format!("c{cycle}-p{publisher}-{i}"),
                        n,
                        &format!("pub-{publisher}"),
                    );
                    e["data"]["pad"] = json!("z".repeat(200 + (i as usize % 7) * 100));
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/cloudevents+json")
                        .body(e.to_string())
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 200 => {
                            acknowledged.lock().unwrap().push((publisher, n));
                        }
                        Ok(response) => panic!("unexpected status {}", response.status()),
                        Err(_) => return, // the server died
                    }
                }
            }));
        }
        // Let them run a varying while, then pull the plug.
        tokio::time::sleep(Duration::from_millis(300 + 97 * cycle as u64)).await;
        server.kill();
        for publisher in publishers {
            publisher.await.unwrap();
        }
        server = ws.serve(&[]);
    }

    let stored = read_all(&client(), &server.events_url("crash")).await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > CYCLES * PUBLISHERS,
        "too few publishes to mean anything"
    );
    let stored_ids: HashSet<(usize, u64)> = stored
        .iter()
        .map(|e| {
            let key = e["data"]["k"].as_str().unwrap();
            let publisher = key.trim_start_matches("pub-").parse().unwrap();
            (publisher, e["data"]["n"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(stored_ids.len(), stored.len(), "no event stored twice");
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|a| !stored_ids.contains(a))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // One publisher's events share a partition and keep their order.
    let mut last: HashMap<usize, u64> = HashMap::new();
    for (publisher, n) in stored.iter().map(|e| {
        (
            e["data"]["k"]
                .as_str()
                .unwrap()
                .trim_start_matches("pub-")
                .parse::<usize>()
                .unwrap(),
            e["data"]["n"].as_u64().unwrap(),
        )
    }) {
        if let Some(previous) = last.insert(publisher, n) {
            assert!(previous < n, "publisher {publisher}: {previous} before {n}");
        }
    }
    eprintln!(
        "{CYCLES} SIGKILL cycles: {} acknowledged, {} stored, none lost",
        acknowledged.len(),
        stored.len()
    );
}

fn segment_file(ws: &Workspace, topic: &str) -> std::path::PathBuf {
    let dir = ws.data_dir().join("topics").join(topic).join("0");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.pop().expect("a segment file")
}

async fn ids_in(server: &Server, topic: &str) -> Vec<String> {
    read_all(&client(), &server.events_url(topic))
        .await
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_torn_last_record_is_truncated_at_start() {
    let ws = Workspace::new();
    ws.topic("torn", 1, "");
    let mut server = ws.serve(&[]);
    let client = client();
    for n in 0..5 {
        let (status, _) = publish(
            &client,
            &server.events_url("torn"),
            &event(&format!("t-{n}"), n, "k"),
        )
        .await;
        assert_eq!(status, 200);
    }
    assert!(server.terminate().success());

    // A record header that promises 300 bytes, followed by only 10.
    let path = segment_file(&ws, "torn");
    let clean_len = std::fs::metadata(&path).unwrap().len();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let mut torn = Vec::new();
    torn.extend_from_slice(&300u32.to_le_bytes());
    torn.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    torn.extend_from_slice(&5u64.to_le_bytes());
    torn.extend_from_slice(&[7u8; 10]);
    file.write_all(&torn).unwrap();
    drop(file);

    let server = ws.serve(&[]);
    assert_eq!(
        ids_in(&server, "torn").await,
        ["t-0", "t-1", "t-2", "t-3", "t-4"]
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        clean_len,
        "the torn tail was cut off"
    );
    assert!(
        server.log().contains("truncating the log"),
        "recovery says what it did"
    );
    // Appends continue at the next offset.
    let (status, body) = publish(&client, &server.events_url("torn"), &event("t-5", 5, "k")).await;
    assert_eq!(status, 200);
    assert_eq!(body["events"][0]["position"], "6");
    assert_eq!(ids_in(&server, "torn").await.len(), 6);
}

#[tokio::test]
async fn a_corrupt_last_record_is_never_served() {
    let ws = Workspace::new();
    ws.topic("flip", 1, "");
    let mut server = ws.serve(&[]);
    let client = client();
    for n in 0..3 {
        let (status, _) = publish(
            &client,
            &server.events_url("flip"),
            &event(&format!("f-{n}"), n, "k"),
        )
        .await;
        assert_eq!(status, 200);
    }
    assert!(server.terminate().success());

    // Flip one byte inside the last record's payload.
    let path = segment_file(&ws, "flip");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    let server = ws.serve(&[]);
    let events = read_all(&client, &server.events_url("flip")).await;
    let ids: Vec<_> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["f-0", "f-1"]);
    assert!(events.iter().all(|e: &Value| e["data"]["n"].is_u64()));
}

/// The rule README states for batches: a 2xx batch is whole after a crash;
/// of a batch killed mid-write (no answer), what survives is, for each
/// partition, a prefix of the batch's events there (events of one key share
/// a partition, so: a prefix of each key's events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_leaves_whole_batches_or_per_partition_prefixes() {
    const BATCH: u64 = 12;
    const KEYS: u64 = 3;
    let ws = Workspace::new();
    ws.topic("batches", 4, "segment_bytes = \"64KiB\"");
    let acknowledged: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut server = ws.serve(&[]);
    for cycle in 0..5u64 {
        let url = server.events_url("batches");
        let mut publishers = Vec::new();
        for publisher in 0..4u64 {
            let url = url.clone();
            let acknowledged = Arc::clone(&acknowledged);
            publishers.push(tokio::spawn(async move {
                let client = client();
                for i in 0.. {
                    let batch_id = format!("c{cycle}-p{publisher}-b{i}");
                    let events: Vec<Value> = (0..BATCH)
                        .map(|j| {
                            let mut e = event(
                                &format!("{batch_id}-{j}"),
                                j,
                                &format!("{batch_id}-k{}", j % KEYS),
                            );
                            e["data"]["pad"] = json!("b".repeat(300));
                            e
                        })
                        .collect();
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/cloudevents-batch+json")
                        .body(Value::Array(events).to_string())
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 200 => {
                            acknowledged.lock().unwrap().insert(batch_id);
                        }
                        Ok(response) => panic!("unexpected status {}", response.status()),
                        Err(_) => return,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(250 + 113 * cycle)).await;
        server.kill();
        for publisher in publishers {
            publisher.await.unwrap();
        }
        server = ws.serve(&[]);
    }
    let stored = read_all(&client(), &server.events_url("batches")).await;
    // batch id → key → the event numbers stored, in stored order.
    let mut by_batch: HashMap<String, HashMap<String, Vec<u64>>> = HashMap::new();
    for e in &stored {
        let id = e["id"].as_str().unwrap();
        let batch_id = id.rsplit_once('-').unwrap().0.to_owned();
        by_batch
            .entry(batch_id)
            .or_default()
            .entry(e["data"]["k"].as_str().unwrap().to_owned())
            .or_default()
            .push(e["data"]["n"].as_u64().unwrap());
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 20, "too few batches to mean anything");
    for batch_id in &acknowledged {
        let keys = by_batch
            .get(batch_id)
            .unwrap_or_else(|| panic!("{batch_id} lost"));
        let count: usize = keys.values().map(Vec::len).sum();
        assert_eq!(
            count as u64, BATCH,
            "acknowledged batch {batch_id} is not whole"
        );
    }
    let unacknowledged_stored = by_batch
        .keys()
        .filter(|id| !acknowledged.contains(*id))
        .count();
    eprintln!(
        "{} batches acknowledged, {unacknowledged_stored} stored without an answer",
        acknowledged.len()
    );
    for (batch_id, keys) in &by_batch {
        for (key, numbers) in keys {
            let k: u64 = key.rsplit_once("-k").unwrap().1.parse().unwrap();
            let expected: Vec<u64> = (0..BATCH)
                .filter(|j| j % KEYS == k)
                .take(numbers.len())
                .collect();
            assert_eq!(
                numbers, &expected,
                "batch {batch_id}, key {key}: not a prefix of the batch's events"
            );
        }
    }
}
