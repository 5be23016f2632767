"""Drawing analysis records and study results: terminal, JSON, HTML. Computes nothing new."""

import importlib as _importlib

_MODULES = ("explain", "findings", "html", "plain", "plots", "terminal")


def __getattr__(name: str):  # `adamtune.report.html.write_report(...)` after a plain `import adamtune`
    if name in _MODULES:
        return _importlib.import_module(f"adamtune.report.{name}")
    raise AttributeError(f"module 'adamtune.report' has no attribute {name!r}")
