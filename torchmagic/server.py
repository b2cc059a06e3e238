"""Jupyter server extension: serve BokehJS from the installed bokeh, behind Jupyter's login.

jupyter_bokeh's widget view needs BokehJS on the page. Bokeh's default is its CDN, which fails
offline, and inlining it puts megabytes into every notebook. Instead the lab extension loads the
files this extension serves from ``{base_url}torchmagic/static/bokeh/`` (see
``labextension/src/bokeh.ts``). The page config's ``torchmagicBokehVersion`` tells the front end
which version is served, and lets the browser cache the files.

Enabled by ``jupyter-config/server/torchmagic.json`` (installed into
``etc/jupyter/jupyter_server_config.d/``). jupyter_server is imported only when the extension
loads, so importing this module costs nothing in a kernel.
"""

from __future__ import annotations

import os
from typing import Any

#: URL path, below the server's base URL, where BokehJS is served.
BOKEH_STATIC_PATH = "torchmagic/static/bokeh/"
#: Page config key that carries the served bokeh version to the front end.
BOKEH_VERSION_OPTION = "torchmagicBokehVersion"


def bokeh_js_dir() -> str:
    """The directory holding ``bokeh.min.js`` and its extensions in the installed bokeh."""
    from bokeh.util.paths import bokehjs_path

    return os.path.join(str(bokehjs_path()), "js")


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "torchmagic.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from jupyter_server.base.handlers import AuthenticatedFileHandler
    from jupyter_server.utils import url_path_join

    class BokehJSHandler(AuthenticatedFileHandler):
        """BokehJS files, for logged-in users only; only ``.js`` files are served."""

        def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
            from tornado import web

            if not absolute_path.endswith(".js"):
                raise web.HTTPError(404)
            return super().validate_absolute_path(root, absolute_path)

    try:
        import bokeh

        js_dir = bokeh_js_dir()
        version = bokeh.__version__
    except ImportError:
        serverapp.log.warning("torchmagic: bokeh is not installed; plots will not render")
        return
    if not os.path.isfile(os.path.join(js_dir, "bokeh.min.js")):
        serverapp.log.warning("torchmagic: no bokeh.min.js in %s; plots will not render", js_dir)
        return

    web_app = serverapp.web_app
    base_url = web_app.settings.get("base_url", "/")
    route = url_path_join(base_url, BOKEH_STATIC_PATH, "(.*)")
    web_app.add_handlers(".*$", [(route, BokehJSHandler, {"path": js_dir})])
    web_app.settings.setdefault("page_config_data", {})[BOKEH_VERSION_OPTION] = version
    serverapp.log.info("torchmagic: serving BokehJS %s from %s at %s", version, js_dir, route)


# Older jupyter_server / notebook names for the same hooks.
load_jupyter_server_extension = _load_jupyter_server_extension
