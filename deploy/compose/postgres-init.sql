-- Runs once, when docker compose creates the PostgreSQL data volume.
-- `app` (POSTGRES_DB) is the demo source database that ingest and Debezium read;
-- `freshet_target` is where serve materializes views, kept apart so it is never captured.
CREATE DATABASE freshet_target;
