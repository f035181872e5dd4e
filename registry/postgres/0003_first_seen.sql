-- coapgate registry schema, migration 3: when each device first interacted with any node
-- (docs/cluster.md, docs/downstream.md#lifecycle): the row whose INSERT succeeds decides
-- which node emits the device's one LIFECYCLE DEVICE_FIRST_TIME_REGISTERED event.
--
-- A table of its own rather than a column of coapgate_devices: `coapgate devices import`
-- (also --replace) rewrites device rows but never this table, so re-importing a fleet emits
-- nothing again; a device deleted and added back keeps its row (it is the same device); and
-- a first interaction does not touch coapgate_devices, whose every change makes each node
-- reload the registry.
--
-- Rows are inserted by the nodes only (INSERT ... ON CONFLICT DO NOTHING RETURNING: one wins),
-- in a transaction that commits once the event has reached every sink; never updated.
-- Deleting a row by hand makes the device's next interaction on a node that has not seen it
-- emit the event again.

CREATE TABLE coapgate_first_seen (
  iccid      text        PRIMARY KEY REFERENCES coapgate_devices (iccid),
  first_seen timestamptz NOT NULL DEFAULT now()
);
