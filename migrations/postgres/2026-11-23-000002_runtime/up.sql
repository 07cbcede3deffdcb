-- Durable jobs: queued work with a lease, retries with backoff, dead jobs kept.
CREATE TABLE jobs (
  id BIGSERIAL PRIMARY KEY,
  kind TEXT NOT NULL,
  payload TEXT NOT NULL,
  dedupe_key TEXT,
  status TEXT NOT NULL,
  run_at TIMESTAMP NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL,
  lease_owner TEXT,
  lease_expires_at TIMESTAMP,
  last_error TEXT,
  created_at TIMESTAMP NOT NULL,
  updated_at TIMESTAMP NOT NULL
);
-- One waiting job per key: later events fold into it.
CREATE UNIQUE INDEX jobs_dedupe ON jobs (dedupe_key) WHERE status = 'queued';
CREATE INDEX jobs_due ON jobs (status, run_at);

-- Webhook events as received: verified, de-duplicated by the provider's id.
CREATE TABLE webhook_events (
  id BIGSERIAL PRIMARY KEY,
  connection_id BIGINT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
  provider_event_id TEXT NOT NULL,
  event TEXT NOT NULL,
  entity TEXT,
  record_id TEXT,
  payload TEXT NOT NULL,
  status TEXT NOT NULL,
  reason TEXT,
  job_id BIGINT,
  received_at TIMESTAMP NOT NULL,
  UNIQUE (connection_id, provider_event_id)
);
