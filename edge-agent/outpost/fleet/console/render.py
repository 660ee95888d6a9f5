"""The console's Jinja2 environment: autoescaping on for every template (user text is always text)."""

from __future__ import annotations

from typing import Any

import jinja2

__all__ = ["render"]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("outpost.fleet.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, **context: Any) -> str:
    return _ENV.get_template(template).render(**context)
