-- Curves by tokens as well as by step: tokens trained on so far at each train step.
ALTER TABLE run_metrics ADD COLUMN tokens INTEGER;
-- The Whetstone version that made each run.
ALTER TABLE runs ADD COLUMN app_version TEXT;
