"""Getting results out of the sidecar: alert sinks (Redis Streams with a local spool,
SQLite, WatchAlerts), the export queue that keeps them off the scoring path,
redaction of alert text, the Redis consumer group, and the Prometheus metrics."""
