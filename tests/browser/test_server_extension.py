"""The server extension serves BokehJS behind Jupyter's authentication (no browser needed)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def _get(url: str, token: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Authorization": f"token {token}"} if token else {}
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, b"", dict(error.headers)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_bokehjs_is_served_with_auth(lab_server):
    import bokeh

    from torchmagic.server import BOKEH_STATIC_PATH

    url = f"{lab_server.url}{BOKEH_STATIC_PATH}bokeh.min.js"
    status, body, headers = _get(f"{url}?v={bokeh.__version__}", lab_server.token)
    assert status == 200
    assert len(body) > 500_000 and bokeh.__version__.encode() in body
    assert "javascript" in headers.get("Content-Type", "")
    # Versioned URLs may be cached by the browser.
    assert "max-age" in headers.get("Cache-Control", "")

    status, _, _ = _get(url)  # no token
    assert status in (302, 403), status

    status, _, _ = _get(f"{lab_server.url}{BOKEH_STATIC_PATH}../../bokeh/__init__.py", lab_server.token)
    assert status in (403, 404), status


def test_page_config_announces_bokeh(lab_server):
    import bokeh

    status, body, _ = _get(f"{lab_server.url}lab?token={lab_server.token}")
    assert status == 200
    assert f'"torchmagicBokehVersion": "{bokeh.__version__}"' in body.decode()
