CREATE TABLE organizations (
  id BIGSERIAL PRIMARY KEY,
  slug TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  sync_enabled BOOLEAN NOT NULL DEFAULT TRUE,
  date_filtering_limit TIMESTAMP,
  hub_seq BIGINT NOT NULL DEFAULT 0,
  created_at TIMESTAMP NOT NULL
);

CREATE TABLE connections (
  id BIGSERIAL PRIMARY KEY,
  organization_id BIGINT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  connector TEXT NOT NULL,
  settings TEXT NOT NULL,
  entities TEXT NOT NULL,
  lease_owner TEXT,
  lease_expires_at TIMESTAMP,
  UNIQUE (organization_id, name)
);

CREATE TABLE credentials (
  connection_id BIGINT PRIMARY KEY REFERENCES connections(id) ON DELETE CASCADE,
  access_token TEXT,
  refresh_token TEXT,
  expires_at TIMESTAMP,
  version BIGINT NOT NULL DEFAULT 0,
  updated_at TIMESTAMP NOT NULL
);

CREATE TABLE hub_records (
  id BIGSERIAL PRIMARY KEY,
  organization_id BIGINT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  entity TEXT NOT NULL,
  uid TEXT NOT NULL,
  data TEXT NOT NULL,
  seq BIGINT NOT NULL,
  match_key TEXT,
  updated_at TIMESTAMP NOT NULL,
  deleted_at TIMESTAMP,
  origin_connection_id BIGINT,
  UNIQUE (organization_id, uid)
);
CREATE INDEX hub_records_by_seq ON hub_records (organization_id, entity, seq);
CREATE INDEX hub_records_by_match ON hub_records (organization_id, entity, match_key);

CREATE TABLE id_maps (
  id BIGSERIAL PRIMARY KEY,
  connection_id BIGINT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
  hub_entity TEXT NOT NULL,
  hub_id TEXT,
  external_entity TEXT NOT NULL,
  external_id TEXT,
  state TEXT NOT NULL,
  hub_hash TEXT,
  ext_hash TEXT,
  last_push_to_hub TIMESTAMP,
  last_push_to_external TIMESTAMP,
  to_hub BOOLEAN NOT NULL DEFAULT TRUE,
  to_external BOOLEAN NOT NULL DEFAULT TRUE,
  name TEXT,
  last_error TEXT,
  retry_to TEXT,
  metadata TEXT,
  updated_at TIMESTAMP NOT NULL,
  UNIQUE (connection_id, external_entity, external_id),
  UNIQUE (connection_id, hub_entity, hub_id, external_entity)
);
CREATE INDEX id_maps_retry ON id_maps (connection_id, external_entity, retry_to);

CREATE TABLE sync_cursors (
  connection_id BIGINT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
  entity TEXT NOT NULL,
  watermark TIMESTAMP,
  hub_seq BIGINT NOT NULL DEFAULT 0,
  updated_at TIMESTAMP NOT NULL,
  PRIMARY KEY (connection_id, entity)
);

CREATE TABLE sync_runs (
  id BIGSERIAL PRIMARY KEY,
  connection_id BIGINT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
  status TEXT NOT NULL,
  options TEXT NOT NULL,
  counts TEXT NOT NULL,
  started_at TIMESTAMP NOT NULL,
  finished_at TIMESTAMP,
  message TEXT
);
CREATE INDEX sync_runs_by_connection ON sync_runs (connection_id, id);
