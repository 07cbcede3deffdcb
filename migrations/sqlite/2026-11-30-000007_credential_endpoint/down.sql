ALTER TABLE credentials DROP COLUMN endpoint;
