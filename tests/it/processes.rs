//! Several Switchyard processes on one external broker share every
//! consumer group and handler: each event is leased by one process at a
//! time and acked once, a killed process's share comes back after the
//! session timeout, a stopped one hands its share back at once, a process
//! joining takes a share, and a handler run by three processes calls its
//! target once per event (in key order) and stores one outcome per event.
//! Per backend, as in conformance.rs: `cargo test --all-features --test it
//! processes::redis::`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::conformance::{Backend, Member, ids, receipts};
use crate::handler::{RESULT, handler, outcomes, outcomes_for_all, workspace};
use crate::harness::*;
use crate::sink::{Sink, numbers_by_key};

macro_rules! per_backend {
    ([$($module:ident => $kind:expr),+ $(,)?], $cases:tt) => {
        $(per_backend!($module, $kind, $cases);)+
    };
    ($module:ident, $kind:expr, [$($case:ident),* $(,)?]) => {
        mod $module {
            use switchyard_testkit::Kind;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(backend) = crate::conformance::backend(Some($kind)) {
                        super::$case(backend).await;
                    }
                }
            )*
        }
    };
}

per_backend!(
    [
        redis => Kind::Redis,
        nats => Kind::Nats,
        nats_current => Kind::NatsCurrent,
        // Not tansu: its group coordinator does not keep Kafka's group
        // protocol (it assigned a partition to two members at once, and
        // left a live member out of a rebalance): ARCHITECTURE.md, known
        // limits.
    ],
    [
        queue_drained_by_three_processes_through_kill_join_and_stop,
        a_stopped_process_hands_its_share_back_at_once,
        a_handler_in_three_processes_calls_once_per_event_in_key_order,
        nack_delay_extend_and_max_deliveries_with_three_processes,
        two_processes_given_one_name_still_split_the_work,
        group_reset_waits_for_the_other_processes,
    ]
);

/// The session timeout of these tests' processes.
const SESSION: &str = "3s";

fn start(backend: &Backend, ws: &Workspace, instance: &str, session: &str) -> Server {
    let mut args = backend.serve_args();
    args.extend(["--instance", instance, "--group-session", session].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ws.serve(&args)
}

/// Publishes events `range` to `topic` in batches.
async fn publish_batches(server: &Server, topic: &str, range: std::ops::Range<u64>) {
    let client = client();
    let all: Vec<u64> = range.collect();
    for chunk in all.chunks(250) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|&n| event(&format!("e-{n}"), n, &format!("k{}", n % 17)))
            .collect();
        let response = client
            .post(server.events_url(topic))
            .header("content-type", "application/cloudevents-batch+json")
            .body(Value::Array(batch).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
}

/// The group's processes and the partitions each owns, as `server` sees
/// them.
async fn ownership(server: &Server, topic: &str, group: &str) -> BTreeMap<String, Vec<u64>> {
    let url = server
        .events_url(topic)
        .replace("/events", &format!("/groups/{group}"));
    let status = get_json(&url).await;
    serde_json::from_value(status["processes"]["processes"].clone())
        .unwrap_or_else(|_| panic!("no processes in the group's status: {status}"))
}

/// Waits until the group's partitions are split as `expected` (process →
/// partitions owned), as the `servers` see it together (on tansu each
/// process can list only its own).
async fn wait_for_split(servers: &[&Server], topic: &str, group: &str, expected: &[(&str, usize)]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut owned = BTreeMap::new();
        for server in servers {
            owned.extend(ownership(server, topic, group).await);
        }
        let counts: Vec<(&str, usize)> = owned
            .iter()
            .map(|(process, partitions)| (process.as_str(), partitions.len()))
            .filter(|(_, n)| *n > 0)
            .collect();
        if counts == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group never split as {expected:?}: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the workers of a test acked, shared between them.
#[derive(Default)]
struct Acked {
    /// Event id → how many acks of it succeeded.
    ids: Mutex<HashMap<String, usize>>,
    /// Successful acks per process.
    by_process: Mutex<HashMap<String, usize>>,
    /// Events of an ack sent to the process killed before it answered:
    /// acked or not, nobody can tell (their ack may have been committed).
    unanswered: Mutex<HashSet<String>>,
}

impl Acked {
    /// Events acked, or in an ack that never got its answer.
    fn total(&self) -> usize {
        let ids = self.ids.lock().unwrap();
        let unanswered = self.unanswered.lock().unwrap();
        ids.len()
            + unanswered
                .iter()
                .filter(|id| !ids.contains_key(*id))
                .count()
    }
}

/// A worker: receives from its process and acks until `total` events are
/// acked in all, or its process goes away.
async fn worker(server_url: String, process: String, acked: Arc<Acked>, total: usize) {
    let member = Member::at(&server_url, "workers");
    let deadline = Instant::now() + Duration::from_secs(180);
    while acked.total() < total && Instant::now() < deadline {
        let Some(batch) = member.try_receive("max=20&wait=500ms&lease=20s").await else {
            return; // its process is gone
        };
        if batch.is_empty() {
            continue;
        }
        // A 503 (the broker was slow to take the commit) is retried, as a
        // client would: an ack retried settles the same receipts.
        let (status, body) = loop {
            let Some((status, body)) = member.try_ack(&receipts(&batch)).await else {
                acked.unanswered.lock().unwrap().extend(ids(&batch));
                return;
            };
            if status != 503 {
                break (status, body);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Receipts named as expired (or as another process's) did not
        // settle; every other one did.
        let failed: HashSet<String> = ["expired", "receipts"]
            .iter()
            .flat_map(|field| {
                body["error"][*field]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect();
        assert!(status == 200 || status == 409, "{status}: {body}");
        let mut ids_acked = acked.ids.lock().unwrap();
        let mut settled = 0;
        for ((receipt, _, _), id) in batch.iter().zip(ids(&batch)) {
            if !failed.contains(receipt) {
                *ids_acked.entry(id).or_default() += 1;
                settled += 1;
            }
        }
        drop(ids_acked);
        *acked
            .by_process
            .lock()
            .unwrap()
            .entry(process.clone())
            .or_default() += settled;
    }
}

/// Opens the group `workers` on `server` (a first receive joins it), until
/// the broker answers.
async fn join(server: &Server, start: &str) {
    let member = Member::new(server, "work", "workers");
    let query = format!("max=1&{start}lease=100ms");
    let deadline = Instant::now() + Duration::from_secs(30);
    while member.try_receive_status(&query).await != 200 {
        assert!(Instant::now() < deadline, "cannot join the group");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn spawn_workers(
    server: &Server,
    process: &str,
    count: usize,
    acked: &Arc<Acked>,
    total: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let url = server.events_url("work");
    (0..count)
        .map(|_| {
            tokio::spawn(worker(
                url.clone(),
                process.to_owned(),
                Arc::clone(acked),
                total,
            ))
        })
        .collect()
}

/// Waits until `count` events are acked; on timeout shows the warnings
/// the processes logged (they share `log`'s file).
async fn wait_for_acked(acked: &Acked, count: usize, what: &str, log: &Server) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.total() < count {
        if Instant::now() >= deadline {
            let status = get_json(&Member::new(log, "work", "workers").base).await;
            let missing: Vec<String> = {
                let ids = acked.ids.lock().unwrap();
                let unanswered = acked.unanswered.lock().unwrap();
                (0..5000)
                    .map(|n| format!("e-{n}"))
                    .filter(|id| !ids.contains_key(id) && !unanswered.contains(id))
                    .take(40)
                    .collect()
            };
            panic!(
                "{what}: {} of {count} acked; not acked: {missing:?}; status: {status}; log:\n{}",
                acked.total(),
                log.log()
                    .lines()
                    .filter(|l| l.contains("WARN")
                        || l.contains("ERROR")
                        || l.contains("partitions"))
                    .take(80)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 5,000 events, three processes with three workers each; one process is
/// killed (-9) mid-load, another joins, another stops (SIGTERM): every
/// event is acked exactly once in all, and the joiner took a share.
async fn queue_drained_by_three_processes_through_kill_join_and_stop(backend: Backend) {
    const EVENTS: usize = 5000;
    let what = backend.name();
    let ws = Workspace::new();
    ws.topic("work", 6, "");
    let p1 = start(&backend, &ws, "p1", SESSION);
    let mut p2 = start(&backend, &ws, "p2", SESSION);
    let mut p3 = start(&backend, &ws, "p3", SESSION);
    publish_batches(&p1, "work", 0..EVENTS as u64).await;
    // Each process joins the group on its first receive.
    for server in [&p1, &p2, &p3] {
        join(server, "start=earliest&").await;
    }
    wait_for_split(
        &[&p1, &p2, &p3],
        "work",
        "workers",
        &[("p1", 2), ("p2", 2), ("p3", 2)],
    )
    .await;

    let acked = Arc::new(Acked::default());
    let mut workers = Vec::new();
    for (server, name) in [(&p1, "p1"), (&p2, "p2"), (&p3, "p3")] {
        workers.extend(spawn_workers(server, name, 3, &acked, EVENTS));
    }
    wait_for_acked(&acked, 1500, &what, &p1).await;
    p2.kill(); // its leased events come back after the session timeout
    let p4 = start(&backend, &ws, "p4", SESSION);
    join(&p4, "").await;
    workers.extend(spawn_workers(&p4, "p4", 3, &acked, EVENTS));
    wait_for_acked(&acked, 3500, &what, &p1).await;
    assert!(p3.terminate().success(), "{what}: p3 stops cleanly");
    wait_for_acked(&acked, EVENTS, &what, &p1).await;
    for worker in workers {
        worker.await.unwrap();
    }

    let counts = acked.ids.lock().unwrap().clone();
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{what}: acked more than once: {twice:?}");
    let expected: HashSet<String> = (0..EVENTS).map(|n| format!("e-{n}")).collect();
    let unanswered = acked.unanswered.lock().unwrap().clone();
    let got: HashSet<String> = counts
        .keys()
        .cloned()
        .chain(unanswered.iter().cloned())
        .collect();
    assert_eq!(got, expected, "{what}: every event acked");
    assert!(
        unanswered.len() <= 6 * 20,
        "{what}: only acks in flight at the kill are unanswered"
    );
    let by_process = acked.by_process.lock().unwrap().clone();
    assert!(
        by_process.get("p4").copied().unwrap_or(0) > 0,
        "{what}: the process that joined mid-load took a share: {by_process:?}"
    );
    // And the group's cursor is past every event.
    let status = get_json(&Member::new(&p1, "work", "workers").base).await;
    let latest = get_json(&format!("{}?from=latest&limit=1", p1.events_url("work"))).await;
    assert_eq!(status["committed"], latest["next"], "{what}: {status}");
}

/// With a long session timeout, a process stopped with SIGTERM hands its
/// partitions (and the events it had leased) to the other process at once,
/// not after the session or the lease.
async fn a_stopped_process_hands_its_share_back_at_once(backend: Backend) {
    let what = backend.name();
    let ws = Workspace::new();
    ws.topic("work", 2, "");
    let p1 = start(&backend, &ws, "p1", "60s");
    let mut p2 = start(&backend, &ws, "p2", "60s");
    let (a, b) = (
        Member::new(&p1, "work", "workers"),
        Member::new(&p2, "work", "workers"),
    );
    assert!(
        a.receive("max=1&start=earliest&lease=100ms")
            .await
            .is_empty()
    );
    assert!(b.receive("max=1&lease=100ms").await.is_empty());
    wait_for_split(&[&p1, &p2], "work", "workers", &[("p1", 1), ("p2", 1)]).await;
    // Partition keys spread 20 events over both partitions.
    publish_batches(&p1, "work", 0..20).await;
    let mut held_by_b = Vec::new();
    loop {
        let batch = b.receive("max=20&wait=2s&lease=60s").await;
        if batch.is_empty() {
            break;
        }
        held_by_b.extend(ids(&batch));
    }
    assert!(!held_by_b.is_empty(), "{what}: p2 owns a partition");
    let mut got_by_a: Vec<String> = Vec::new();
    loop {
        let batch = a.receive("max=20&wait=1s").await;
        if batch.is_empty() {
            break;
        }
        assert_eq!(a.ack(&receipts(&batch)).await.0, 200, "{what}");
        got_by_a.extend(ids(&batch));
    }
    assert_eq!(got_by_a.len() + held_by_b.len(), 20, "{what}");
    assert!(p2.terminate().success(), "{what}");
    // Well inside the 60 s session and lease: p2's events come to p1.
    let mut rescued = Vec::new();
    while rescued.len() < held_by_b.len() {
        let batch = a.receive("max=20&wait=15s").await;
        assert!(
            !batch.is_empty(),
            "{what}: p2's {} leased events were not handed back ({} came)",
            held_by_b.len(),
            rescued.len()
        );
        assert_eq!(a.ack(&receipts(&batch)).await.0, 200, "{what}");
        rescued.extend(ids(&batch));
    }
    rescued.sort();
    held_by_b.sort();
    assert_eq!(rescued, held_by_b, "{what}");
}

/// A reset or delete on one process is refused while another process
/// serves the group (it cannot see that process's leases), naming it; once
/// that process has stopped, the reset goes ahead and the group is
/// delivered again from the new cursor.
async fn group_reset_waits_for_the_other_processes(backend: Backend) {
    let what = backend.name();
    let ws = Workspace::new();
    ws.topic("work", 2, "");
    let p1 = start(&backend, &ws, "p1", "60s");
    let mut p2 = start(&backend, &ws, "p2", "60s");
    let (a, b) = (
        Member::new(&p1, "work", "workers"),
        Member::new(&p2, "work", "workers"),
    );
    assert!(a.receive("max=1&start=earliest").await.is_empty());
    assert!(b.receive("max=1").await.is_empty());
    wait_for_split(&[&p1, &p2], "work", "workers", &[("p1", 1), ("p2", 1)]).await;
    publish_batches(&p1, "work", 0..10).await;
    let groups = format!("{}/v1/topics/work/groups", p1.url);
    let reset = || async {
        let response = client()
            .post(format!("{groups}/workers/reset"))
            .json(&serde_json::json!({"to": "earliest"}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let (status, body) = reset().await;
    assert_eq!(status, 409, "{what}: {body}");
    assert_eq!(body["error"]["code"], "group_active", "{what}: {body}");
    assert_eq!(
        body["error"]["processes"],
        serde_json::json!(["p2"]),
        "{what}: {body}"
    );
    let list = get_json(&groups).await;
    assert_eq!(list["groups"][0]["active"], true, "{what}: {list}");
    assert_eq!(
        list["groups"][0]["processes"],
        serde_json::json!(["p2"]),
        "{what}: {list}"
    );
    let response = client()
        .delete(format!("{groups}/workers"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409, "{what}");

    // p2 stops (hands its share back): p1 alone, idle, may reset.
    assert!(p2.terminate().success(), "{what}");
    let (status, body) = reset().await;
    assert_eq!(status, 200, "{what}: {body}");
    let mut got = Vec::new();
    loop {
        let batch = a.receive("max=20&wait=2s").await;
        if batch.is_empty() {
            break;
        }
        assert_eq!(a.ack(&receipts(&batch)).await.0, 200, "{what}");
        got.extend(ids(&batch));
    }
    assert_eq!(got.len(), 10, "{what}: {got:?}");
}

/// The same handler in three processes, ordered by key, calls a target
/// that answers after 20 ms; one process is killed mid-load. Every event
/// has exactly one outcome in all, the target saw each event, and per key
/// the calls came in order (a call in flight at the kill may come again,
/// never an older one after a newer).
async fn a_handler_in_three_processes_calls_once_per_event_in_key_order(backend: Backend) {
    const EVENTS: u64 = 600;
    let what = backend.name();
    let sink = Sink::start().await;
    let ws = workspace();
    handler(
        &ws,
        "shared",
        &format!("{}/slow/20", sink.url),
        "",
        "max_concurrency = 4\nordered = \"by_key\"",
    );
    let p1 = start(&backend, &ws, "p1", SESSION);
    let mut p2 = start(&backend, &ws, "p2", SESSION);
    let p3 = start(&backend, &ws, "p3", SESSION);
    let client = client();
    let mut published = Vec::new();
    for n in 0..EVENTS {
        let id = format!("job-{n}");
        let (status, body) = publish(
            &client,
            &p1.events_url("jobs"),
            &event(&id, n, &format!("key-{}", n % 12)),
        )
        .await;
        assert_eq!(status, 200, "{what}: {body}");
        published.push(id);
        if n == EVENTS / 3 {
            sink.wait_for(60).await;
            p2.kill();
        }
    }
    outcomes_for_all(&p1, EVENTS as usize, Duration::from_secs(120)).await;
    // Let any redelivery that was going to happen happen, then count.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let results = outcomes(&p3, "results", RESULT, 0).await;
    let mut per_event: HashMap<String, usize> = HashMap::new();
    for result in &results {
        *per_event
            .entry(result["causationid"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let twice: Vec<_> = per_event.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{what}: more than one outcome: {twice:?}");
    assert_eq!(results.len(), EVENTS as usize, "{what}");

    let received = sink.received();
    let seen: HashSet<String> = received.iter().map(|r| r.event_id()).collect();
    assert_eq!(seen, published.iter().cloned().collect(), "{what}");
    // Each process runs at most 4 calls at once: only those of the killed
    // one can have been made twice.
    assert!(
        received.len() <= EVENTS as usize + 4,
        "{what}: {} calls for {EVENTS} events",
        received.len()
    );
    let by_key = numbers_by_key(&received);
    for (key, ns) in &by_key {
        assert!(ns.windows(2).all(|w| w[0] <= w[1]), "{what}: {key}: {ns:?}");
    }
}

/// The per-event queue operations with three processes serving the group:
/// each process delivers the events of the partitions it owns; a nack with
/// a delay comes back after it (attempt 2), an extended lease outlives its
/// first term, an event delivered `max_deliveries` times gets exactly one
/// dead letter in all, and a receipt settled on the wrong process names the
/// right one.
async fn nack_delay_extend_and_max_deliveries_with_three_processes(backend: Backend) {
    let what = backend.name();
    let ws = Workspace::new();
    ws.topic(
        "work",
        3,
        "groups = [{ name = \"workers\", max_deliveries = 2, dead_letters = \"work-dead\" }]",
    )
    .topic("work-dead", 1, "");
    let servers = [
        start(&backend, &ws, "p1", SESSION),
        start(&backend, &ws, "p2", SESSION),
        start(&backend, &ws, "p3", SESSION),
    ];
    let members: Vec<Member> = servers
        .iter()
        .map(|server| Member::new(server, "work", "workers"))
        .collect();
    for member in &members {
        assert!(
            member
                .receive("max=1&start=earliest&lease=100ms")
                .await
                .is_empty()
        );
    }
    let refs: Vec<&Server> = servers.iter().collect();
    wait_for_split(&refs, "work", "workers", &[("p1", 1), ("p2", 1), ("p3", 1)]).await;
    // Events over every partition: each process has some.
    publish_batches(&servers[0], "work", 0..30).await;

    let mut acked: HashSet<String> = HashSet::new();
    // A receipt settled on another process: 409 naming the one to use.
    let got = members[0].receive("max=1&wait=5s&lease=30s").await;
    assert_eq!(got.len(), 1, "{what}");
    let (status, body) = members[1].ack(&receipts(&got)).await;
    assert_eq!(status, 409, "{what}: {body}");
    assert_eq!(body["error"]["code"], "receipt_elsewhere", "{what}: {body}");
    assert_eq!(body["error"]["process"], "p1", "{what}: {body}");
    assert_eq!(members[0].ack(&receipts(&got)).await.0, 200, "{what}");
    acked.extend(ids(&got));

    // Extended past its first term, the lease still holds.
    let got = members[1].receive("max=1&wait=5s&lease=1s").await;
    assert_eq!(got.len(), 1, "{what}");
    let (status, body) = members[1]
        .settle(
            "extend",
            serde_json::json!({ "receipts": receipts(&got), "lease": "30s" }),
        )
        .await;
    assert_eq!(status, 200, "{what}: {body}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        members[1].ack(&receipts(&got)).await.0,
        200,
        "{what}: extended"
    );
    acked.extend(ids(&got));

    // Nack with a delay, on each process: not due before it, then again
    // with attempt 2. (The events met meanwhile are acked.)
    for member in &members {
        let got = member.receive("max=1&wait=5s").await;
        assert_eq!(got.len(), 1, "{what}: every process owns events");
        let nacked = ids(&got)[0].clone();
        assert_eq!(member.nack(&receipts(&got), "600ms").await.0, 200, "{what}");
        let deadline = Instant::now() + Duration::from_secs(10);
        let started = Instant::now();
        let again = loop {
            let batch = member.receive("max=1&wait=1s").await;
            if let Some(hit) = batch.iter().find(|(_, _, e)| e["id"] == nacked.as_str()) {
                assert!(
                    started.elapsed() >= Duration::from_millis(500),
                    "{what}: a nacked event came back before its delay"
                );
                member.nack(&receipts(&batch), "0s").await;
                break hit.clone();
            }
            assert_eq!(member.ack(&receipts(&batch)).await.0, 200, "{what}");
            acked.extend(ids(&batch));
            assert!(
                Instant::now() < deadline,
                "{what}: the nacked event never came back"
            );
        };
        assert_eq!(again.1, 2, "{what}: its second attempt");
    }

    // Everything else delivered until it runs out of deliveries: one dead
    // letter per event in all, across the three processes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let letters = loop {
        for member in &members {
            let batch = member.receive("max=30&wait=200ms").await;
            member.nack(&receipts(&batch), "0s").await;
        }
        let letters = read_all(&client(), &servers[0].events_url("work-dead")).await;
        if letters.len() >= 30 - acked.len() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            break read_all(&client(), &servers[0].events_url("work-dead")).await;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {} dead letters",
            letters.len(),
            30 - acked.len()
        );
    };
    let mut dead: Vec<String> = letters
        .iter()
        .map(|l| l["data"]["event"]["id"].as_str().unwrap().to_owned())
        .collect();
    dead.sort();
    let mut expected: Vec<String> = (0..30)
        .map(|n| format!("e-{n}"))
        .filter(|id| !acked.contains(id))
        .collect();
    expected.sort();
    assert_eq!(
        dead,
        expected,
        "{what}: one dead letter per event; membership:\n{}",
        servers[0]
            .log()
            .lines()
            .filter(|l| l.contains("membership") || l.contains("partitions"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `--instance` is a name, not an identity: two processes given the same
/// one (a copied setting) still split the partitions, so each event is
/// leased by one of them.
async fn two_processes_given_one_name_still_split_the_work(backend: Backend) {
    let what = backend.name();
    let ws = Workspace::new();
    ws.topic("work", 2, "");
    let a = start(&backend, &ws, "same", SESSION);
    let b = start(&backend, &ws, "same", SESSION);
    join(&a, "start=earliest&").await;
    join(&b, "").await;
    // Until each owns one partition.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owned: Vec<usize> = futures::future::join_all([&a, &b].map(|server| async {
            let status = get_json(&Member::new(server, "work", "workers").base).await;
            status["processes"]["owned_here"]
                .as_array()
                .map_or(0, Vec::len)
        }))
        .await;
        if owned == [1, 1] {
            break;
        }
        assert!(Instant::now() < deadline, "{what}: never split: {owned:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    publish_batches(&a, "work", 0..20).await;
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    for (member, got) in [
        (Member::new(&a, "work", "workers"), &mut from_a),
        (Member::new(&b, "work", "workers"), &mut from_b),
    ] {
        loop {
            let batch = member.receive("max=20&wait=2s&lease=60s").await;
            if batch.is_empty() {
                break;
            }
            got.extend(ids(&batch));
        }
    }
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "{what}: {from_a:?} {from_b:?}"
    );
    let mut all: Vec<String> = from_a.iter().chain(&from_b).cloned().collect();
    all.sort();
    all.dedup();
    assert_eq!(
        (all.len(), from_a.len() + from_b.len()),
        (20, 20),
        "{what}: each event leased by one process; partitions moved:\n{}",
        a.log()
            .lines()
            .filter(|l| l.contains("membership") || l.contains("partitions"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
