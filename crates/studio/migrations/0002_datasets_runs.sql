-- Registered datasets: a copy of the file lives in the data directory, named by id.
CREATE TABLE datasets (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    original_path TEXT NOT NULL,          -- what the user added
    path          TEXT NOT NULL,          -- the copy training reads
    format        TEXT NOT NULL,          -- alpaca | chat | sharegpt | text | csv
    columns       TEXT,                   -- CSV column mapping (JSON), if any
    records       INTEGER NOT NULL,       -- valid records
    dropped       INTEGER NOT NULL,       -- invalid records left out
    problems      TEXT NOT NULL,          -- JSON list of the dropped records' problems
    size_bytes    INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE UNIQUE INDEX datasets_sha256 ON datasets(sha256, format);

-- One row per training run; the config is the whole run config as JSON.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    status           TEXT NOT NULL,       -- queued | running | completed | cancelled | diverged | failed
    method           TEXT NOT NULL,
    model_id         TEXT,
    model_path       TEXT NOT NULL,
    dataset_id       TEXT NOT NULL REFERENCES datasets(id),
    config           TEXT NOT NULL,
    run_dir          TEXT NOT NULL,
    pid              INTEGER,
    steps_done       INTEGER NOT NULL DEFAULT 0,
    total_steps      INTEGER,
    best_eval_loss   REAL,
    final_train_loss REAL,
    tokens_per_s     REAL,
    peak_mem_bytes   INTEGER,
    summary          TEXT,                -- the Finished event's summary (JSON)
    error            TEXT,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at      TEXT
);

-- The curves: one row per train step and per evaluation.
CREATE TABLE run_metrics (
    run_id       TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,           -- 'train' | 'eval'
    step         INTEGER NOT NULL,
    loss         REAL,                    -- train loss or eval loss
    lr           REAL,
    grad_norm    REAL,
    tokens_per_s REAL,
    mem_bytes    INTEGER,
    perplexity   REAL,
    PRIMARY KEY (run_id, kind, step)
);

-- Everything else a run says: checkpoints, samples, log lines, start and finish.
CREATE TABLE run_events (
    run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    step    INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    payload TEXT NOT NULL,                -- the event as JSON
    PRIMARY KEY (run_id, seq)
);
