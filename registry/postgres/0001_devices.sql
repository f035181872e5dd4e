-- coapgate registry schema, migration 1: the devices every node serves, and the change feed
-- the nodes follow (a sequence number per change, announced with NOTIFY).
--
-- A row is a device exactly as a line of the CSV registry is (docs/registry.md); the checks
-- keep rows that no node would accept out of the table. Devices are never DELETEd: `deleted`
-- marks them, so that a node catching up with `WHERE seq > last_seen` also sees removals.

CREATE SEQUENCE coapgate_device_seq;

CREATE TABLE coapgate_devices (
  iccid      text    PRIMARY KEY CHECK (iccid ~ '^[0-9]{18,22}$'),
  imsi       text    NOT NULL DEFAULT '' CHECK (imsi = '' OR imsi ~ '^[0-9]{5,15}$'),
  ip         inet    CHECK (ip IS NULL OR masklen(ip) = CASE family(ip) WHEN 4 THEN 32 ELSE 128 END),
  status     text    NOT NULL DEFAULT 'active',
  psk        text    NOT NULL DEFAULT '' CHECK (octet_length(psk) <= 64),
  psk_format text    NOT NULL DEFAULT '' CHECK (psk_format IN ('', 'string', 'hex')),
  deleted    boolean NOT NULL DEFAULT false,
  seq        bigint  NOT NULL DEFAULT nextval('coapgate_device_seq'),
  changed_at timestamptz NOT NULL DEFAULT now()
);
-- Two devices cannot share an address (as in the CSV); a deleted one gives its address up.
CREATE UNIQUE INDEX coapgate_devices_ip ON coapgate_devices (ip) WHERE ip IS NOT NULL AND NOT deleted;
CREATE INDEX coapgate_devices_seq_idx ON coapgate_devices (seq);

-- Every change gets a new sequence number, whoever makes it (coapgate, psql, another tool).
CREATE FUNCTION coapgate_devices_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.seq := nextval('coapgate_device_seq');
  NEW.changed_at := now();
  RETURN NEW;
END $$;
CREATE TRIGGER coapgate_devices_touch BEFORE UPDATE ON coapgate_devices
  FOR EACH ROW EXECUTE FUNCTION coapgate_devices_touch();

CREATE FUNCTION coapgate_devices_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'coapgate_devices: rows are not deleted; set deleted = true instead (nodes follow changes by seq)';
END $$;
CREATE TRIGGER coapgate_devices_refuse_delete BEFORE DELETE ON coapgate_devices
  FOR EACH ROW EXECUTE FUNCTION coapgate_devices_refuse_delete();

-- One NOTIFY per statement, carrying the highest sequence number the statement wrote. It is a
-- hint: NOTIFY is not replayed to a node that was disconnected, which therefore catches up
-- with WHERE seq > its last seen on every (re)connect.
CREATE FUNCTION coapgate_devices_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('coapgate_devices', coalesce((SELECT max(seq) FROM changed), 0)::text);
  RETURN NULL;
END $$;
CREATE TRIGGER coapgate_devices_notify_insert AFTER INSERT ON coapgate_devices
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION coapgate_devices_notify();
CREATE TRIGGER coapgate_devices_notify_update AFTER UPDATE ON coapgate_devices
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION coapgate_devices_notify();
