"""The Apache Kafka jars the embedded broker runs: resolved once from Maven Central with
`deploy/kafka/pom.xml` and cached per version (see deploy/kafka/README.md)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from vigil.errors import BrokerError

Progress = Callable[[str], None]

MARKER = ".vigil-complete"
LOG_TAIL_LINES = 20
_MVN_TIMEOUT_S = 600.0


def stderr_progress(message: str) -> None:
    print(f"vigil broker: {message}", file=sys.stderr, flush=True)


def _say(say: Progress | None, message: str) -> None:
    if say is not None:
        say(message)


def default_cache_dir() -> Path:
    """Where fetched jars live: $VIGIL_CACHE_DIR/kafka, else $XDG_CACHE_HOME/vigil/kafka, else
    ~/.cache/vigil/kafka. Read when called, never at import."""
    if root := os.environ.get("VIGIL_CACHE_DIR"):
        return Path(root).expanduser() / "kafka"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vigil" / "kafka"


def default_deploy_dir() -> Path:
    """`deploy/kafka` of the source tree (pom.xml and log4j2.yaml); $VIGIL_KAFKA_DEPLOY_DIR overrides."""
    if override := os.environ.get("VIGIL_KAFKA_DEPLOY_DIR"):
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[1] / "deploy" / "kafka"


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding (22 characters).

    Like Kafka's own `Uuid.randomUuid()`, never one starting with '-': the storage tool's argument
    parser would take it for an option (about 1 id in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last non-blank `lines` of `text`, indented, for error messages."""
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(f"    {line}" for line in kept) if kept else "    (no output)"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Maven's generic advice after every failure; the lines before it say what actually went wrong.
_MVN_BOILERPLATE = ("re-run maven", "to see the full stack trace", "for more information about the errors", "[help ")


def _mvn_summary(output: str) -> str:
    useful = []
    for line in output.splitlines():
        line = _ANSI.sub("", line)
        text = line.removeprefix("[ERROR]").strip().lower()
        if text and not text.startswith(_MVN_BOILERPLATE):
            useful.append(line)
    return tail("\n".join(useful), 15)


def fetch_jars(
    target: Path, version: str, deploy_dir: Path, mvn_name: str = "mvn", say: Progress | None = None
) -> Path:
    """`target`, the folder of broker jars for Kafka `version`, fetched with Maven on first use."""
    if (target / MARKER).is_file():
        return target
    pom = deploy_dir / "pom.xml"
    fix = (
        "or point vigil at an existing Kafka cluster instead by setting kafka.bootstrap_servers "
        "(e.g. [kafka-1:9092]) in the config"
    )
    if not pom.is_file():
        raise BrokerError(
            f"{pom} not found: the embedded broker needs vigil's source tree (deploy/kafka), or set "
            f"$VIGIL_KAFKA_DEPLOY_DIR to a folder holding pom.xml and log4j2.yaml; {fix}"
        )
    mvn = shutil.which(mvn_name)
    if mvn is None:
        raise BrokerError(
            f"Maven ({mvn_name}) is not on PATH; it is needed once to fetch the Apache Kafka {version} jars "
            f"into {target}. Install Maven (e.g. apt-get install maven), or copy the jars there and create "
            f"{target / MARKER}; {fix}"
        )
    _say(say, f"fetching Apache Kafka {version} jars from Maven Central into {target} ...")
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{version}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom), "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}", "-DincludeScope=runtime", f"-Dkafka.version={version}",
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, timeout=_MVN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(f"mvn did not finish fetching Kafka {version} within {_MVN_TIMEOUT_S:.0f}s; {fix}") from exc
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    jars = sorted(staging.glob("*.jar")) if staging.is_dir() else []
    if result.returncode != 0 or not any(j.name == f"kafka_2.13-{version}.jar" for j in jars):
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(
            f"mvn failed to fetch Apache Kafka {version} (exit {result.returncode}); its last lines:\n"
            f"{_mvn_summary(output)}\nCheck network access to Maven Central and kafka.embedded.kafka_version; {fix}"
        )
    (staging / MARKER).write_text("\n".join(j.name for j in jars) + "\n")
    try:
        staging.rename(target)
    except OSError:
        # Another process completed the same fetch first; its copy is as good as ours.
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / MARKER).is_file():
            raise
    _say(say, f"fetched {len(jars)} jars in {time.monotonic() - started:.1f}s")
    return target
