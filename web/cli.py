"""`vigil web`, `vigil web rebuild` and `vigil web hash-password`."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
import threading
import time

from vigil.errors import VigilError

log = logging.getLogger("web")
EXTRA_HINT = "the review service needs the `web` extra: pip install 'vigil[web]' (fastapi, uvicorn, av)"


def _require_extra() -> None:
    missing = []
    for module in ("fastapi", "uvicorn", "av"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise VigilError(f"{', '.join(missing)} not installed: {EXTRA_HINT}")


def hash_password_main(args: argparse.Namespace) -> int:
    """Read a password on stdin (prompted on a terminal, twice) and print its hash."""
    from vigil.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("no password given on stdin", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def rebuild_main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vigil.kafka import ensure_topics
    from vigil.settings import resolve_config
    from web.follow import rebuild
    from web.service import lock_store

    config = resolve_config(args.config, getattr(args, "log_level", None))
    lock = lock_store(Path(config.web.store))
    try:
        ensure_topics(config.kafka, config.topics)
        rebuild(config, progress=lambda line: print(line, file=sys.stderr))
    finally:
        lock.close()
    return 0


def web_main(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) == "hash-password":
        return hash_password_main(args)
    if getattr(args, "action", None) == "rebuild":
        return rebuild_main(args)
    _require_extra()
    import uvicorn

    from vigil.health import Health
    from vigil.kafka import ensure_topics, wait_for_kafka
    from vigil.metrics_server import serve_process_metrics
    from vigil.settings import resolve_config
    from vigil.signals import stop_on_signals
    from web.app import create_app
    from web.service import WebService

    config = resolve_config(args.config, getattr(args, "log_level", None))
    if not config.web.users and not config.web.tokens:
        log.warning("web: no web.users and no web.tokens: nobody can log in (see `vigil web hash-password`)")
    health = Health()
    metrics = serve_process_metrics(config.metrics, health, getattr(args, "metrics_port", None))
    health.set("kafka", False, "connecting")
    waiting = threading.Event()
    with stop_on_signals(waiting, "giving up waiting for Kafka"):
        ready = wait_for_kafka(
            config.kafka, lambda: ensure_topics(config.kafka, config.topics), waiting, what="web", health=health
        )
    if ready is None:
        metrics.stop()
        return 0
    health.set("kafka", True, "topics ready")
    service = WebService(config, health).start()
    web = config.web
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service), host=web.host, port=web.port, log_level="warning", access_log=False,
            proxy_headers=bool(web.trusted_proxies), forwarded_allow_ips=web.trusted_proxies or None,
            timeout_graceful_shutdown=3, lifespan="off",
        )
    )  # fmt: skip

    # uvicorn serves from a thread so this one owns the signals, as in every vigil stage: the first
    # SIGINT/SIGTERM stops gracefully (exit 0), and a follower that stops ends the process too.
    thread = threading.Thread(target=server.run, name="web-http", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    if server.started:
        health.set("http", True, f"serving http://{web.host}:{web.port}")
    log.info("web: console and API on http://%s:%d (store %s)", web.host, web.port, web.store)
    try:
        with stop_on_signals(service.stop_event, "closing connections"):
            while not service.stop_event.wait(0.5):
                if not thread.is_alive():
                    service.failures.append(
                        f"http: cannot serve on {web.host}:{web.port} (see above); choose a free web.port or web.host"
                    )
                    break
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        service.stop()
        metrics.stop()
    if service.failures:
        log.error("web: stopped because %s", "; ".join(service.failures))
        return 1
    return 0
