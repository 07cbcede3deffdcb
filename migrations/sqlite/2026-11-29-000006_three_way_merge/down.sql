DROP TABLE conflicts;
ALTER TABLE hub_records DROP COLUMN field_times;
ALTER TABLE id_maps DROP COLUMN base;
