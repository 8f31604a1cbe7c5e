-- Registered models: hub downloads, local HF folders and GGUF files.
CREATE TABLE models (
    id              TEXT PRIMARY KEY,          -- short stable id shown to the user
    name            TEXT NOT NULL,
    source          TEXT NOT NULL,             -- 'hub' | 'folder' | 'gguf'
    reference       TEXT NOT NULL,             -- hub id or the path the user gave
    path            TEXT NOT NULL,             -- where the files are on disk
    architecture    TEXT,
    parameter_count INTEGER,
    size_bytes      INTEGER,
    sha256          TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE UNIQUE INDEX models_path ON models(path);
