-- Seconds of training when each metric was recorded (summed across resumes), for curves
-- compared by time.
ALTER TABLE run_metrics ADD COLUMN time_s REAL;
