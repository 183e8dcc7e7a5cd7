"""`caviar serve`: the promoted model over HTTP. POST a Korean review, get 긍정 or 부정 back.

To run: caviar serve --name nsmc-sentiment --port 8000
        curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"text": "정말 재미있어요"}'

Pre-processing (validation), prediction (micro-batched) and post-processing (labels) are separate
steps. Concurrent requests share one forward pass, which is what keeps p99 low under load; a text
is checked before it joins a batch, and a failing batch is re-run request by request, so one
client's input can never fail another's. The docs (/docs) are served from this machine, not a CDN.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import unicodedata
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from caviar.registry.store import public_card, verify
from caviar.serving.limits import BodyLimit, uvicorn_limits
from model.device import set_threads
from model.errors import UserError
from model.predict import Prediction, Predictor

MAX_CHARS, MAX_BATCH = 1000, 256
API_KEY_ENV = "CAVIAR_API_KEY"
API_KEY_PATTERN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: what a Bearer header carries


def _check_text(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"text is not valid Unicode (a lone surrogate at character {err.start})") from None
    if len(text) > MAX_CHARS:
        raise ValueError(f"text is {len(text)} characters; at most {MAX_CHARS}")
    if not any(_readable(ch) for ch in text):
        raise ValueError("text must not be empty or whitespace (control, zero-width and direction marks count)")
    return text


def _readable(ch: str) -> bool:
    """Not whitespace, a control or format character (NUL, zero-width, RTL marks) or a separator."""
    return not ch.isspace() and unicodedata.category(ch)[0] not in "CZ"


def check_api_key(key: str | None) -> bytes | None:
    """The key as bytes, or a UserError at start-up: an empty key must never mean 'no auth'."""
    if key is None:
        return None
    if key == "":
        raise UserError(f"{API_KEY_ENV} is set but empty; unset it to serve without a key, or give a key")
    if not API_KEY_PATTERN.fullmatch(key):
        raise UserError(
            f"{API_KEY_ENV} must be printable ASCII without spaces (a Bearer token carries nothing else); "
            "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return key.encode("ascii")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"text": "이 영화 정말 재미있어요"}})
    text: StrictStr = Field(description=f"one review, 1 to {MAX_CHARS} characters")

    _text = field_validator("text")(_check_text)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(description=f"1 to {MAX_BATCH} reviews")

    @field_validator("texts")
    @classmethod
    def _texts(cls, texts: list[str]) -> list[str]:
        if not texts:
            raise ValueError("texts must hold at least one text")
        if len(texts) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} texts per batch (got {len(texts)})")
        for i, text in enumerate(texts):
            try:
                _check_text(text)
            except ValueError as err:
                raise ValueError(f"texts[{i}]: {err}") from None
        return texts


class PredictionOut(BaseModel):
    label: Literal["부정", "긍정"]
    label_id: Literal[0, 1]
    positive_probability: float


class BatchOut(BaseModel):
    predictions: list[PredictionOut]


class MicroBatcher:
    """Queue texts from concurrent requests; run them through the model together, off the event loop."""

    def __init__(self, predictor: Predictor, max_texts: int = 128):
        self.predictor, self.max_texts = predictor, max_texts
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None

    async def predict(self, texts: list[str]) -> list[Prediction]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def run(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            count = len(jobs[0][0])
            while count < self.max_texts and not self.queue.empty():
                jobs.append(self.queue.get_nowait())
                count += len(jobs[-1][0])
            texts = [t for job_texts, _ in jobs for t in job_texts]
            try:
                predictions = await asyncio.to_thread(self.predictor.predict, texts)
            except Exception:  # re-run alone, so only the request at fault gets the error
                await self._one_by_one(jobs)
                continue
            start = 0
            for job_texts, future in jobs:
                if not future.done():
                    future.set_result(predictions[start : start + len(job_texts)])
                start += len(job_texts)

    async def _one_by_one(self, jobs: list) -> None:
        for job_texts, future in jobs:
            try:
                result = await asyncio.to_thread(self.predictor.predict, job_texts)
            except Exception as err:  # a model failure is the server's: 500 to this waiter only
                if not future.done():
                    future.set_exception(err)
                continue
            if not future.done():
                future.set_result(result)


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


def create_app(model_dir: Path, api_key: str | None = None, threads: int | None = None) -> FastAPI:
    """Verify every checksum, load the model, and build the app; a corrupt model or key raises UserError."""
    model_dir = Path(model_dir)
    key = check_api_key(api_key)
    card = verify(model_dir)
    shown_card = public_card(card)
    set_threads(threads)
    batcher = MicroBatcher(Predictor.from_checkpoint(model_dir))
    app = FastAPI(
        title="caviar sentiment",
        description="NSMC movie-review sentiment: 긍정 (positive) / 부정 (negative)",
        version=card.get("version", "?"),
        lifespan=_batching(batcher),
        docs_url=None,  # served from the swagger-ui-bundle package instead: offline, no CDN
        redoc_url=None,
    )
    _local_docs(app)
    _one_line_errors(app)
    app.add_middleware(BodyLimit)
    authorized = Depends(_bearer_check(key))

    @app.get("/health")
    @app.head("/health", include_in_schema=False)  # load balancers probe with HEAD
    async def health() -> dict:
        return {"status": "ok", "model": card.get("name"), "version": card.get("version")}

    @app.get("/model", dependencies=[authorized])
    async def model_card() -> dict:
        return shown_card

    @app.post("/predict", response_model=PredictionOut, dependencies=[authorized])
    async def predict(request: PredictRequest) -> dict:
        (prediction,) = await batcher.predict([request.text])
        return prediction.as_dict()

    @app.post("/predict/batch", response_model=BatchOut, dependencies=[authorized])
    async def predict_batch(request: BatchRequest) -> dict:
        return {"predictions": [p.as_dict() for p in await batcher.predict(request.texts)]}

    return app


def _batching(batcher: MicroBatcher):
    """The app's lifespan: the micro-batcher's loop runs while the app does."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.task = asyncio.create_task(batcher.run())
        yield
        batcher.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await batcher.task

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


def _local_docs(app: FastAPI) -> None:
    """Swagger UI from the installed swagger-ui-bundle package, so /docs works with no internet."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - docs",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


def serve(model_dir: Path, host: str, port: int, threads: int | None = None, announce=print) -> None:
    """Check and load first (a bad model or key is one line, exit 2), then announce and serve."""
    import uvicorn

    app = create_app(model_dir, api_key=os.environ.get(API_KEY_ENV), threads=threads)
    auth = "bearer key required" if os.environ.get(API_KEY_ENV) else f"no auth ({API_KEY_ENV} unset)"
    announce(f"serving {model_dir} on http://{host}:{port} ({auth}; docs at /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, **uvicorn_limits())
