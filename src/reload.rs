//! `SIGHUP` (or `POST /v1/reload`): reads `topics/` and `handlers/` again
//! and serves what they now say, without a restart. All or nothing, like
//! `nginx -s reload`: every file is checked first (the report `switchyard
//! check` gives), and when any is wrong nothing changes and the running set
//! stays. Otherwise new topics are created and served, changed ones are
//! replaced (types, schemas, key, groups, webhook sources at once; their
//! partitions cannot change), ones whose file is gone stop being served
//! (their events stay), and the handlers drain and start again as the
//! files say.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::broker::{Broker, BrokerError};
use crate::fanout::Hubs;
use crate::handler::{self, Handlers, Services};
use crate::ingest::webhook::Webhooks;
use crate::problem::ConfigProblem;
use crate::topic::{Origin, SCHEDULE_TOPIC, Topics};

/// What a reload changed.
#[derive(Debug, Default, Serialize)]
pub struct Reloaded {
    pub topics_added: Vec<String>,
    pub topics_changed: Vec<String>,
    pub topics_removed: Vec<String>,
    pub handlers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the files have {} problem(s); nothing was changed", .0.len())]
    Invalid(Vec<ConfigProblem>),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

pub struct Reloader {
    pub topics_dir: PathBuf,
    pub handlers_dir: PathBuf,
    pub topics: Topics,
    pub hubs: Hubs,
    pub handlers: Handlers,
    pub webhooks: Arc<Webhooks>,
    pub services: Services,
    pub tracker: TaskTracker,
    /// Whether the scheduled-events task runs (a reload may be the first
    /// to declare a topic with `schedule = true`).
    pub scheduling: AtomicBool,
    /// One reload at a time.
    pub running: tokio::sync::Mutex<()>,
}

impl Reloader {
    fn broker(&self) -> &Arc<Broker> {
        &self.services.broker
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.services.shutdown
    }

    /// Reloads, and logs what changed or why nothing did.
    pub async fn reload_and_log(&self) -> Result<Reloaded, ReloadError> {
        info!("reloading topics/ and handlers/");
        let result = self.reload().await;
        match &result {
            Ok(reloaded) => info!(
                added = ?reloaded.topics_added,
                changed = ?reloaded.topics_changed,
                removed = ?reloaded.topics_removed,
                handlers = ?reloaded.handlers,
                "reloaded"
            ),
            Err(ReloadError::Invalid(problems)) => {
                for problem in problems {
                    error!("{problem}");
                }
                error!(
                    problems = problems.len(),
                    "reload refused: fix the files above (switchyard check lists the same); the running topics and handlers stay"
                );
            }
            Err(ReloadError::Broker(err)) => {
                error!(error = %err.detail(), "reload stopped: the broker failed");
            }
        }
        result
    }

    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _one = self.running.lock().await;
        let loaded = Topics::load(&self.topics_dir).map_err(ReloadError::Invalid)?;
        let mut problems = Vec::new();
        let file = |name: &str| self.topics_dir.join(format!("{name}.toml"));
        // The registry as it would be: what the API defined, then the files.
        let next = Topics::default();
        for topic in self.topics.iter().filter(|t| t.origin == Origin::Api) {
            next.insert(topic);
        }
        for topic in loaded.iter() {
            match self.topics.get(&topic.name) {
                Some(old) if old.origin == Origin::Api => problems.push(ConfigProblem::new(
                    &file(&topic.name),
                    "name",
                    format!("topic {:?} is defined over the API: delete it there first", topic.name),
                )),
                Some(old) if old.partitions != topic.partitions => {
                    problems.push(ConfigProblem::new(
                        &file(&topic.name),
                        "partitions",
                        format!(
                            "cannot change from {} to {} while the topic exists (positions would move)",
                            old.partitions, topic.partitions
                        ),
                    ))
                }
                _ => next.insert(topic),
            }
        }
        let specs = match handler::load(&self.handlers_dir, &next) {
            Ok(specs) => specs,
            Err(found) => {
                problems.extend(found);
                Vec::new()
            }
        };
        if !problems.is_empty() {
            return Err(ReloadError::Invalid(problems));
        }
        // Checked: apply.
        let mut reloaded = Reloaded::default();
        for topic in next.iter() {
            match self.topics.get(&topic.name) {
                None => {
                    self.broker().add_topic(&topic).await?;
                    self.topics.insert(Arc::clone(&topic));
                    self.hubs
                        .add(&topic.name, self.broker(), &self.tracker, self.shutdown())
                        .await?;
                    reloaded.topics_added.push(topic.name.clone());
                }
                Some(old) if old.origin == Origin::File => {
                    self.topics.insert(Arc::clone(&topic));
                    reloaded.topics_changed.push(topic.name.clone());
                }
                Some(_) => {}
            }
        }
        for topic in self.topics.iter() {
            if topic.origin == Origin::File && next.get(&topic.name).is_none() {
                self.topics.remove(&topic.name);
                reloaded.topics_removed.push(topic.name.clone());
            }
        }
        self.webhooks.reload(&self.topics);
        if self.topics.get(SCHEDULE_TOPIC).is_some()
            && !self.scheduling.swap(true, Ordering::AcqRel)
        {
            crate::schedule::start(
                Arc::clone(self.broker()),
                Arc::clone(&self.services.ingest),
                self.services.session,
                &self.tracker,
                self.shutdown().clone(),
            );
        }
        reloaded.handlers = specs.iter().map(|spec| spec.name.clone()).collect();
        self.handlers
            .reload(specs, &self.topics, &self.services)
            .await;
        Ok(reloaded)
    }

    /// Reloads on every `SIGHUP` until shutdown.
    pub fn on_sighup(self: &Arc<Self>) {
        let reloader = Arc::clone(self);
        self.tracker.spawn(async move {
            let mut hangups = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            ) {
                Ok(hangups) => hangups,
                Err(err) => {
                    error!(error = %err, "cannot listen for SIGHUP; reload with POST /v1/reload");
                    return;
                }
            };
            loop {
                tokio::select! {
                    _ = reloader.shutdown().cancelled() => return,
                    got = hangups.recv() => if got.is_none() { return },
                }
                let _ = reloader.reload_and_log().await;
            }
        });
    }
}
