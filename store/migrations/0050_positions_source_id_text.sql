-- positions.source_id: the entity_id domain's regular expression made each row of ingest's
-- COPY cost PostgreSQL 1.19x (quiet machine) to 1.3-1.5x (loaded) the time of a length check
-- (bench/id_check, docs/benchmarks.md). Ingest, the
-- table's one writer, takes the id from a topic that protocol/topics.py has already
-- matched against the same alphabet (and the broker's ACL limits each device to its own
-- topics), so here a length check is enough. Binary-compatible: no rewrite.
ALTER TABLE positions ALTER COLUMN source_id TYPE text;
ALTER TABLE positions ADD CONSTRAINT positions_source_id_length
    CHECK (length(source_id) BETWEEN 1 AND 64);
