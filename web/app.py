"""The review service's HTTP app (FastAPI on uvicorn): the API of docs/api.md, the signed media
links, the console's pages and static files, and /healthz, /readyz, /metrics.

Handlers that touch SQLite, Kafka or the CPU (login hashing, drawing, clip building) are plain
`def`s, which FastAPI runs in its thread pool, so the event loop only ever waits on sockets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import anyio
import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vigil import __version__
from vigil.draw import Polygon, detection_labels, draw_boxes, draw_motion, draw_polygons
from vigil.errors import ContractError
from vigil.imaging import decode_image, encode_jpeg
from vigil.signing import verify
from web.auth import COOKIE, CSRF_HEADER, Authenticator, Principal
from web.live import frame_json, iso
from web.media import MediaError, MediaRetry, MediaUnavailable
from web.service import WebService, alert_json
from web.store import AlertQuery, StoredAlert, decode_cursor

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"login": "login", "live": "live", "camera": "camera", "review": "review", "zones": "zones", "system": "system"}
LOGINS = Counter("vigil_web_logins_total", "Login attempts", ["result"])
NS = 1_000_000_000


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers or {}, extra


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413 before they are read into memory: by the
    declared Content-Length at once; a chunked body is counted as it arrives and refused as soon as
    it passes the limit (at most `limit` bytes are ever held)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b""):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = f'{{"error": "request body is larger than web.max_body_bytes ({self.limit} bytes)"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


class LoginBody(BaseModel):
    username: str = Field(..., min_length=1, max_length=64)
    password: str = Field(..., min_length=1, max_length=1024)


class ReviewBody(BaseModel):
    reviewed: bool
    verdict: Literal["true_positive", "false_positive"] | None = None


class BulkReviewBody(ReviewBody):
    ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(..., min_length=1, max_length=500)


class MediaLane:
    """Snapshots and clips in a thread pool of their own (`web.media_workers` threads), apart from
    the one every other handler runs in: media wait on Kafka and the CPU, and however many are
    slow, the API, pages and logins keep their threads. Up to 4 requests per worker wait for a
    turn; more are answered 503 with Retry-After at once instead of piling up."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.limiter = anyio.CapacityLimiter(workers)
        self.max_waiting = 4 * workers

    async def run(self, build: Callable[[str], FileResponse], alert_id: str) -> FileResponse:
        if self.limiter.statistics().tasks_waiting >= self.max_waiting:
            raise MediaUnavailable(
                f"{self.workers} snapshots or clips are being built and {self.max_waiting} wait "
                "(web.media_workers); try again shortly",
                retry_after_s=2.0,
            )
        return await anyio.to_thread.run_sync(build, alert_id, limiter=self.limiter)


SNAPSHOT_ANSWERS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown alert"},
    410: {"description": "Frames aged out of topics.frames.retention_ms, or their topic is gone"},
    503: {"description": "Kafka did not answer within web.media_timeout_s, or too many media requests (Retry-After)"},
}
CLIP_ANSWERS = SNAPSHOT_ANSWERS | {
    202: {"description": "Clip still being recorded (Retry-After)"},
    404: {"description": "Unknown alert, or no frame of its camera in the clip's window"},
}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with the answers this service really gives: a malformed query or body is
    400 (not FastAPI's 422), and every /api/ path but login answers 401 without a login."""
    if app.openapi_schema is None:
        document = app.openapi()
        for path, item in document.get("paths", {}).items():
            for operation in item.values():
                answers = operation.setdefault("responses", {})
                if answers.pop("422", None) is not None:
                    answers["400"] = {"description": 'Malformed query or body: {"error": …} names the field'}
                if path.startswith("/api/") and path != "/api/login":
                    answers.setdefault("401", {"description": "Not logged in (no session or Bearer token)"})
        app.openapi_schema = document
    return app.openapi_schema


def parse_time(value: str | None, name: str) -> int | None:
    """ISO 8601 (naive means UTC) or integer nanoseconds."""
    if value is None or value == "":
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name} must be ISO 8601 (2026-12-01T06:00:00Z) or integer nanoseconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * NS)


def create_app(service: WebService) -> FastAPI:
    config = service.config
    web = config.web
    auth: Authenticator = service.auth
    media_key = web.media_key.get_secret_value().encode() if web.media_key else None
    app = FastAPI(
        title="vigil review service", version=__version__, openapi_url=None, docs_url=None, redoc_url=None,
        description="Alerts, snapshots, clips, live camera state and review (docs/api.md).",
    )  # fmt: skip

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(MediaError)
    async def _media_error(_request: Request, exc: MediaError) -> JSONResponse:
        if isinstance(exc, MediaRetry):
            retry = max(1, round(exc.retry_after_s))
            return _error(exc.status, str(exc), {"Retry-After": str(retry)}, retry_after_s=exc.retry_after_s)
        return _error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return _error(400, f"{where or 'request'}: {first.get('msg')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    def who(request: Request) -> Principal | None:
        return auth.from_token(request.headers.get("authorization")) or auth.from_session(request.cookies.get(COOKIE))

    def principal(request: Request) -> Principal:
        found = who(request)
        if found is None:
            raise ApiError(401, "log in (POST /api/login) or send Authorization: Bearer <token>",
                           {"WWW-Authenticate": 'Bearer realm="vigil"'})  # fmt: skip
        return found

    def changer(request: Request, user: Principal = Depends(principal)) -> Principal:
        """A state-changing request: CSRF header for cookie sessions."""
        if not auth.csrf_ok(user, request.headers.get(CSRF_HEADER)):
            raise ApiError(403, f"missing or wrong {CSRF_HEADER} header (the csrf_token from login or /api/me)")
        return user

    def admin(user: Principal = Depends(changer)) -> Principal:
        if not user.admin:
            raise ApiError(403, f"{user.name} is a viewer; only admins may change review state")
        return user

    def stored(alert_id: str) -> StoredAlert:
        alert = service.store.get(alert_id)
        if alert is None:
            raise ApiError(404, f"no alert {alert_id!r} in the store")
        return alert

    def secure(request: Request) -> bool:
        return request.url.scheme == "https" or (web.public_url or "").lower().startswith("https://")

    # -------------------------------------------------------------------------------- login

    @app.post("/api/login", tags=["login"], summary="Log in: a session cookie and its CSRF token")
    def login(body: LoginBody, request: Request) -> JSONResponse:
        address = request.client.host if request.client else "unknown"
        keys = [f"user:{body.username}", f"addr:{address}"]
        wait = auth.limiter.retry_after(keys)
        if wait > 0:
            LOGINS.labels("limited").inc()
            seconds = max(1, int(wait + 0.999))
            raise ApiError(429, f"too many failed logins; try again in {seconds} s",
                           {"Retry-After": str(seconds)}, retry_after_s=seconds)  # fmt: skip
        result = auth.login(body.username, body.password)
        if result is None:
            auth.limiter.failed(keys)
            LOGINS.labels("failed").inc()
            log.info("login failed for a user name from %s", address)
            raise ApiError(401, "wrong user name or password")
        session_id, user = result
        auth.limiter.succeeded(keys[0])
        LOGINS.labels("ok").inc()
        response = JSONResponse(_me(user))
        response.set_cookie(COOKIE, session_id, max_age=web.session_ttl_s, httponly=True, samesite="strict",
                            secure=secure(request), path="/")  # fmt: skip
        return response

    def _me(user: Principal) -> dict[str, Any]:
        me: dict[str, Any] = {"name": user.name, "role": user.role, "auth": user.auth}
        if user.auth == "session":
            me.update(csrf_token=user.csrf, expires_at=iso(user.expires_ns), expires_ns=user.expires_ns)
        else:
            me.update(expires_at=None)
        return me

    @app.post("/api/logout", status_code=204, tags=["login"], summary="End the session everywhere")
    def logout(user: Principal = Depends(changer)) -> Response:
        auth.logout(user)
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/api/me", tags=["login"], summary="Who is logged in, with the CSRF token")
    def me(user: Principal = Depends(principal)) -> dict[str, Any]:
        return _me(user)

    # -------------------------------------------------------------------------------- cameras

    @app.get("/api/cameras", tags=["cameras"], summary="Every camera: state, fps, last frame age, zones")
    def cameras(_user: Principal = Depends(principal)) -> dict[str, Any]:
        return {"items": service.live.cameras()}

    def _held(camera_id: str, seq: int | None) -> Any:
        if not service.live.known(camera_id):
            raise ApiError(404, f"unknown camera {camera_id!r}; see GET /api/cameras")
        held = service.live.latest(camera_id, seq)
        if held is None:
            raise ApiError(503, f"no frame from {camera_id} yet", {"Retry-After": "1"})
        return held

    @app.get(
        "/api/cameras/{camera_id}/latest.jpg",
        tags=["cameras"],
        response_class=Response,
        summary="The newest frame as JPEG (boxes=1, zones=1, motion=1 draw them)",
    )
    def latest_jpg(
        camera_id: str, boxes: bool = False, zones: bool = False, motion: bool = False, seq: int | None = None,
        _user: Principal = Depends(principal),
    ) -> Response:  # fmt: skip
        held = _held(camera_id, seq)
        data = held.jpeg
        if boxes or zones or motion:
            try:
                image = decode_image(held.jpeg, web.max_pixels, setting="web.max_pixels")
            except ContractError as exc:
                raise ApiError(502, f"the newest frame of {camera_id} does not decode: {exc}") from exc
            if zones:
                camera = service.live.camera_json(camera_id) or {}
                polygons = [
                    Polygon(z["name"], np.asarray(z["polygon_px"], np.float64)) for z in camera.get("zones", [])
                ]
                draw_polygons(image, polygons)
            if motion and held.meta.motion:
                draw_motion(image, held.meta.motion)
            if boxes and held.detections is not None:
                d = held.detections.detections
                labels = detection_labels(held.detections.class_names, d.confidence)
                draw_boxes(image, d.xyxy, labels, d.class_id)
            data = encode_jpeg(image, 85)
        exact = seq is not None and held.meta.seq == seq
        headers = {
            "X-Vigil-Seq": str(held.meta.seq),
            "X-Vigil-Capture-Ns": str(held.meta.capture_ns),
            "Cache-Control": "private, max-age=300" if exact else "no-store",
        }
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get(
        "/api/cameras/{camera_id}/latest.json", tags=["cameras"], summary="The newest frame's metadata and detections"
    )
    def latest_json(camera_id: str, _user: Principal = Depends(principal)) -> dict[str, Any]:
        return frame_json(_held(camera_id, None))

    # -------------------------------------------------------------------------------- alerts

    @app.get("/api/alerts", tags=["alerts"], summary="Alerts newest first, filtered, by cursor")
    def alerts(
        camera: str | None = None, rule: str | None = None, label: str | None = None, reviewed: bool | None = None,
        verdict: Literal["true_positive", "false_positive", "none"] | None = None,
        after: str | None = None, before: str | None = None, limit: int = Query(50, ge=1, le=500),
        cursor: str | None = None, _user: Principal = Depends(principal),
    ) -> JSONResponse:  # fmt: skip
        try:
            position = decode_cursor(cursor) if cursor else None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        query = AlertQuery(camera, rule, label, reviewed, verdict, parse_time(after, "after"),
                           parse_time(before, "before"), limit, position)  # fmt: skip
        page, next_cursor = service.store.query(query)
        # JSONResponse directly: FastAPI's generic encoder costs more than the query for 500 items.
        return JSONResponse({"items": [alert_json(a) for a in page], "next_cursor": next_cursor})

    @app.get("/api/alerts/facets", tags=["alerts"], summary="Cameras, rules and labels present in the store")
    def facets(_user: Principal = Depends(principal)) -> dict[str, list[str]]:
        return service.store.facets()

    @app.post("/api/alerts/review", tags=["alerts"], summary="Set review state of up to 500 alerts (admin)")
    def bulk_review(body: BulkReviewBody, user: Principal = Depends(admin)) -> dict[str, Any]:
        found = service.store.review(body.ids, body.reviewed, body.verdict, user.name)
        service.alert_reviewed(found)
        return {"updated": len(found), "missing": sorted(set(body.ids) - set(found))}

    @app.get("/api/alerts/{alert_id}", tags=["alerts"], summary="One alert")
    def alert(alert_id: str, _user: Principal = Depends(principal)) -> dict[str, Any]:
        return alert_json(stored(alert_id))

    @app.post("/api/alerts/{alert_id}/review", tags=["alerts"], summary="Set an alert's review state (admin)")
    def review(alert_id: str, body: ReviewBody, user: Principal = Depends(admin)) -> dict[str, Any]:
        stored(alert_id)
        service.store.review([alert_id], body.reviewed, body.verdict, user.name)
        service.alert_reviewed([alert_id])
        return alert_json(stored(alert_id))

    def snapshot_response(alert_id: str) -> FileResponse:
        path = service.snapshot(stored(alert_id))
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    def clip_response(alert_id: str) -> FileResponse:
        path, temporary = service.clip(stored(alert_id))
        cleanup = BackgroundTask(path.unlink, missing_ok=True) if temporary else None
        cache = "no-store" if temporary else "private, max-age=3600"
        return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": cache}, background=cleanup)

    media = MediaLane(web.media_workers)

    @app.get(
        "/api/alerts/{alert_id}/snapshot.jpg",
        tags=["alerts"],
        response_class=FileResponse,
        summary="The alert's frame with its zone, box, label and score",
        responses=SNAPSHOT_ANSWERS,
    )
    async def snapshot(alert_id: str, _user: Principal = Depends(principal)) -> FileResponse:
        return await media.run(snapshot_response, alert_id)

    @app.get(
        "/api/alerts/{alert_id}/clip.mp4",
        tags=["alerts"],
        response_class=FileResponse,
        summary="The alert's H.264 clip (Range supported)",
        responses=CLIP_ANSWERS,
    )
    async def clip(alert_id: str, _user: Principal = Depends(principal)) -> FileResponse:
        return await media.run(clip_response, alert_id)

    # -------------------------------------------------------------------------------- signed media

    @app.get(
        "/media/alerts/{alert_id}/{kind}",
        tags=["media"],
        response_class=FileResponse,
        summary="A signed snapshot or clip link from a webhook (no login)",
        responses=CLIP_ANSWERS,
    )
    async def signed_media(alert_id: str, kind: Literal["snapshot.jpg", "clip.mp4"], request: Request,
                           exp: str | None = None, sig: str | None = None) -> FileResponse:  # fmt: skip
        if media_key is None:
            raise ApiError(404, "signed links are off: set web.public_url and web.media_key")
        problem = verify(media_key, request.url.path, exp, sig)
        if problem is not None:
            raise ApiError(403, problem)
        return await media.run(snapshot_response if kind == "snapshot.jpg" else clip_response, alert_id)

    # -------------------------------------------------------------------------------- live + system

    @app.get(
        "/api/events",
        tags=["live"],
        response_class=StreamingResponse,
        summary="Server-sent events: alerts, camera states, frames",
    )
    async def events(
        cameras: str | None = None, frames: bool = True, _user: Principal = Depends(principal)
    ) -> StreamingResponse:
        wanted = frozenset(c for c in cameras.split(",") if c) if cameras else None
        return StreamingResponse(
            service.hub.stream(frames, wanted),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/system", tags=["live"], summary="Processes, cameras, detect figures, lag, dead letters, webhooks")
    def system(_user: Principal = Depends(principal)) -> dict[str, Any]:
        return service.system()

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(_user: Principal = Depends(principal)) -> JSONResponse:
        return JSONResponse(openapi_document(app))

    @app.get("/api/docs", include_in_schema=False)
    def docs(_user: Principal = Depends(principal)) -> Response:
        # The endpoints rendered from /api/openapi.json by a local script: no Swagger UI from a CDN,
        # as cameras often sit on networks that reach nothing else.
        return FileResponse(
            STATIC / "pages" / "api.html", media_type="text/html", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return Response("ok\n", media_type="text/plain")

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        report = service.health.ready()
        return Response(
            report.to_json() + "\n", status_code=200 if report.ready else 503, media_type="application/json"
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    # -------------------------------------------------------------------------------- pages

    def page(name: str, request: Request) -> Response:
        if name != "login" and who(request) is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return FileResponse(STATIC / "pages" / f"{PAGES[name]}.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache"})  # fmt: skip

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request) -> Response:
        return page("login", request)

    @app.get("/", include_in_schema=False)
    def live_page(request: Request) -> Response:
        return page("live", request)

    @app.get("/cameras/{camera_id}", include_in_schema=False)
    def camera_page(camera_id: str, request: Request) -> Response:
        return page("camera", request)

    @app.get("/review", include_in_schema=False)
    def review_page(request: Request) -> Response:
        return page("review", request)

    @app.get("/zones/{camera_id}", include_in_schema=False)
    def zones_page(camera_id: str, request: Request) -> Response:
        return page("zones", request)

    @app.get("/system", include_in_schema=False)
    def system_page(request: Request) -> Response:
        return page("system", request)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, limit=web.max_body_bytes)
    app.state.started = time.time()
    return app
