"""/docs with no internet: Swagger UI from the installed swagger-ui-bundle package, and the OpenAPI
schema it reads, both behind the API key like every route but /health."""

from __future__ import annotations

import copy
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute

OPENAPI_URL = "/openapi.json"
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


def local_docs(app: FastAPI, guarded: list) -> None:
    """Swagger UI from the installed swagger-ui-bundle package, so /docs works with no internet; the
    page and the schema it reads sit behind the API key like every route but /health."""
    from swagger_ui_bundle import swagger_ui_path

    @app.get("/docs-assets/{name}", include_in_schema=False, dependencies=guarded)
    async def asset(name: str) -> FileResponse:
        """The three files the page loads, behind the key like the page; nothing else of the bundle
        (its own index.html points a browser at petstore.swagger.io)."""
        if name not in DOCS_ASSETS:
            raise HTTPException(status_code=404, detail="Not Found")
        return FileResponse(Path(swagger_ui_path) / name, media_type=DOCS_ASSETS[name])

    def schema() -> dict:
        if app.openapi_schema is None:  # a swap clears it: the version it names changes
            routes = [_get_only(route) for route in app.routes]
            app.openapi_schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=routes
            )
        return app.openapi_schema

    app.openapi = schema

    @app.get(OPENAPI_URL, include_in_schema=False, dependencies=guarded)
    async def openapi() -> dict:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=guarded)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - docs",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


def _get_only(route):
    """The route as the schema shows it: a GET that also answers HEAD is listed as the GET alone. HEAD is
    GET without the body, and FastAPI gives one route's methods one operation id, so listing both
    made a duplicate (and a warning at every schema build)."""
    if not isinstance(route, APIRoute) or not {"GET", "HEAD"} <= route.methods:
        return route
    shown = copy.copy(route)
    shown.methods = {"GET"}
    return shown
