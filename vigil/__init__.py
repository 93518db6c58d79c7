"""vigil: video-surveillance object detection over Apache Kafka.

The core package holds what every stage shares: configuration, message contracts, the in-memory
`Detections` type, Kafka helpers and the error hierarchy. It never imports a stage (`ingest`,
`detect`, `alerts`); only the CLI does, lazily, for the subcommand being run.
"""

__version__ = "0.1.0"
