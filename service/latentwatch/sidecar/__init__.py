"""The sidecar process: gRPC server, scoring engine, configuration and health probe."""
