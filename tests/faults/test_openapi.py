"""The OpenAPI description: one file in two places, served by the ingress, true to its routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import yaml

from services.ingress.app import OPENAPI, create_app
from shared.settings import Settings
from tests.helpers.ingress import running_ingress

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "openapi.yaml"
SHIPPED = REPO / "services" / "ingress" / "openapi.yaml"
WEBHOOK_ANSWERS = {"200", "400", "401", "408", "413", "415", "503"}


def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(DOCS.read_text(encoding="utf-8"))
    return spec


def test_docs_and_the_shipped_copy_are_the_same_file() -> None:
    assert DOCS.read_bytes() == SHIPPED.read_bytes() == OPENAPI, (
        "copy docs/openapi.yaml to services/ingress/openapi.yaml"
    )


def test_every_route_and_answer_is_described(settings: Settings) -> None:
    spec = _spec()
    assert spec["openapi"].startswith("3.1")
    app = create_app(settings)
    routes = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    described = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert routes == described
    webhook = spec["paths"]["/webhooks/usedesk"]["post"]
    assert set(webhook["responses"]) == WEBHOOK_ANSWERS
    assert set(webhook["requestBody"]["content"]) == {
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    }
    unavailable = spec["components"]["responses"]["Unavailable"]
    assert "Retry-After" in unavailable["headers"]


async def test_the_ingress_serves_it(settings: Settings) -> None:
    async with (
        running_ingress(settings) as url,
        aiohttp.ClientSession() as http,
        http.get(url + "/openapi.yaml") as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/yaml"
        assert await response.read() == DOCS.read_bytes()
