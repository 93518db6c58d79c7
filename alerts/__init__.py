"""vigil stage: alerts."""
