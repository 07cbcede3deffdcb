-- The hash of each record's data as stored, the same one id maps keep as `hub_hash`: a
-- connection's push can then pass over the records it already holds inside the query,
-- without reading and hashing them. Existing rows keep NULL and are compared the slow way.
ALTER TABLE hub_records ADD COLUMN content_hash TEXT;
