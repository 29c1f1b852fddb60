"""`/api/docs` works without internet: the page names only this server's URLs, and the Swagger
UI files it names are served from the installed wheel (a real server on loopback, real HTTP)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from tests.server.twilio_emulator import running
from voxline import Agent
from voxline.server import ServerConfig, create_app, docs_assets
from voxline.settings import Settings


def make_app(tmp_path: Path) -> FastAPI:
    settings = Settings(data_dir=tmp_path, llm="fake", twilio_validate_signatures=False)
    return create_app(ServerConfig(agents=[Agent(name="alpha")], settings=settings))


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        running(make_app(tmp_path)) as (base, _server),
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        yield client


def referenced_urls(html: str) -> list[str]:
    """Every URL the page makes the browser load: src/href attributes and the quoted URLs the
    inline script hands Swagger UI (the OpenAPI document, the OAuth redirect)."""
    attributes = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    in_script = re.findall(r"""(?:url|oauth2RedirectUrl)\s*:\s*['"]([^'"]+)['"]""", html)
    return attributes + in_script


async def test_the_docs_page_loads_everything_from_this_server(tmp_path: Path) -> None:
    async with served(tmp_path) as client:
        base = str(client.base_url).rstrip("/")
        page = await client.get("/api/docs")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        html = page.text
        assert "SwaggerUIBundle" in html
        assert not re.search(r"(?:https?:)?//", html.replace(base, "")), (
            "the page names another host"
        )
        urls = referenced_urls(html)
        assets = [url for url in urls if "/docs/assets/" in url]
        assert {Path(urlsplit(url).path).name for url in assets} >= {
            "swagger-ui-bundle.js",
            "swagger-ui.css",
            "favicon-32x32.png",
        }
        for url in urls:
            target = urljoin(f"{base}/api/docs", url)
            assert urlsplit(target).netloc == urlsplit(base).netloc, url

        script = await client.get(next(u for u in assets if u.endswith(".js")))
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert len(script.content) > 100_000  # the whole bundle, not an error page
        assert b"SwaggerUIBundle" in script.content
        style = await client.get(next(u for u in assets if u.endswith(".css")))
        assert style.status_code == 200
        assert "text/css" in style.headers["content-type"]
        assert b".swagger-ui" in style.content

        schema = await client.get("/api/openapi.json")
        assert schema.status_code == 200
        assert schema.json()["openapi"].startswith("3.1")  # what Swagger UI 5 reads
        assert "/api/docs" not in schema.json()["paths"]  # the page is not an API route


async def test_an_asset_outside_the_bundle_is_not_served(tmp_path: Path) -> None:
    async with served(tmp_path) as client:
        escape = await client.get("/api/docs/assets/..%2F__init__.py")
        assert escape.status_code == 404
        missing = await client.get("/api/docs/assets/nothing.js")
        assert missing.status_code == 404


async def test_without_the_package_the_page_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docs_assets, "swagger_ui_dir", lambda: None)
    async with served(tmp_path) as client:
        page = await client.get("/api/docs")
    assert page.status_code == 503
    assert "swagger-ui-bundle-v2" in page.text
    assert "/api/openapi.json" in page.text


def test_the_installed_bundle_is_swagger_ui_5() -> None:
    """Swagger UI 4 renders FastAPI's OpenAPI 3.1 document as an error: the dependency must
    stay on the v2 package (Swagger UI 5)."""
    folder = docs_assets.swagger_ui_dir()
    assert folder is not None, "swagger-ui-bundle-v2 is a core dependency"
    assert re.fullmatch(r"swagger-ui-5\.\d+\.\d+", folder.name), folder.name
