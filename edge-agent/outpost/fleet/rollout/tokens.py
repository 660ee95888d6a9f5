"""Model download tokens: how a module downloads its model with its device's credential, and only that.

The anomaly detector cannot hold the device credential (the agent does; modules never see it),
yet the registry must know which device is downloading. So the fleet stamps every model of its
own registry that a device's assignment names: the desired ``model.url`` becomes the device's
own download route and gains a ``token``::

    {"version": "2", "url": "https://fleet/api/v1/models/motor/2/content", "sha256": "ab.."}
 -> {"version": "2", "url": "https://fleet/api/v1/devices/gw-01/models/motor/2/content",
     "sha256": "ab..", "token": "mdl.<HMAC>"}

The token is an HMAC-SHA256 of (device, model name, version, sha256) keyed with the device's
stored credential hash: it is derived from the device's own credential, proves nothing but "this
device may fetch these bytes", is refused on every other route (it does not parse as a
credential), at another device's route, for another model, once the device is deactivated or
re-activated (its credential hash changes), and once the device's deployment no longer names
the model (checked at each download). It travels in the module's desired properties, which the
hub hands to that module alone, and is never reported back. Being a function of the assignment,
it leaves the assignment's ETag unchanged: no extra deployment round trips.

Pure: :func:`stamp` works on a manifest document; :class:`outpost.fleet.rollout.access.ModelAccess`
wires it to the store.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

__all__ = ["TOKEN_PREFIX", "device_model_url", "model_token", "registry_ref", "stamp", "token_matches"]

TOKEN_PREFIX = "mdl."
DESIRED = "properties.desired"
_REGISTRY_PATH = re.compile(r"/api/v1/models/(?P<name>[^/?#]+)/(?P<version>[^/?#]+)/content")


def model_token(credential_hash: str, device_id: str, name: str, version: str, sha256: str) -> str:
    message = "\x00".join(("outpost-model-download", device_id, name, version, sha256.lower())).encode()
    mac = hmac.new(credential_hash.encode(), message, hashlib.sha256).digest()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def token_matches(presented: str, credential_hash: str | None, *, device_id: str, name: str, version: str,
                  sha256: str) -> bool:  # fmt: skip
    if credential_hash is None or not presented.startswith(TOKEN_PREFIX):
        return False
    return hmac.compare_digest(presented, model_token(credential_hash, device_id, name, version, sha256))


def registry_ref(url: str, base_url: str) -> tuple[str, str] | None:
    """(name, version) when ``url`` is this fleet's registry download URL, else None."""
    base = base_url.rstrip("/")
    if not url.startswith(base + "/"):
        return None
    match = _REGISTRY_PATH.fullmatch(url[len(base) :])
    if match is None:
        return None
    return urllib.parse.unquote(match["name"]), urllib.parse.unquote(match["version"])


def device_model_url(base_url: str, device_id: str, name: str, version: str) -> str:
    quote = urllib.parse.quote
    path = f"/api/v1/devices/{quote(device_id, safe='')}/models/{quote(name, safe='')}/{quote(version, safe='')}"
    return f"{base_url.rstrip('/')}{path}/content"


def stamp(document: Mapping[str, Any], device_id: str, base_url: str, credential_hash: str) -> dict[str, Any] | None:
    """The document with every registry model of this fleet given to the device with its token,
    or None when it names none (the caller then serves the document unchanged)."""
    content = document.get("modulesContent")
    if not isinstance(content, Mapping):
        return None
    stamped: dict[str, Any] = {}
    for module, entry in content.items():
        desired = entry.get(DESIRED) if isinstance(entry, Mapping) else None
        model = desired.get("model") if isinstance(desired, Mapping) else None
        if not isinstance(model, Mapping) or not isinstance(model.get("url"), str):
            continue
        ref = registry_ref(model["url"], base_url)
        sha = model.get("sha256")
        if ref is None or not isinstance(sha, str):
            continue
        new_entry = copy.deepcopy(dict(entry))
        new_entry[DESIRED]["model"] = {
            **model,
            "url": device_model_url(base_url, device_id, *ref),
            "token": model_token(credential_hash, device_id, ref[0], ref[1], sha),
        }
        stamped[module] = new_entry
    if not stamped:
        return None
    return {**document, "modulesContent": {**content, **stamped}}
