"""`caviar serve`: the promoted model over HTTP. POST a Korean review, get 긍정 or 부정 back.

To run: caviar serve --name nsmc-sentiment --port 8000
        curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"text": "정말 재미있어요"}'

Pre-processing (validation, serving/schemas.py), prediction (micro-batched, serving/batcher.py) and
post-processing (labels) are separate steps. The docs (/docs) are served from this machine, not a
CDN. With CAVIAR_API_KEY set, everything but /health needs the key, /docs and /openapi.json included.
Serving a registry's `current` (the default), the service follows it: a promotion or a rollback is
loaded, checked and swapped in while it serves (serving/live.py); every answer's `Caviar-Model`
header names the version that gave it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import secrets
import socket
import sys
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from caviar.serving.batcher import MicroBatcher
from caviar.serving.limits import KEEP_ALIVE_S, BodyLimit, InFlightLimit, uvicorn_limits
from caviar.serving.live import (
    FOLLOW_EVERY_S,
    AliasSource,
    Follower,
    LinkSource,
    LoadedModel,
    follows_registry,
    load_checked,
)
from caviar.serving.offline_docs import local_docs
from caviar.serving.schemas import ERRORS, UNAUTHORIZED, BatchOut, BatchRequest, PredictionOut, PredictRequest
from model.device import set_threads
from model.errors import UserError
from model.settings import settings

API_KEY_ENV = "CAVIAR_API_KEY"
MAX_API_KEY = 1024
API_KEY_PATTERN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: what a Bearer header carries
MODEL_HEADER = "Caviar-Model"  # <name>/<version> of the model that gave this answer
ANSWERED_BY = {
    200: {
        "headers": {
            MODEL_HEADER: {"description": "the model that answered, <name>/<version>", "schema": {"type": "string"}}
        }
    }
}


def check_api_key(key: str | None) -> bytes | None:
    """The key as bytes, or a UserError at start-up: an empty key must never mean 'no auth'."""
    if key is None:
        return None
    if key == "":
        raise UserError(f"{API_KEY_ENV} is set but empty; unset it to serve without a key, or give a key")
    if len(key) > MAX_API_KEY:  # a longer one would only ever be answered 431 (header too large)
        raise UserError(
            f"{API_KEY_ENV} is {len(key):,} characters; at most {MAX_API_KEY} fit the header that carries it"
        )
    if not API_KEY_PATTERN.fullmatch(key):
        raise UserError(
            f"{API_KEY_ENV} must be printable ASCII without spaces (a Bearer token carries nothing else); "
            "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return key.encode("ascii")


def _one_line(err: RequestValidationError) -> str:
    first = err.errors()[0]
    if first["type"] == "json_invalid":
        return f"invalid JSON: {first.get('ctx', {}).get('error', 'could not parse the body')}"
    loc = ".".join(str(p) for p in first["loc"] if p != "body")
    kind = first["type"]
    if kind == "string_type":
        return f"{loc}: must be a string"
    if kind == "missing":
        if not loc:
            return 'the body is empty; send a JSON object, e.g. {"text": "정말 재미있어요"}'
        return f"{loc}: required"
    if kind in ("model_attributes_type", "dict_type"):
        return "the body must be a JSON object"
    if kind == "extra_forbidden":
        return f"{loc}: unknown field"
    msg = first["msg"].removeprefix("Value error, ")
    return msg if msg.startswith(loc) or not loc else f"{loc}: {msg}"


def create_app(
    model_dir: Path,
    api_key: str | None = None,
    threads: int | None = None,
    follow: bool | None = None,
    follow_every_s: float = FOLLOW_EVERY_S,
    log=None,
    source=None,
) -> FastAPI:
    """Verify every checksum, load the model, and build the app; a corrupt model or key raises UserError.
    `follow` (default: when model_dir is a registry's `current`) swaps in each version `current` names;
    `source` (an MLflow alias: live.AliasSource) is followed the same way, and model_dir is then unused."""
    key = check_api_key(api_key)
    if source is None and (follows_registry(model_dir) if follow is None else follow):
        source = LinkSource(model_dir)
    log = log or _to_stderr
    set_threads(threads)
    batcher = MicroBatcher(load_checked(source.folder(source.target()) if source else Path(model_dir)))
    app = FastAPI(
        title="caviar sentiment",
        description="NSMC movie-review sentiment: 긍정 (positive) / 부정 (negative)",
        version=batcher.model.version,
        docs_url=None,  # served from the swagger-ui-bundle package instead: offline, no CDN
        redoc_url=None,
        openapi_url=None,  # served below, behind the key when there is one
    )

    def serving() -> LoadedModel:
        return batcher.model

    def swap(loaded: LoadedModel) -> None:
        batcher.model = loaded  # one assignment: the next batch, /health and /model all see it
        app.version, app.openapi_schema = loaded.version, None

    follower = Follower(source, serving, swap, log) if source else None
    app.router.lifespan_context = _running(batcher, follower, follow_every_s)
    guarded = [Depends(_bearer_check(key))] if key is not None else []  # no key: no security in the schema
    errors = {**ERRORS, **(UNAUTHORIZED if key is not None else {})}
    local_docs(app, guarded)
    _one_line_errors(app)
    app.add_middleware(InFlightLimit)
    app.add_middleware(BodyLimit)  # added last, so it runs first: a slow body holds no request slot
    app.state.serving = serving  # the start-up line names what it serves

    @app.api_route("/health", methods=["GET", "HEAD"])  # load balancers probe with HEAD; one route, one Allow
    async def health() -> dict:
        return {"status": "ok", "model": serving().name, "version": serving().version}

    @app.get("/model", dependencies=guarded, responses={k: v for k, v in errors.items() if k == 401})
    async def model_card() -> dict:
        return serving().shown_card

    @app.post("/predict", response_model=PredictionOut, dependencies=guarded, responses={**errors, **ANSWERED_BY})
    async def predict(request: PredictRequest, response: Response) -> dict:
        answer = await batcher.predict([request.text])
        response.headers[MODEL_HEADER] = answer.by.label
        return answer.predictions[0].as_dict()

    @app.post("/predict/batch", response_model=BatchOut, dependencies=guarded, responses={**errors, **ANSWERED_BY})
    async def predict_batch(request: BatchRequest, response: Response) -> dict:
        answer = await batcher.predict(request.texts)
        response.headers[MODEL_HEADER] = answer.by.label
        return {"predictions": [p.as_dict() for p in answer.predictions]}

    return app


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _running(batcher: MicroBatcher, follower: Follower | None, every_s: float):
    """The app's lifespan: the micro-batcher's loop, and the follower's if any, run while the app does."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        tasks = [asyncio.create_task(batcher.run())]
        if follower is not None:
            tasks.append(asyncio.create_task(follower.run(every_s)))
        batcher.task = tasks[0]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


def _bearer_check(key: bytes | None):
    bearer = HTTPBearer(auto_error=False)

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if key is None:
            return
        # bytes, not str: compare_digest refuses non-ASCII str, and a header may carry any byte
        given = credentials.credentials.encode("utf-8", "surrogateescape") if credentials else b""
        if not secrets.compare_digest(given, key):
            raise HTTPException(401, "missing or wrong bearer API key", headers={"WWW-Authenticate": "Bearer"})

    return authorized


def _one_line_errors(app: FastAPI) -> None:
    """Every client mistake as 422 with a one-line `detail`."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _one_line(err)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body it cannot even decode (e.g. not UTF-8) with 400; it is invalid JSON all the same
        if err.status_code == 400:
            return JSONResponse(status_code=422, content={"detail": f"invalid JSON: {err.detail}"})
        return await http_exception_handler(request, err)


def serve(
    model_dir: Path | None,
    host: str,
    port: int,
    threads: int | None = None,
    announce=print,
    source=None,
    keep_alive_s: float = KEEP_ALIVE_S,
) -> None:
    """Take the port, check and load the model (a busy port, a bad model or key is one line, exit 2),
    then announce the address that really listens and serve on it."""
    import uvicorn

    listening = listen_on(host, port)
    try:
        key = settings().api_key
        app = create_app(model_dir, api_key=key, threads=threads, log=announce, source=source)
        auth = "bearer key required" if key else f"no auth ({API_KEY_ENV} unset)"
        follows = f"; follows {model_dir.name}" if source is None and follows_registry(model_dir) else ""
        follows = f"; follows @{source.alias}" if isinstance(source, AliasSource) else follows
        bound = listening.getsockname()[1]  # --port 0: the port the kernel gave
        shown = f"[{host}]" if ":" in host else host
        announce(
            f"serving {app.state.serving().label} from {source.where if source else model_dir} "
            f"on http://{shown}:{bound} "
            f"({auth}; docs at /docs{follows})"
        )
        limits = uvicorn_limits(keep_alive_s)
        config = uvicorn.Config(app, host=host, port=bound, log_level="warning", access_log=False, **limits)
        uvicorn.Server(config).run(sockets=[listening])
    finally:
        listening.close()


def listen_on(host: str, port: int) -> socket.socket:
    """The listening socket, taken before the model loads: a busy port is said at once, in one line,
    and never after a line that says the model is being served."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise UserError(f"--host {host}: not an address this machine can listen on ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    listening = socket.socket(family, kind, proto)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart need not wait
    try:
        listening.bind(address)
        listening.listen(2048)  # uvicorn's own backlog
    except OSError as err:
        listening.close()
        if err.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is in use by another program; choose another with --port") from None
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
    return listening
