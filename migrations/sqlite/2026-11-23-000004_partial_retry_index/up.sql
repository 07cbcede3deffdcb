-- Only waiting records are in the retry index: a full index on (connection, entity)
-- invites a planner with young statistics to scan every id map of a connection.
DROP INDEX id_maps_retry;
CREATE INDEX id_maps_retry ON id_maps (connection_id, external_entity, retry_to) WHERE retry_to IS NOT NULL;
