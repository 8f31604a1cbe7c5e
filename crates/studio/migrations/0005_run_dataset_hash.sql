-- The exact data a run trained on: the sha256 of its dataset file when the run was made.
ALTER TABLE runs ADD COLUMN dataset_sha256 TEXT;
UPDATE runs SET dataset_sha256 = (SELECT sha256 FROM datasets WHERE datasets.id = runs.dataset_id);
