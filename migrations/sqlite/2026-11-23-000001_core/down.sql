DROP TABLE sync_runs;
DROP TABLE sync_cursors;
DROP TABLE id_maps;
DROP TABLE hub_records;
DROP TABLE credentials;
DROP TABLE connections;
DROP TABLE organizations;
