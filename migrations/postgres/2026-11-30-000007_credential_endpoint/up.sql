-- Where the account's API lives, as the application last told Ferry (SuperOffice's
-- tenant web API URL, from the token response's id_token or its state service). Kept
-- with the credential it was learnt with; not a secret, so not sealed.
ALTER TABLE credentials ADD COLUMN endpoint TEXT;
