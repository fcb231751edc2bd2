"""/docs/ui: Swagger UI from files this server ships, tried in headless Chromium."""

from __future__ import annotations

import json

import pytest
from yarl import URL

from server.controllers.docs import openapi_document
from server.keys import OPENAPI_KEY
from testing.chromium import chromium_page, find_chromium

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on PATH: `apt-get install chromium` (.ci/run does) or set $CHROMIUM",
)


async def test_the_page_loads_swagger_ui_from_this_server_only(client):
    resp = await client.get("/docs/ui")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    html = await resp.text()
    assert "http://" not in html and "https://" not in html and "//" not in html.replace("<!--", "")
    for asset in ("/docs/ui/assets/swagger-ui-bundle.js", "/docs/ui/assets/swagger-ui.css", "/docs/ui/init.js"):
        assert asset in html
        got = await client.get(asset)
        assert got.status == 200, asset
    init = await (await client.get("/docs/ui/init.js")).text()
    assert "validatorUrl: null" in init  # else the document goes to validator.swagger.io
    # /docs keeps its page without JavaScript.
    assert "<script src" not in await (await client.get("/docs")).text()


TOKEN = "token-typed-in-the-page"


def declare_bearer_auth(app) -> None:
    """Until auth lands, its part of the document: a bearer scheme, which GET /api/v1/foo accepts.
    (Once the document declares one itself, this only points foo at it.)"""
    document = openapi_document(app)
    schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
    name = next((n for n, s in schemes.items() if s.get("type") == "http" and s.get("scheme") == "bearer"), None)
    if name is None:
        name = "bearerAuth"
        schemes[name] = {"type": "http", "scheme": "bearer"}
    document["paths"]["/api/v1/foo"]["get"].setdefault("security", [{name: []}])
    app[OPENAPI_KEY]["json"] = json.dumps(document).encode()


@needs_chromium
async def test_swagger_ui_lists_the_operations_and_tries_get_foo_with_a_token(client):
    base = client.make_url("/")
    declare_bearer_auth(client.server.app)
    document = await (await client.get("/openapi.json")).json()
    expected = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    async with chromium_page(CHROMIUM) as page:
        await page.send("Page.navigate", url=str(base.join(URL("/docs/ui"))))
        await page.wait_for("document.querySelectorAll('.opblock').length > 0", what="the operations")
        listed = await page.evaluate(
            "[...document.querySelectorAll('.opblock')].map(op => ["
            " op.querySelector('.opblock-summary-method').textContent,"
            " op.querySelector('.opblock-summary-path').dataset.path])"
        )
        assert {(m, p) for m, p in listed} == expected

        # The bearer token field: Authorize, type the token, confirm, close.
        await page.evaluate("document.querySelector('.scheme-container button.authorize').click()")
        await page.wait_for("!!document.querySelector('.modal-ux input')", what="the token field")
        await page.evaluate("document.querySelector('.modal-ux input').focus()")
        await page.send("Input.insertText", text=TOKEN)
        await page.evaluate("document.querySelector('.modal-ux .auth-btn-wrapper button.authorize').click()")
        await page.wait_for(
            "!!document.querySelector('.modal-ux button[aria-label=\"Remove authorization\"]')",
            what="the token to be taken",
        )
        await page.evaluate("document.querySelector('.modal-ux button.close-modal').click()")

        # Try it out: GET /api/v1/foo, and the answer shows on the page.
        op = (
            "[...document.querySelectorAll('.opblock.opblock-get')]"
            ".find(op => op.querySelector('.opblock-summary-path').dataset.path === '/api/v1/foo')"
        )
        await page.evaluate(f"{op}.querySelector('.opblock-summary-control').click()")
        await page.wait_for(f"!!{op}.querySelector('.try-out__btn')", what="the Try it out button")
        await page.evaluate(f"{op}.querySelector('.try-out__btn').click()")
        await page.wait_for(f"!!{op}.querySelector('button.execute')", what="the Execute button")
        await page.evaluate(f"{op}.querySelector('button.execute').click()")
        status = await page.wait_for(
            f"(() => {{ const c = {op}.querySelector('.live-responses-table tbody .response-col_status');"
            " return c && c.textContent.trim(); })()",
            what="the answer of the call",
        )
        body = await page.evaluate(
            f"{op}.querySelector('.live-responses-table tbody .response-col_description pre').textContent"
        )
        assert status == "200"
        answer = json.loads(body)
        assert answer["hello"] == "world" and answer["version"] == 1
        curl = await page.evaluate(f"{op}.querySelector('.curl-command').textContent")
        assert f"Authorization: Bearer {TOKEN}" in curl

        # Nothing came from, or went to, another host; nothing failed in the page.
        origin = (base.scheme, base.host, base.port)
        for url in page.requested_urls():
            parsed = URL(url)
            assert parsed.scheme == "data" or (parsed.scheme, parsed.host, parsed.port) == origin, url
        assert page.console_errors() == []
