"""Swagger UI at /api/docs and ReDoc at /api/redoc, both from the gateway's own files.

FastAPI's defaults load them from a CDN, a blank page on a machine without internet access;
these pages load the copies vendored under services/api/dashboard/static/vendor/.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

from services.api.dashboard.endpoints import STATIC_PREFIX

OPENAPI_URL = "/api/openapi.json"
DOCS_URL = "/api/docs"
OAUTH2_REDIRECT_URL = "/api/docs/oauth2-redirect"
REDOC_URL = "/api/redoc"
VENDOR = f"{STATIC_PREFIX}/vendor"
TITLE = "autofix-ml"

router = APIRouter(include_in_schema=False)


@router.get(DOCS_URL)
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title=f"{TITLE} - Swagger UI",
        swagger_js_url=f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{VENDOR}/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{VENDOR}/swagger-ui/favicon-32x32.png",
        oauth2_redirect_url=OAUTH2_REDIRECT_URL,
        # validatorUrl: the default posts the spec to validator.swagger.io for a badge.
        swagger_ui_parameters={
            "validatorUrl": None,
            "persistAuthorization": True,
            "tryItOutEnabled": False,
            "displayRequestDuration": True,
        },
    )


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(REDOC_URL)
async def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url=OPENAPI_URL,
        title=f"{TITLE} - ReDoc",
        redoc_js_url=f"{VENDOR}/redoc/redoc.standalone.js",
        redoc_favicon_url=f"{VENDOR}/swagger-ui/favicon-32x32.png",
        with_google_fonts=False,
    )
