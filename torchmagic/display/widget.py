"""The dashboard widget: one ipywidgets model whose view lives in the lab extension.

It holds the bokeh plots as a child ``BokehModel`` and takes every refresh as one custom
message (see :mod:`torchmagic.display.protocol`), so the traffic per refresh is one comm
message whatever the number of plots.
"""

from __future__ import annotations

import ipywidgets
from jupyter_bokeh import BokehModel
from traitlets import Instance, Unicode

from torchmagic._version import __version__
from torchmagic.display import protocol


class DashboardWidget(ipywidgets.DOMWidget):
    _model_name = Unicode("DashboardModel").tag(sync=True)
    _model_module = Unicode(protocol.MODULE_NAME).tag(sync=True)
    _model_module_version = Unicode(protocol.MODULE_VERSION).tag(sync=True)
    _view_name = Unicode("DashboardView").tag(sync=True)
    _view_module = Unicode(protocol.MODULE_NAME).tag(sync=True)
    _view_module_version = Unicode(protocol.MODULE_VERSION).tag(sync=True)

    plot = Instance(BokehModel, allow_none=True).tag(sync=True, **ipywidgets.widget_serialization)
    title = Unicode("").tag(sync=True)
    version = Unicode(__version__).tag(sync=True)

    def send_refresh(self, message: protocol.RefreshMessage, buffers: list[bytes]) -> None:
        self.send(dict(message), buffers=buffers)
