-- The poll index's WHERE named the attempt state, so a prepay's CREATED -> PREPAID update
-- rewrote the attempt's index entry although its schedule had not moved: one more page in
-- every PREPAID commit (issue 8). A final attempt now drops its schedule instead
-- (next_poll_at NULL), and the index holds the scheduled attempts only.
UPDATE attempts SET next_poll_at = NULL WHERE state NOT IN ('CREATED', 'PREPAID', 'UNKNOWN');
DROP INDEX attempts_poll_idx;
CREATE INDEX attempts_poll_idx ON attempts (next_poll_at) WHERE next_poll_at IS NOT NULL;
