//! A container's long operations (snapshot, restore) as jobs: the request
//! waits [`job_wait`] for its job and answers with the result when it ended by
//! then, else `202` while the job goes on in the background; either way the
//! job's progress is published on the container record (`progress`) a few
//! times a second, from counters its workers bump (see [`crate::progress`]),
//! and cleared when it ends, a failure left in `status_message`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::EngineError;
use crate::catalog::{Catalog, CatalogError};
use crate::progress::{JobProgress, RateMeter, Reporter, Sample};

/// How long a request waits for its job before answering `202`: 1 s, or
/// `HOODY_JOB_WAIT_MS` (docs/CONFIGURATION.md; the tests of progress shorten
/// it, so that a fast machine finishing 1 GiB within a second does not turn
/// their jobs into plain answers).
pub fn job_wait() -> Duration {
    static WAIT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *WAIT.get_or_init(|| {
        std::env::var("HOODY_JOB_WAIT_MS").ok().and_then(|v| v.trim().parse().ok()).map_or(Duration::from_millis(1000), Duration::from_millis)
    })
}
/// When a job's progress is first published (a job done sooner writes none)...
pub const FIRST_TICK: Duration = Duration::from_millis(200);
/// ...and how often after that.
pub const TICK: Duration = Duration::from_millis(400);

/// What a job is, for its `progress`.
#[derive(Debug, Clone)]
pub struct JobInfo {
    pub job: &'static str,
    pub snapshot: Option<String>,
    pub started_at: String,
}

impl JobInfo {
    pub fn new(job: &'static str, snapshot: Option<String>) -> Self {
        JobInfo { job, snapshot, started_at: crate::ids::now() }
    }
}

pub fn progress_of(sample: &Sample, rate: u64, info: &JobInfo) -> JobProgress {
    JobProgress {
        phase: sample.phase.into(),
        bytes_done: sample.bytes_done,
        bytes_total: sample.bytes_total,
        files_done: sample.files_done,
        files_total: sample.files_total,
        rate,
        totals_exact: sample.exact,
        job: info.job.into(),
        snapshot: info.snapshot.clone(),
        started_at: Some(info.started_at.clone()),
    }
}

enum Command {
    /// Publish now, and say when it is written.
    Publish(oneshot::Sender<()>),
    /// Stop; answers whether anything was published.
    Stop(oneshot::Sender<bool>),
}

/// Publishes a job's progress on its container record: first after
/// [`FIRST_TICK`], then every [`TICK`] when it changed. Cheap: one catalog
/// write per tick, whatever the job does meanwhile.
#[derive(Clone)]
pub struct Ticker {
    commands: mpsc::UnboundedSender<Command>,
}

impl Ticker {
    pub fn spawn(catalog: Catalog, container: String, reporter: Arc<Reporter>, info: JobInfo) -> Ticker {
        let (commands, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut meter = RateMeter::default();
            let mut published = false;
            let mut last: Option<JobProgress> = None;
            let mut next = tokio::time::Instant::now() + FIRST_TICK;
            loop {
                let ack = tokio::select! {
                    _ = tokio::time::sleep_until(next) => {
                        next = tokio::time::Instant::now() + TICK;
                        None
                    }
                    command = rx.recv() => match command {
                        Some(Command::Publish(ack)) => Some(ack),
                        Some(Command::Stop(ack)) => {
                            let _ = ack.send(published);
                            return;
                        }
                        None => return,
                    },
                };
                let sample = reporter.sample();
                let progress = progress_of(&sample, meter.rate(sample.bytes_done), &info);
                if last.as_ref() != Some(&progress) {
                    match publish(&catalog, &container, &progress, !published).await {
                        Ok(()) => {
                            published = true;
                            last = Some(progress);
                        }
                        Err(e) => tracing::warn!(container = %container, error = %e, "could not publish a job's progress"),
                    }
                }
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            }
        });
        Ticker { commands }
    }

    /// Publishes the progress now (before a `202` shows the container).
    pub async fn publish_now(&self) {
        let (ack, done) = oneshot::channel();
        if self.commands.send(Command::Publish(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Stops publishing; no write of it is in flight once this returns.
    pub async fn stop(&self) {
        let (ack, done) = oneshot::channel();
        if self.commands.send(Command::Stop(ack)).is_ok() {
            let _ = done.await;
        }
    }
}

/// Sets a container's progress; the first publication of a job also clears
/// the message the previous job left (compare-and-swap loop).
async fn publish(catalog: &Catalog, id: &str, progress: &JobProgress, first: bool) -> Result<(), CatalogError> {
    loop {
        let Some((old, rev)) = catalog.container_at(id).await? else { return Ok(()) };
        let mut new = old.clone();
        new.progress = Some(progress.clone());
        if first {
            new.status_message = None;
            new.updated_at = crate::ids::now();
        }
        if catalog.swap_container(rev, &old, &new).await? {
            return Ok(());
        }
    }
}

/// Ends a job on its container: no progress, `message` as the status message
/// (a failure, or `None`). Writes only when that changes the record.
pub async fn finish(catalog: &Catalog, id: &str, message: Option<String>) -> Result<(), CatalogError> {
    loop {
        let Some((old, rev)) = catalog.container_at(id).await? else { return Ok(()) };
        if old.progress.is_none() && old.status_message == message {
            return Ok(());
        }
        let mut new = old.clone();
        new.progress = None;
        new.status_message = message.clone();
        new.updated_at = crate::ids::now();
        if catalog.swap_container(rev, &old, &new).await? {
            return Ok(());
        }
    }
}

const WAITING: u8 = 0;
const DETACHED: u8 = 1;
const ENDING: u8 = 2;

/// Who reports a job's end: the request that waits for it, or, once that
/// request answered `202`, the job itself (in `status_message`). Decided once,
/// under a lock, so an outcome is never lost between the two.
#[derive(Clone, Default)]
pub struct Handoff(Arc<Mutex<u8>>);

impl Handoff {
    /// The job ends: true when the request still waits and will answer its outcome.
    pub fn ending(&self) -> bool {
        let mut state = self.0.lock().expect("job handoff");
        let waiting = *state == WAITING;
        if waiting {
            *state = ENDING;
        }
        waiting
    }

    /// The request waited long enough: true when it may answer `202` (the job
    /// has not begun to end; it then reports its own outcome).
    pub fn detach(&self) -> bool {
        let mut state = self.0.lock().expect("job handoff");
        let waiting = *state == WAITING;
        if waiting {
            *state = DETACHED;
        }
        waiting
    }
}

/// Waits for a job's outcome: `Some` when it ended within [`job_wait`] (or
/// was ending by then), `None` when the request should answer `202`.
pub async fn wait<T>(handoff: &Handoff, mut outcome: oneshot::Receiver<Result<T, EngineError>>) -> Option<Result<T, EngineError>> {
    let vanished = || Err(EngineError::internal("a job vanished"));
    match tokio::time::timeout(job_wait(), &mut outcome).await {
        Ok(result) => Some(result.unwrap_or_else(|_| vanished())),
        Err(_) if handoff.detach() => None,
        Err(_) => Some(outcome.await.unwrap_or_else(|_| vanished())),
    }
}

/// A failure as the container's `status_message` shows it: `<job> failed: …`,
/// never an internal detail.
pub fn failure_message(job: &str, e: &EngineError) -> String {
    let prefix = format!("{job} failed");
    match e {
        e if e.is_internal() => format!("{prefix}: an internal error; see the daemon's log"),
        EngineError::Failed(m) if m.starts_with(&prefix) => m.clone(),
        other => format!("{prefix}: {other}"),
    }
}
