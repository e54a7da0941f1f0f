-- The REST API: when an order's ETA was last computed (recomputed at most every few seconds),
-- and a cheap time index for analytics over recent fixes.
ALTER TABLE orders ADD COLUMN eta_computed_at timestamptz;
CREATE INDEX orders_active_eta ON orders (eta_computed_at NULLS FIRST)
    WHERE status IN ('assigned', 'picked_up', 'out_for_delivery');
CREATE INDEX orders_created ON orders (created_at DESC);
CREATE INDEX orders_delivered ON orders (delivered_at DESC) WHERE delivered_at IS NOT NULL;
-- Fixes arrive roughly in time order, so a BRIN index serves "fixes in the last hour"
-- at almost no cost to ingest.
CREATE INDEX positions_fix_time_brin ON positions USING brin (fix_time) WITH (pages_per_range = 32);
CREATE INDEX last_positions_fix_time ON last_positions (fix_time DESC);
