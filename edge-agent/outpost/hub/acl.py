"""Mosquitto's password file and ACL file for one device, rendered from the identities it serves.

Pure: ``BrokerIdentities`` -> text. Called by ``outpost.hub.adapters.mosquitto`` (which writes
the files and reloads the broker) and by tests. The rules are ``docs/hub.md`` ("ACLs generated
per module"), plus write access to the module's own ``status`` topic: the SDK publishes
``online`` there (retained) and its will publishes ``offline``, and Mosquitto 2.0 refuses a
CONNECT whose will topic the user may not write.

Passwords are derived (``outpost.wire.credentials``), never stored in a manifest. The password
file uses Mosquitto's own ``$7$`` format (PBKDF2-SHA512, 12-byte salt, 64-byte hash, standard
base64), byte-compatible with ``mosquitto_passwd -U``. The derived passwords are 256-bit random
values, so the iteration count only has to be accepted by Mosquitto, not slow down guessing.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from outpost.errors import InputError
from outpost.wire import topics
from outpost.wire.credentials import leaf_password, module_password

__all__ = [
    "HUB_USER",
    "BrokerIdentities",
    "acl_text",
    "hash_password",
    "identities_for",
    "leaf_rules",
    "module_rules",
    "password_file_text",
]

HUB_USER = "$hub"
ITERATIONS = 101  # mosquitto_passwd's default
_SALT_BYTES = 12
#: MQTT usernames/topic levels we accept: no separators, wildcards, whitespace or ':' (file syntax).
_NAME = re.compile(r"^[^/+#:\s\x00]+$")


@dataclass(frozen=True)
class BrokerIdentities:
    """Who may connect to the device's broker, with their plaintext passwords.

    ``modules`` and ``leaves`` map an id (which is also the MQTT username) to its password.
    """

    device: str
    hub_password: str
    modules: Mapping[str, str] = field(default_factory=dict)
    leaves: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name("device id", self.device)
        for name in [*self.modules, *self.leaves]:
            _check_name("module or leaf device id", name)
        clash = (set(self.modules) & set(self.leaves)) | ({HUB_USER} & (set(self.modules) | set(self.leaves)))
        if clash:
            raise InputError(f"broker usernames must be unique; used twice: {', '.join(sorted(clash))}")

    def users(self) -> dict[str, str]:
        """username -> plaintext password, the hub user first."""
        return {HUB_USER: self.hub_password, **self.modules, **self.leaves}


def identities_for(
    device: str, key: bytes, hub_password: str, modules: Sequence[str], leaves: Sequence[str] = ()
) -> BrokerIdentities:
    """The identities of a deployment: module and leaf passwords derived from the device key."""
    return BrokerIdentities(
        device=device,
        hub_password=hub_password,
        modules={m: module_password(key, m) for m in sorted(set(modules))},
        leaves={leaf: leaf_password(key, leaf) for leaf in sorted(set(leaves))},
    )


def _check_name(what: str, name: str) -> None:
    if not _NAME.match(name):
        raise InputError(f"{what} {name!r} cannot be used as an MQTT username or topic level")


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """Mosquitto's ``$7$`` hash of ``password`` (a fresh random salt unless one is given)."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def password_file_text(
    identities: BrokerIdentities, *, salt: Callable[[], bytes] = lambda: secrets.token_bytes(_SALT_BYTES)
) -> str:
    """The ``password_file`` contents: one ``user:$7$...`` line per identity."""
    lines = [f"{user}:{hash_password(pw, salt=salt())}" for user, pw in identities.users().items()]
    return "\n".join(lines) + "\n"


def module_rules(device: str, module: str) -> list[str]:
    """The ACL lines (after ``user``) of one module, exactly the topics docs/hub.md allows."""
    return [
        f"topic write {topics.output_topic(device, module, '#')}",
        f"topic write {topics.batch_outputs(device, module)}",
        f"topic write {topics.reported(device, module)}",
        f"topic write {topics.acks(device, module)}",
        f"topic write {topics.status(device, module)}",
        f"topic write {topics.method_response_prefix(device, module)}/#",
        f"topic read {topics.input_topic(device, module, '#')}",
        f"topic read {topics.batch_inputs(device, module)}",
        f"topic read {topics.desired_all(device, module)}",
        f"topic read {topics.method_requests(device, module)}",
        f"topic read {topics.receipts(device, module)}",
    ]


def leaf_rules(device: str, leaf: str) -> list[str]:
    """The ACL lines (after ``user``) of a leaf device ``leaf`` behind edge device ``device``: its
    telemetry and twin topics, its method requests, and responses below the edge device's methodres
    prefix for it (as a module answers)."""
    return [
        f"topic write {topics.leaf_events(leaf)}#",
        f"topic write {topics.leaf_topic(leaf, topics.LeafChannel.REPORTED)}",
        f"topic write {topics.method_response_prefix(device, leaf)}/#",
        f"topic read {topics.leaf_topic(leaf, topics.LeafChannel.DESIRED)}/#",
        f"topic read {topics.leaf_method_request(leaf, '#')}",
    ]


def acl_text(identities: BrokerIdentities) -> str:
    """The ``acl_file`` contents: no anonymous section; one ``user`` section per identity."""
    device = identities.device
    out = [
        "# Generated by Outpost (outpost.hub.acl): do not edit; rewritten when modules change.",
        "# No topic lines before the first 'user': anonymous clients get nothing.",
        "",
        f"user {HUB_USER}",
        "topic readwrite #",
    ]
    for module in identities.modules:
        out += ["", f"user {module}", *module_rules(device, module)]
    for leaf in identities.leaves:
        out += ["", f"user {leaf}", *leaf_rules(device, leaf)]
    return "\n".join(out) + "\n"
