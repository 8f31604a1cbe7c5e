//! The run queue: one training at a time per device, the rest waiting in order and told
//! their place; every run's events fanned out to any number of subscribers.
//!
//! Each device (`cpu`, `cuda:0`, ...) has a lane. Submitting a run appends it to its device's
//! lane; a lane with no worker starts one, which executes its runs one after another through
//! [`runs::execute`] (so events are persisted exactly as for a run started alone) and ends
//! when the lane is empty. Subscribers get [`QueueUpdate`]s from a tokio broadcast channel;
//! training events are gathered and sent at most every 50 ms per run, so a trainer producing
//! thousands of steps a second cannot flood a window. A subscriber that falls behind misses
//! updates (`RecvError::Lagged`) rather than slowing training; the database has everything.

use crate::history::{self, Control};
use crate::run_state::RunState;
use crate::runs::{self, ExecOptions, RunError};
use crate::store::Store;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use whetstone_engine::TrainEvent;

/// The longest a training event waits before subscribers hear of it (≤ 20 updates/s/run).
pub const BATCH_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[serde(tag = "update", rename_all = "snake_case")]
#[ts(export)]
pub enum QueueUpdate {
    /// A run joined its device's lane; `position` 0 is the one training now or next.
    Queued {
        run_id: String,
        device: String,
        position: usize,
    },
    /// Everything the trainer said since the last update, oldest first.
    Events {
        run_id: String,
        events: Vec<TrainEvent>,
    },
    /// The run left the queue: finished, stopped, paused or failed (`error`).
    Ended {
        run_id: String,
        status: RunState,
        error: Option<String>,
    },
}

struct Job {
    run_id: String,
    resume: bool,
}

#[derive(Default)]
struct Lane {
    waiting: VecDeque<Job>,
    /// The run training now and its cancel flag.
    current: Option<(String, Arc<AtomicBool>)>,
    /// A worker task serves this lane (set and cleared under the lock, so there is never
    /// more than one, and never none while runs wait).
    worker: bool,
}

/// Cheap to clone; every clone is the same queue.
#[derive(Clone)]
pub struct RunQueue {
    store: Store,
    tx: broadcast::Sender<QueueUpdate>,
    lanes: Arc<Mutex<HashMap<String, Lane>>>,
}

impl RunQueue {
    pub fn new(store: Store) -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self {
            store,
            tx,
            lanes: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<QueueUpdate> {
        self.tx.subscribe()
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lane>> {
        // a panicking worker cannot leave the map half-changed: every change is one statement
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a registered run (new, or `resume` a stopped one) to its device's lane; returns its
    /// place (0 = it starts now).
    pub async fn submit(&self, run_id: &str, resume: bool) -> Result<usize, RunError> {
        let run = runs::get(&self.store, run_id)
            .await?
            .ok_or_else(|| RunError::User(format!("no run `{run_id}`")))?;
        let device = run.config()?.device;
        let (position, start_worker) = {
            let mut lanes = self.lanes();
            let lane = lanes.entry(device.clone()).or_default();
            let queued = lane.waiting.iter().any(|j| j.run_id == run_id);
            if queued || lane.current.as_ref().is_some_and(|c| c.0 == run_id) {
                return Err(RunError::User(format!("run {run_id} is already queued")));
            }
            lane.waiting.push_back(Job {
                run_id: run_id.to_string(),
                resume,
            });
            let position = usize::from(lane.current.is_some()) + lane.waiting.len() - 1;
            let start = !lane.worker;
            lane.worker = true;
            (position, start)
        };
        let _ = self.tx.send(QueueUpdate::Queued {
            run_id: run_id.to_string(),
            device: device.clone(),
            position,
        });
        if start_worker {
            let q = self.clone();
            tokio::spawn(async move { q.work(device).await });
        }
        Ok(position)
    }

    /// Runs in each lane: the one training first, then the waiting ones in order.
    pub fn positions(&self) -> Vec<(String, Vec<String>)> {
        let lanes = self.lanes();
        let mut out: Vec<(String, Vec<String>)> = lanes
            .iter()
            .map(|(d, l)| {
                let ids = l
                    .current
                    .iter()
                    .map(|c| c.0.clone())
                    .chain(l.waiting.iter().map(|j| j.run_id.clone()))
                    .collect();
                (d.clone(), ids)
            })
            .collect();
        out.sort();
        out
    }

    /// Stop or pause a run: the one training checkpoints and ends after its step; a waiting
    /// one leaves the lane (and is marked `cancelled` or `paused`).
    pub async fn control(&self, run_id: &str, what: Control) -> Result<(), RunError> {
        let was_waiting = {
            let mut lanes = self.lanes();
            let mut found = false;
            for lane in lanes.values_mut() {
                let before = lane.waiting.len();
                lane.waiting.retain(|j| j.run_id != run_id);
                found |= lane.waiting.len() != before;
                if let Some((id, cancel)) = &lane.current {
                    if id == run_id {
                        // it may not have marked itself running yet: stop it directly too
                        cancel.store(true, Ordering::SeqCst);
                    }
                }
            }
            found
        };
        history::request(&self.store, run_id, what).await?;
        if was_waiting {
            let status = history::show(&self.store, run_id).await?.status;
            let _ = self.tx.send(QueueUpdate::Ended {
                run_id: run_id.to_string(),
                status,
                error: None,
            });
        }
        Ok(())
    }

    /// Stop the training runs and empty every lane (Ctrl-C, the window closing).
    pub async fn stop_all(&self) {
        let ids: Vec<String> = self
            .positions()
            .into_iter()
            .flat_map(|(_, ids)| ids)
            .collect();
        // `control` also sets a training run's cancel flag directly
        for id in ids {
            let _ = self.control(&id, Control::Stop).await;
        }
    }

    /// A lane's worker: run its jobs until none is left.
    async fn work(self, device: String) {
        use futures::FutureExt;
        loop {
            let (job, cancel) = {
                let mut lanes = self.lanes();
                let lane = lanes.entry(device.clone()).or_default();
                let Some(job) = lane.waiting.pop_front() else {
                    lane.current = None;
                    lane.worker = false;
                    return;
                };
                let cancel = Arc::new(AtomicBool::new(false));
                lane.current = Some((job.run_id.clone(), cancel.clone()));
                (job, cancel)
            };
            // a bug in one run must not leave the lane without a worker
            let ended = std::panic::AssertUnwindSafe(self.run_one(&job, cancel))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| QueueUpdate::Ended {
                    run_id: job.run_id.clone(),
                    status: RunState::Failed,
                    error: Some("the run stopped on an internal error".into()),
                });
            // off the lane before anyone hears it ended, so `positions` agrees with the news
            if let Some(lane) = self.lanes().get_mut(&device) {
                lane.current = None;
            }
            let _ = self.tx.send(ended);
        }
    }

    async fn run_one(&self, job: &Job, cancel: Arc<AtomicBool>) -> QueueUpdate {
        let ended = |status: RunState, error: Option<String>| QueueUpdate::Ended {
            run_id: job.run_id.clone(),
            status,
            error,
        };
        let run = match runs::get(&self.store, &job.run_id).await {
            Ok(Some(r)) => r,
            Ok(None) => return ended(RunState::Failed, Some("the run was deleted".into())),
            Err(e) => return ended(RunState::Failed, Some(e.to_string())),
        };
        // events go through a forwarder that sends them in batches
        let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel::<TrainEvent>();
        let tx = self.tx.clone();
        let id = job.run_id.clone();
        let forwarder = tokio::spawn(async move {
            let mut batch = vec![];
            let mut tick = tokio::time::interval(BATCH_INTERVAL);
            loop {
                tokio::select! {
                    e = erx.recv() => match e {
                        Some(e) => batch.push(e),
                        None => break,
                    },
                    _ = tick.tick() => {
                        if !batch.is_empty() {
                            let _ = tx.send(QueueUpdate::Events { run_id: id.clone(), events: std::mem::take(&mut batch) });
                        }
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(QueueUpdate::Events {
                    run_id: id,
                    events: batch,
                });
            }
        });
        let opts = ExecOptions {
            resume: job.resume,
            cancel,
            dump_first_grads: None,
        };
        let result = runs::execute(&self.store, &run, opts, |e| {
            let _ = etx.send(e.clone());
        })
        .await;
        drop(etx);
        let _ = forwarder.await;
        let status = history::show(&self.store, &job.run_id)
            .await
            .map(|v| v.status)
            .unwrap_or(RunState::Failed);
        match result {
            Ok(_) => ended(status, None),
            Err(e) => {
                // refused before it started (its dataset gone, nothing to resume from): it is
                // in no lane any more, so it must not look queued
                if status == RunState::Queued {
                    let _ = sqlx::query(
                        "UPDATE runs SET status = ?, error = ? WHERE id = ? AND status = ?",
                    )
                    .bind(RunState::Failed)
                    .bind(e.to_string())
                    .bind(&job.run_id)
                    .bind(RunState::Queued)
                    .execute(self.store.pool())
                    .await;
                }
                let status = if status == RunState::Queued {
                    RunState::Failed
                } else {
                    status
                };
                ended(status, Some(e.to_string()))
            }
        }
    }
}
