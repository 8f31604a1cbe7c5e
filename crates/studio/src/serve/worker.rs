//! The one thread that runs the model: requests wait in a bounded queue and are answered one
//! at a time, each with its own KV cache, so concurrent clients never share state. A request
//! whose client has gone is skipped, and one that goes mid-answer is stopped at the next token.

use super::{lock_stats as lock, Entry, ServeStats};
use crate::inference::Loaded;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;
use whetstone_engine::{generate_while, FinishReason, Generation, SamplingParams};

pub(super) struct Job {
    pub entry: Arc<Entry>,
    pub prompt_ids: Vec<u32>,
    pub params: SamplingParams,
    pub events: UnboundedSender<Event>,
    pub queued_at: Instant,
}

#[derive(Debug)]
pub(super) enum Event {
    /// The answer's next settled piece of text.
    Text(String),
    Done {
        generation: Generation,
        queue_s: f64,
    },
    Failed(String),
}

pub(super) fn run(jobs: Receiver<Job>, loaded: Arc<Loaded>, stats: Arc<Mutex<ServeStats>>) {
    while let Ok(job) = jobs.recv() {
        {
            let mut s = lock(&stats);
            s.queued = s.queued.saturating_sub(1);
        }
        if job.events.is_closed() {
            lock(&stats).cancelled += 1;
            continue;
        }
        let queue_s = job.queued_at.elapsed().as_secs_f64();
        lock(&stats).active = Some(job.entry.name.clone());
        let started = Instant::now();
        let events = &job.events;
        let result = generate_while(
            &job.entry.model,
            &loaded.source.tokenizer,
            &job.prompt_ids,
            &job.params,
            |text| events.send(Event::Text(text.to_string())).is_ok(),
        );
        let mut s = lock(&stats);
        s.active = None;
        s.busy_s += started.elapsed().as_secs_f64();
        match result {
            Ok(generation) => {
                s.requests += 1;
                s.prompt_tokens += generation.prompt_tokens as u64;
                s.completion_tokens += generation.token_ids.len() as u64;
                s.decode_s += generation.decode_s;
                s.last_tokens_per_s = generation.tokens_per_s;
                s.last_model = Some(job.entry.name.clone());
                if generation.finish_reason == FinishReason::Cancelled {
                    s.cancelled += 1;
                }
                drop(s);
                let _ = job.events.send(Event::Done {
                    generation,
                    queue_s,
                });
            }
            Err(e) => {
                s.failed += 1;
                drop(s);
                let _ = job.events.send(Event::Failed(e.to_string()));
            }
        }
    }
}
