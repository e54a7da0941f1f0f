-- One writer per table, and one durable path for what devices report (docs/architecture.md).
--
-- ingest writes: positions, last_positions, events (presence, geofence), dead_letters and
--   device_reports (couriers' delivery status reports and emergencies, stored in the same
--   transaction as the batch they came in, before the PUBACK).
-- the API writes: orders, assignments, order_events, alerts, report_outcomes and outbox.

-- The inbox: every status report and emergency a device sent, once (a redelivery hits the
-- unique key). The API's report applier takes the ones without an outcome.
CREATE TABLE device_reports (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('status', 'emergency')),
    courier_id entity_id NOT NULL,
    order_id entity_id,
    report_time timestamptz NOT NULL CHECK (report_time >= '2000-01-01T00:00:00Z'),
    payload jsonb NOT NULL,
    dedup_key text NOT NULL,
    received_at timestamptz NOT NULL,
    UNIQUE (dedup_key, report_time),
    CHECK ((kind = 'status') = (order_id IS NOT NULL))
);
CREATE INDEX device_reports_received ON device_reports (received_at);

-- What the applier made of each report, committed with the change it caused.
CREATE TABLE report_outcomes (
    report_id bigint PRIMARY KEY REFERENCES device_reports (id),
    outcome text NOT NULL CHECK (outcome IN ('applied', 'repeat', 'rejected', 'failed')),
    reason text NOT NULL DEFAULT '',
    decided_at timestamptz NOT NULL DEFAULT now()
);

-- The workflow's own history (status changes, refused reports, assignments), written by the
-- API only; `events` keeps what devices said.
CREATE TABLE order_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_time timestamptz NOT NULL,
    kind text NOT NULL CHECK (kind IN ('status', 'status_rejected', 'assignment')),
    order_id entity_id NOT NULL,
    source_kind text NOT NULL CHECK (source_kind IN ('courier', 'user', 'system')),
    source_id text NOT NULL CHECK (length(source_id) BETWEEN 1 AND 128),
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    dedup_key text NOT NULL UNIQUE,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_events_order ON order_events (order_id, event_time);

INSERT INTO order_events (event_time, kind, order_id, source_kind, source_id, payload, dedup_key,
                          recorded_at)
SELECT event_time, kind, order_id, source_kind, source_id, payload, dedup_key, received_at
FROM events
WHERE order_id IS NOT NULL AND payload ? 'actor'
ON CONFLICT (dedup_key) DO NOTHING;
DELETE FROM events WHERE order_id IS NOT NULL AND payload ? 'actor';

-- Every change of an order bumps its version; announcements carry it, so a reader applies
-- them in the order they were made, whatever order they arrive in.
ALTER TABLE orders ADD COLUMN version bigint NOT NULL DEFAULT 1;

-- The transactional outbox: an announcement commits with the change it announces; the relay
-- publishes it at QoS 1 with `event_id` = id, then deletes it.
CREATE TABLE outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic text NOT NULL CHECK (length(topic) BETWEEN 1 AND 512),
    message jsonb NOT NULL CHECK (jsonb_typeof(message) = 'object'),
    kind text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The newest presence by arrival (a will arrives late with an old `ts`, and still wins).
CREATE INDEX events_presence_arrival ON events (source_id, received_at DESC)
    WHERE kind = 'presence';
