-- Another client (the window, a second CLI) asks the process training a run to pause or stop
-- it by writing here; that process polls the column, checkpoints, and clears it.
ALTER TABLE runs ADD COLUMN control TEXT;          -- NULL | 'pause' | 'stop'
ALTER TABLE runs ADD COLUMN notes TEXT;

CREATE TABLE run_tags (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    tag    TEXT NOT NULL,
    PRIMARY KEY (run_id, tag)
);
