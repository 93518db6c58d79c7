"""One exception hierarchy for the whole product, rooted in `VigilError`.

Every error says what was wrong and, where there is one, how to fix it, so the CLI can print it
as-is and exit non-zero without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class VigilError(Exception):
    """Base of every error vigil raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: the dotted YAML key path, its line (1-based, if known), and why."""

    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.key or '<root>'}: {self.message}"


class ConfigError(VigilError):
    """The configuration is invalid. `issues` lists every problem found, each with its YAML key."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        plural = "s" if len(issues) != 1 else ""
        super().__init__(f"{source}: {len(issues)} configuration error{plural}\n{lines}")


class ContractError(VigilError):
    """A Kafka record does not follow the message contract (see docs/messages.md).

    Consumers route such records to the dead-letter topic with `str(error)` as the reason.
    """


class ModelError(VigilError):
    """A model file is missing, corrupt, or does not match any known output family."""


class BrokerError(VigilError):
    """The embedded Kafka broker could not be fetched, started, reached or stopped."""


class KafkaUnavailableError(VigilError):
    """No Kafka broker answered at the configured bootstrap servers."""


class KafkaSecurityError(VigilError):
    """A broker answered but refused this client: a failed login or an untrusted certificate. Not
    transient: retrying with the same settings cannot help; the message names the config key."""


class SourceError(VigilError):
    """A camera or recording could not be opened or read."""


class DeliveryError(VigilError):
    """A webhook delivery failed permanently (a 4xx other than 408/429)."""
