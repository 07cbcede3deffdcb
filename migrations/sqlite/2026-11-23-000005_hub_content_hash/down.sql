ALTER TABLE hub_records DROP COLUMN content_hash;
