-- coapgate registry schema, migration 2: the bootstrap state every node shares
-- (docs/bootstrap-and-dtls.md, docs/cluster.md): per ICCID the key the last GET /bootstrap
-- generated and the time of that call, on the database's clock.
--
-- `key` NULL: no generated key (the device has a user-set key, which lives in
-- coapgate_devices). Rows are written by PostgresKeyStore only, in one statement per call, so
-- that the 5-minute rule is decided by one clock under races between nodes.

CREATE TABLE coapgate_bootstrap (
  iccid     text        PRIMARY KEY CHECK (iccid <> ''),
  key       text,
  last_call timestamptz NOT NULL
);

-- Every node keeps the generated keys in memory for its DTLS handshakes: when a key changes
-- (made, rotated, or forgotten for a user-set key), the nodes are told which ICCID to fetch
-- again. A call that only records its time is not announced (no handshake depends on it).
-- A hint like coapgate_devices': NOTIFY is not replayed, so a node reloads the whole table on
-- every (re)connect.
CREATE FUNCTION coapgate_bootstrap_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('coapgate_bootstrap', NEW.iccid);
  RETURN NULL;
END $$;
CREATE TRIGGER coapgate_bootstrap_notify_insert AFTER INSERT ON coapgate_bootstrap
  FOR EACH ROW EXECUTE FUNCTION coapgate_bootstrap_notify();
CREATE TRIGGER coapgate_bootstrap_notify_update AFTER UPDATE ON coapgate_bootstrap
  FOR EACH ROW WHEN (OLD.key IS DISTINCT FROM NEW.key)
  EXECUTE FUNCTION coapgate_bootstrap_notify();
