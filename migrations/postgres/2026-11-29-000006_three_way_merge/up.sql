-- Field-level three-way merge. Each id map keeps its base: the mapped fields (in the hub's
-- shape) as the hub and that application last agreed. Existing id maps start without one
-- and take their current values as the base on their first run after the upgrade.
ALTER TABLE id_maps ADD COLUMN base TEXT;
-- When each hub field was last edited, as the application that brought the edit reported
-- it ({"field": "2026-11-29T10:00:00Z"}): what `conflict: newest` compares.
ALTER TABLE hub_records ADD COLUMN field_times TEXT;
-- Every conflict the engine settled: both values, both edit times and the winner.
CREATE TABLE conflicts (
  id BIGSERIAL PRIMARY KEY,
  connection_id BIGINT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
  id_map_id BIGINT NOT NULL,
  hub_entity TEXT NOT NULL,
  hub_id TEXT NOT NULL,
  external_id TEXT NOT NULL,
  field TEXT NOT NULL,
  hub_value TEXT NOT NULL,
  external_value TEXT NOT NULL,
  hub_time TIMESTAMP,
  external_time TIMESTAMP,
  winner TEXT NOT NULL,
  created_at TIMESTAMP NOT NULL
);
CREATE INDEX conflicts_by_connection ON conflicts (connection_id, id);
-- The first run after the upgrade reads every application's records once (as a first sync
-- does), so every linked record still there takes its current values as its base.
UPDATE sync_cursors SET watermark = NULL;
