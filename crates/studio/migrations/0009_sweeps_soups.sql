-- Sweeps: a named group of runs that differ only in the settings swept.
CREATE TABLE sweeps (
    id         TEXT PRIMARY KEY,          -- sweep-N
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,             -- what was asked: base settings, grid, random draws (JSON)
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
-- What a run is: 'train' (trained here) or 'soup' (ingredients' weight changes averaged).
ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'train';
ALTER TABLE runs ADD COLUMN sweep_id TEXT REFERENCES sweeps(id) ON DELETE SET NULL;
-- A sweep run's swept settings, key -> value (JSON object).
ALTER TABLE runs ADD COLUMN settings TEXT;
-- A soup's recipe and ingredients with their measured eval losses (JSON).
ALTER TABLE runs ADD COLUMN soup TEXT;
CREATE INDEX runs_sweep ON runs(sweep_id);
