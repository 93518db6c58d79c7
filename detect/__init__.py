"""vigil stage: detect."""
