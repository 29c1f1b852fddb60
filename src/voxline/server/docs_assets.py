"""`/api/docs` served from this machine: Swagger UI from a wheel, never from a CDN.

FastAPI's own docs page loads Swagger UI's JavaScript and CSS from a CDN, so on a server
without internet access (or behind a strict proxy, or a laptop on a plane) `/api/docs` is a blank
page. `swagger-ui-bundle-v2`, a core dependency, ships Swagger UI's built files inside its wheel
(Swagger UI 5: it reads the OpenAPI 3.1 document FastAPI writes; the 4.x of `swagger-ui-bundle`
cannot). They are mounted as static files under `/api/docs/assets/` and the page points there,
favicon included, so opening the docs makes no request to anywhere else.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles

log = structlog.get_logger("voxline.server")

_NEEDED = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def swagger_ui_dir() -> Path | None:
    """The folder of Swagger UI's built files, or None when the package is missing or broken."""
    try:
        from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]
    except ImportError:
        return None
    folder = Path(str(swagger_ui_path))
    if not all((folder / name).is_file() for name in _NEEDED):
        return None
    return folder


def install_docs(app: FastAPI, docs_url: str, title: str) -> None:
    """Serve the Swagger UI page at `docs_url` (build the app with `docs_url=None`), its files
    under `docs_url/assets/`, and the OpenAPI document from `app.openapi_url`. Without the
    package the page says what to install instead of rendering blank."""
    assets = f"{docs_url}/assets"
    folder = swagger_ui_dir()
    openapi_url = app.openapi_url or "/openapi.json"
    if folder is None:
        log.warning("API docs page off: swagger-ui-bundle-v2 is not installed")

        async def missing(request: Request) -> Response:
            return PlainTextResponse(
                "The API docs page needs the swagger-ui-bundle-v2 package "
                f"(pip install swagger-ui-bundle-v2). The OpenAPI document is at {openapi_url}.",
                status_code=503,
            )

        app.add_route(docs_url, missing, include_in_schema=False)
        return

    app.mount(assets, StaticFiles(directory=folder), name="docs-assets")

    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{title} API",
            swagger_js_url=f"{root}{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets}/favicon-32x32.png",
            # No "valid" badge fetched from swagger.io's online validator.
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )

    app.add_route(docs_url, docs, include_in_schema=False)
