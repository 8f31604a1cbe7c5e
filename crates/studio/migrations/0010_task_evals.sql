-- Task evaluation (`whetstone evaluate`): base vs tuned answers to the held-out prompts,
-- scored against the reference answers. A new evaluation of a run replaces the old one.
CREATE TABLE run_task_evals (
    run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    metric     TEXT NOT NULL,             -- exact_match | normalized_match | contains | regex | json_valid | json_fields | rouge_l | chrf
    base       REAL NOT NULL,             -- the base model's mean score
    tuned      REAL NOT NULL,             -- the run's adapter's mean score
    examples   INTEGER NOT NULL,
    checkpoint TEXT NOT NULL,             -- best | last
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (run_id, metric)
);
CREATE TABLE run_task_examples (
    run_id       TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL,
    prompt       TEXT NOT NULL,
    reference    TEXT NOT NULL,
    base_answer  TEXT NOT NULL,
    tuned_answer TEXT NOT NULL,
    base_scores  TEXT NOT NULL,           -- JSON list, in the order of the run's metrics
    tuned_scores TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
