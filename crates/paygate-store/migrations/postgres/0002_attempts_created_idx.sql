-- Daily volume per channel (Store::channel_volumes) reads the attempts created since the day began.
CREATE INDEX attempts_created_idx ON attempts (created_at);
