"""vigil stage: ingest."""
