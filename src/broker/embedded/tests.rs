//! Model test of the embedded log: random appends, reads, restarts and torn
//! tails, checked against an in-memory model of what was acknowledged.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::{EmbeddedBroker, EmbeddedConfig, FsyncPolicy};
use crate::broker::{Backend, BrokerError, Record};
use crate::cursor::{Cursor, Place};
use crate::topic::Topics;

const PARTITIONS: usize = 3;
const TOPIC: &str = "model";

#[derive(Debug, Clone)]
enum Op {
    /// One append request: (partition, payload) records.
    Append(Vec<(usize, Vec<u8>)>),
    /// Several concurrent append requests (group commit).
    Concurrent(Vec<(usize, Vec<u8>)>),
    /// Read up to `max` from a cursor at these fractions of each partition.
    Read {
        at: [u8; PARTITIONS],
        max: usize,
    },
    Restart,
    /// Close, append garbage to a partition's last segment, reopen.
    TearTail {
        partition: usize,
        garbage: Vec<u8>,
    },
    CommitGroup {
        at: [u8; PARTITIONS],
    },
}

fn record() -> impl Strategy<Value = (usize, Vec<u8>)> {
    (
        0..PARTITIONS,
        proptest::collection::vec(any::<u8>(), 0..300),
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(record(), 1..6).prop_map(Op::Append),
        2 => proptest::collection::vec(record(), 2..10).prop_map(Op::Concurrent),
        4 => (any::<[u8; PARTITIONS]>(), 1..40usize).prop_map(|(at, max)| Op::Read { at, max }),
        1 => Just(Op::Restart),
        1 => (0..PARTITIONS, proptest::collection::vec(any::<u8>(), 1..40))
            .prop_map(|(partition, garbage)| Op::TearTail { partition, garbage }),
        1 => any::<[u8; PARTITIONS]>().prop_map(|at| Op::CommitGroup { at }),
    ]
}

fn write_topic(dir: &Path) -> Topics {
    let topics = dir.join("topics");
    std::fs::create_dir_all(&topics).unwrap();
    std::fs::write(topics.join("any.json"), "{}").unwrap();
    std::fs::write(
        topics.join("model.toml"),
        format!(
            "name = \"{TOPIC}\"\npartitions = {PARTITIONS}\nsegment_bytes = \"1KiB\"\n\
             [types.\"t\"]\nschema = \"any.json\"\n"
        ),
    )
    .unwrap();
    Topics::load(&topics).unwrap()
}

async fn open(dir: &Path, topics: &Topics) -> EmbeddedBroker {
    let config = EmbeddedConfig {
        data_dir: dir.join("data"),
        fsync: FsyncPolicy::Always,
    };
    EmbeddedBroker::open(config, topics).await.unwrap()
}

fn cursor_at(model: &[Vec<Vec<u8>>], at: &[u8; PARTITIONS]) -> Cursor {
    Cursor::new(
        model
            .iter()
            .zip(at)
            .map(|(events, &f)| (events.len() as u64 * u64::from(f)) / 255)
            .collect(),
    )
}

fn last_segment(dir: &Path, partition: usize) -> std::path::PathBuf {
    let dir = dir
        .join("data/topics")
        .join(TOPIC)
        .join(partition.to_string());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.pop().unwrap()
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let topics = write_topic(dir.path());
    let mut broker = open(dir.path(), &topics).await;
    let mut model: Vec<Vec<Vec<u8>>> = vec![Vec::new(); PARTITIONS];
    let mut group: Option<Cursor> = None;
    let to_records = |records: &[(usize, Vec<u8>)]| -> Vec<Record> {
        records
            .iter()
            .map(|(partition, payload)| Record {
                partition: *partition,
                key: None,
                identity: String::new(),
                payload: Bytes::from(payload.clone()),
            })
            .collect()
    };
    for op in ops {
        match op {
            Op::Append(records) => {
                let appended = broker.append(TOPIC, to_records(&records)).await.unwrap();
                for ((partition, payload), at) in records.into_iter().zip(appended) {
                    assert_eq!(at.partition, partition);
                    assert_eq!(
                        at.offset,
                        model[partition].len() as u64,
                        "offsets are dense"
                    );
                    model[partition].push(payload);
                }
            }
            Op::Concurrent(records) => {
                let results =
                    futures::future::join_all(records.iter().map(|record| {
                        broker.append(TOPIC, to_records(std::slice::from_ref(record)))
                    }))
                    .await;
                let mut placed: Vec<_> = results
                    .into_iter()
                    .zip(records)
                    .map(|(result, record)| (result.unwrap()[0], record))
                    .collect();
                placed.sort_by_key(|(at, _)| (at.partition, at.offset));
                for (at, (partition, payload)) in placed {
                    assert_eq!(at.offset, model[partition].len() as u64);
                    model[partition].push(payload);
                }
            }
            Op::Read { at, max } => {
                let from = cursor_at(&model, &at);
                let batch = broker
                    .read(TOPIC, &from, None, max, Duration::ZERO)
                    .await
                    .unwrap();
                let remaining: usize = model
                    .iter()
                    .zip(from.offsets())
                    .map(|(events, &next)| events.len() - next as usize)
                    .sum();
                assert_eq!(batch.events.len(), remaining.min(max));
                let mut expected_next = from.clone();
                for event in &batch.events {
                    assert_eq!(
                        event.offset,
                        expected_next.next(event.partition),
                        "in order, no gaps"
                    );
                    assert_eq!(
                        &event.payload[..],
                        &model[event.partition][event.offset as usize][..]
                    );
                    expected_next.advance(event.partition, event.offset);
                }
                assert_eq!(batch.next, expected_next);
            }
            Op::Restart => {
                broker.close().await;
                drop(broker);
                broker = open(dir.path(), &topics).await;
            }
            Op::TearTail { partition, garbage } => {
                broker.close().await;
                drop(broker);
                let path = last_segment(dir.path(), partition);
                let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
                file.write_all(&garbage).unwrap();
                drop(file);
                broker = open(dir.path(), &topics).await;
            }
            Op::CommitGroup { at } => {
                let cursor = cursor_at(&model, &at);
                let places: Vec<(usize, Place)> = cursor
                    .offsets()
                    .iter()
                    .map(|&next| Place::at(next))
                    .enumerate()
                    .collect();
                broker.commit(TOPIC, "g", &places).await.unwrap();
                group = Some(cursor);
            }
        }
        // After every step: the log's ends match the model, and the
        // committed group cursor is what was committed last.
        let ends: Vec<u64> = broker
            .retained(TOPIC)
            .await
            .unwrap()
            .iter()
            .map(|r| r.end)
            .collect();
        let lengths: Vec<u64> = model.iter().map(|events| events.len() as u64).collect();
        assert_eq!(ends, lengths);
        assert_eq!(
            broker
                .committed(TOPIC, "g")
                .await
                .unwrap()
                .map(|c| c.cursor()),
            group
        );
    }
    // A full read returns everything acknowledged, byte for byte.
    let mut from = Cursor::start(PARTITIONS);
    let mut seen = vec![0usize; PARTITIONS];
    loop {
        let batch = broker
            .read(TOPIC, &from, None, 50, Duration::ZERO)
            .await
            .unwrap();
        if batch.events.is_empty() {
            break;
        }
        for event in &batch.events {
            assert_eq!(
                &event.payload[..],
                &model[event.partition][event.offset as usize][..]
            );
            seen[event.partition] += 1;
        }
        from = batch.next;
    }
    assert_eq!(seen, model.iter().map(Vec::len).collect::<Vec<_>>());
    broker.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops));
    }
}

#[tokio::test]
async fn cursors_outside_the_log_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let topics = write_topic(dir.path());
    let broker = open(dir.path(), &topics).await;
    let ahead = Cursor::new(vec![0, 5, 0]);
    assert!(matches!(
        broker.read(TOPIC, &ahead, None, 1, Duration::ZERO).await,
        Err(BrokerError::CursorAhead {
            partition: 1,
            end: 0
        })
    ));
    let wrong_width = Cursor::new(vec![0]);
    assert!(matches!(
        broker
            .read(TOPIC, &wrong_width, None, 1, Duration::ZERO)
            .await,
        Err(BrokerError::BadCursor(_))
    ));
    broker.close().await;
}

#[tokio::test]
async fn a_waiting_read_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let topics = write_topic(dir.path());
    let broker = std::sync::Arc::new(open(dir.path(), &topics).await);
    let reader = {
        let broker = std::sync::Arc::clone(&broker);
        tokio::spawn(async move {
            broker
                .read(
                    TOPIC,
                    &Cursor::start(PARTITIONS),
                    None,
                    10,
                    Duration::from_secs(30),
                )
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let record = Record {
        partition: 2,
        key: None,
        identity: String::new(),
        payload: Bytes::from_static(b"hello"),
    };
    broker.append(TOPIC, vec![record]).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.next, Cursor::new(vec![0, 0, 1]));
    broker.close().await;
}

/// A partition the topic does not have is the caller's bug: a 500, not a
/// 503 to retry, and nothing is written.
#[tokio::test]
async fn a_partition_out_of_range_is_an_internal_error() {
    let dir = tempfile::tempdir().unwrap();
    let topics = write_topic(dir.path());
    let config = crate::broker::BrokerConfig::Embedded(EmbeddedConfig {
        data_dir: dir.path().join("data"),
        fsync: FsyncPolicy::Always,
    });
    let broker = crate::broker::Broker::open(&config, &topics).await.unwrap();
    let record = Record {
        partition: PARTITIONS,
        key: None,
        identity: String::new(),
        payload: Bytes::from_static(b"hello"),
    };
    let err = broker.append(TOPIC, vec![record]).await.unwrap_err();
    assert!(matches!(err, BrokerError::Internal(_)), "{err:?}");
    assert!(!err.is_unavailable());
    let ends = broker.latest(TOPIC).await.unwrap();
    assert_eq!(ends, Cursor::start(PARTITIONS));
    broker.close().await;
}

#[tokio::test]
async fn groups_are_listed_until_deleted_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let topics = write_topic(dir.path());
    let broker = open(dir.path(), &topics).await;
    assert!(broker.groups(TOPIC).await.unwrap().is_empty());
    for group in ["billing", "mail.eu"] {
        broker
            .commit(TOPIC, group, &[(1, Place::at(0))])
            .await
            .unwrap();
    }
    let mut listed = broker.groups(TOPIC).await.unwrap();
    listed.sort();
    assert_eq!(listed, ["billing", "mail.eu"]);
    broker.close().await;
    drop(broker);

    let broker = open(dir.path(), &topics).await;
    assert!(broker.delete_group(TOPIC, "billing").await.unwrap());
    assert!(
        !broker.delete_group(TOPIC, "billing").await.unwrap(),
        "gone already"
    );
    assert_eq!(broker.groups(TOPIC).await.unwrap(), ["mail.eu"]);
    assert!(broker.committed(TOPIC, "billing").await.unwrap().is_none());
    // Committed again: a new group, its other partitions from 0.
    broker
        .commit(TOPIC, "billing", &[(2, Place::at(0))])
        .await
        .unwrap();
    let cursor = broker.committed(TOPIC, "billing").await.unwrap().unwrap();
    assert_eq!(cursor.cursor(), Cursor::new(vec![0, 0, 0]));
    assert!(matches!(
        broker.groups("nope").await,
        Err(BrokerError::UnknownTopic(_))
    ));
    broker.close().await;
}
