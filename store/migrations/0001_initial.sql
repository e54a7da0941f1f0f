-- The first schema: reference tables, orders, and two hypertables for the stream.
CREATE EXTENSION IF NOT EXISTS timescaledb;

-- Ids travel in MQTT topics, so they share the topic id alphabet.
CREATE DOMAIN entity_id AS text CHECK (VALUE ~ '^[A-Za-z0-9_-]{1,64}$');

CREATE TABLE restaurants (
    id entity_id PRIMARY KEY,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    lat double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE couriers (
    id entity_id PRIMARY KEY,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    phone text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vehicles (
    id entity_id PRIMARY KEY,
    label text NOT NULL CHECK (length(label) BETWEEN 1 AND 200),
    courier_id entity_id REFERENCES couriers (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One MQTT identity per courier phone or vehicle tracker. The broker holds the secret.
CREATE TABLE devices (
    username text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.-]{1,128}$'),
    owner_kind text NOT NULL CHECK (owner_kind IN ('courier', 'vehicle')),
    owner_id entity_id NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz,
    revoked_at timestamptz,
    CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);
CREATE INDEX devices_owner ON devices (owner_kind, owner_id);

CREATE TABLE orders (
    id entity_id PRIMARY KEY,
    restaurant_id entity_id NOT NULL REFERENCES restaurants (id),
    customer_uid text NOT NULL CHECK (length(customer_uid) BETWEEN 1 AND 128),
    pickup_lat double precision NOT NULL CHECK (pickup_lat BETWEEN -90 AND 90),
    pickup_lon double precision NOT NULL CHECK (pickup_lon BETWEEN -180 AND 180),
    dropoff_lat double precision NOT NULL CHECK (dropoff_lat BETWEEN -90 AND 90),
    dropoff_lon double precision NOT NULL CHECK (dropoff_lon BETWEEN -180 AND 180),
    promised_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (
        status IN ('pending', 'assigned', 'picked_up', 'out_for_delivery', 'delivered', 'cancelled')
    ),
    courier_id entity_id REFERENCES couriers (id),
    eta timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    CHECK (status IN ('pending', 'cancelled') OR courier_id IS NOT NULL),
    CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
);
CREATE INDEX orders_customer ON orders (customer_uid, created_at DESC);
CREATE INDEX orders_restaurant ON orders (restaurant_id, created_at DESC);
CREATE INDEX orders_courier_active ON orders (courier_id)
    WHERE status IN ('assigned', 'picked_up', 'out_for_delivery');

CREATE TABLE assignments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id entity_id NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    courier_id entity_id NOT NULL REFERENCES couriers (id),
    assigned_by text NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    unassigned_at timestamptz,
    CHECK (unassigned_at IS NULL OR unassigned_at >= assigned_at)
);
-- At most one open assignment per order.
CREATE UNIQUE INDEX assignments_open ON assignments (order_id) WHERE unassigned_at IS NULL;

-- One row per GPS fix. Redelivered MQTT messages collide on the unique key and are skipped.
CREATE TABLE positions (
    source_kind text NOT NULL CHECK (source_kind IN ('courier', 'vehicle')),
    source_id entity_id NOT NULL,
    fix_time timestamptz NOT NULL CHECK (fix_time >= '2000-01-01T00:00:00Z'),
    lat double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    speed real CHECK (speed >= 0),
    heading real CHECK (heading >= 0 AND heading < 360),
    accuracy real CHECK (accuracy >= 0),
    altitude real,
    battery real CHECK (battery BETWEEN 0 AND 100),
    received_at timestamptz NOT NULL
);
SELECT create_hypertable(
    'positions', by_range('fix_time', INTERVAL '1 day'), create_default_indexes => false
);
-- Serves deduplication, one source's track between two times (range scan), and the
-- newest fix of one source (backward scan).
CREATE UNIQUE INDEX positions_source_time ON positions (source_kind, source_id, fix_time);

-- The newest fix of every source, upserted by ingest so "where is everyone" is one small scan.
CREATE TABLE last_positions (
    source_kind text NOT NULL CHECK (source_kind IN ('courier', 'vehicle')),
    source_id entity_id NOT NULL,
    fix_time timestamptz NOT NULL,
    lat double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    speed real,
    heading real,
    accuracy real,
    altitude real,
    battery real,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (source_kind, source_id)
);

-- Presence, delivery status (applied or rejected), emergencies, geofence transitions,
-- assignments. `dedup_key` names the message so a redelivery hits the unique index.
CREATE TABLE events (
    event_time timestamptz NOT NULL CHECK (event_time >= '2000-01-01T00:00:00Z'),
    kind text NOT NULL CHECK (
        kind IN ('presence', 'status', 'status_rejected', 'emergency', 'geofence', 'assignment')
    ),
    source_kind text NOT NULL CHECK (source_kind IN ('courier', 'vehicle', 'user', 'system')),
    source_id text NOT NULL CHECK (length(source_id) BETWEEN 1 AND 128),
    order_id entity_id,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    dedup_key text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('events', by_range('event_time', INTERVAL '7 days'));
CREATE UNIQUE INDEX events_dedup ON events (dedup_key, event_time);
CREATE INDEX events_source ON events (source_kind, source_id, event_time DESC);
CREATE INDEX events_order ON events (order_id, event_time DESC) WHERE order_id IS NOT NULL;
CREATE INDEX events_kind ON events (kind, event_time DESC);

-- Emergency alerts stay open until an admin acknowledges them.
CREATE TABLE alerts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    courier_id entity_id NOT NULL,
    raised_at timestamptz NOT NULL,
    lat double precision CHECK (lat BETWEEN -90 AND 90),
    lon double precision CHECK (lon BETWEEN -180 AND 180),
    message text NOT NULL DEFAULT '' CHECK (length(message) <= 2000),
    acknowledged_by text,
    acknowledged_at timestamptz,
    UNIQUE (courier_id, raised_at),
    CHECK ((acknowledged_by IS NULL) = (acknowledged_at IS NULL))
);
CREATE INDEX alerts_open ON alerts (raised_at DESC) WHERE acknowledged_at IS NULL;

-- Whatever a device sent that could not be stored, byte for byte, with the reason.
CREATE TABLE dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic text NOT NULL,
    payload bytea NOT NULL,
    reason text NOT NULL
);
CREATE INDEX dead_letters_received ON dead_letters (received_at DESC);
