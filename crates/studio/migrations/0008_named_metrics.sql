-- An objective's metrics beyond the loss (token accuracy today, preference margins later),
-- one row per name: a new metric needs no new column.
CREATE TABLE run_metric_values (
    run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind    TEXT NOT NULL,           -- 'train' | 'eval'
    step    INTEGER NOT NULL,
    name    TEXT NOT NULL,
    value   REAL NOT NULL,
    PRIMARY KEY (run_id, kind, step, name)
);
