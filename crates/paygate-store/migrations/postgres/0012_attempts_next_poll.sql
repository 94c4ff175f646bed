-- The poller's schedule (issue 8): each pending attempt carries when it is next to be asked
-- about, so a round reads exactly the attempts that are due and writes only those it asked
-- about. Before, every pending attempt was visited (a commit apiece) every poll_min_age.
ALTER TABLE attempts ADD COLUMN next_poll_at BIGINT;
-- Existing pending attempts are due at once; the poller moves them onto the schedule.
UPDATE attempts SET next_poll_at = COALESCE(last_polled_at, created_at)
    WHERE state IN ('CREATED', 'PREPAID', 'UNKNOWN');
DROP INDEX attempts_poll_idx;
CREATE INDEX attempts_poll_idx ON attempts (next_poll_at)
    WHERE state IN ('CREATED', 'PREPAID', 'UNKNOWN');
