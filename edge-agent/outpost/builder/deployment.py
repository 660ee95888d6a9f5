"""A digest-pinned deployment from iotedgedev's ``deployment.template.json``, validated before it is written.

Called by the ``outpost build --template`` command after the images are pushed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from outpost.builder.template import TemplateError, expand_document
from outpost.errors import ManifestError
from outpost.manifest import check_document

__all__ = ["render_deployment"]

# iotedgedev's template-only keys, dropped from the generated deployment like iotedgedev does.
_TEMPLATE_ONLY = ("$schema-template",)


def render_deployment(
    template_text: str,
    images: Mapping[str, Mapping[str, str]],
    env: Mapping[str, str],
    *,
    source: str,
) -> dict[str, Any]:
    """Expand the template's placeholders and validate the result as a manifest or deployment.

    ``images`` maps a module name to ``{"": list_ref, "arm64v8": platform_ref, ...}``. Raises
    :class:`TemplateError` for a placeholder it cannot expand and :class:`ManifestError` (every
    problem, with JSON pointers) when the expanded document is not a valid manifest or deployment.
    """
    try:
        doc = json.loads(template_text)
    except ValueError as exc:
        raise TemplateError(source, "", f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise TemplateError(source, "", "expected a JSON object")
    for key in _TEMPLATE_ONLY:
        doc.pop(key, None)
    expanded = expand_document(doc, env, source=source, modules=images)
    _, report = check_document(expanded)
    if not report.ok:
        raise ManifestError(report.problems)
    return dict(expanded)
