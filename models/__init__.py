"""vigil stage: models."""
