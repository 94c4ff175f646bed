-- The poll index's WHERE named the attempt state, so a prepay's CREATED -> PREPAID update
-- changed an indexed column: never a HOT update, a new entry in every index of the table
-- (issue 8). A final attempt now drops its schedule instead (next_poll_at NULL), the index
-- holds the scheduled attempts only, and heap pages keep room for the row's next version.
UPDATE attempts SET next_poll_at = NULL WHERE state NOT IN ('CREATED', 'PREPAID', 'UNKNOWN');
DROP INDEX attempts_poll_idx;
CREATE INDEX attempts_poll_idx ON attempts (next_poll_at) WHERE next_poll_at IS NOT NULL;
ALTER TABLE attempts SET (fillfactor = 90);
