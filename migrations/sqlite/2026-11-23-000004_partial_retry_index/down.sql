DROP INDEX id_maps_retry;
CREATE INDEX id_maps_retry ON id_maps (connection_id, external_entity, retry_to);
