"""The engine stays free of notebook code, and importing the package does no work."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_core_imports_no_ipython_widgets_or_bokeh():
    out = _run("""
        import sys, torchmagic.core, torchmagic.core.monitor, torchmagic.api
        notebook = ('IPython', 'ipywidgets', 'bokeh', 'jupyter_bokeh', 'ipykernel')
        bad = sorted(m for m in sys.modules if m.split('.')[0] in notebook)
        print(bad)
    """)
    assert out == "[]"


def test_import_and_load_ext_import_no_widgets_and_leave_cuda_alone():
    out = _run("""
        import sys, torch
        from IPython.core.interactiveshell import InteractiveShell
        sh = InteractiveShell.instance()
        import torchmagic
        sh.run_line_magic('load_ext', 'torchmagic')
        sh.run_line_magic('load_ext', 'torchmagic')
        print('bokeh' in sys.modules, 'ipywidgets' in sys.modules, torch.cuda.is_initialized(),
              'train' in sh.magics_manager.magics['cell'])
        sh.run_line_magic('unload_ext', 'torchmagic')
        print('train' in sh.magics_manager.magics['cell'])
    """)
    lines = out.splitlines()
    assert "already loaded" in lines[0]  # loading twice only says so
    assert lines[-2:] == ["False False False True", "False"]
