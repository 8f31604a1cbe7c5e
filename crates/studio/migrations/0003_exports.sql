-- Every export written: where it went and what it holds (the folder has the full manifest).
CREATE TABLE exports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    format      TEXT NOT NULL,           -- peft | merged | gguf | ollama
    kind        TEXT NOT NULL,           -- peft_adapter | merged_model | gguf_adapter | gguf_model | ollama_*
    path        TEXT NOT NULL,
    checkpoint  TEXT NOT NULL,           -- best | last
    bytes       INTEGER NOT NULL,
    app_version TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX exports_run ON exports(run_id);
