"""Signing and admission: canonical form, keys, signatures, trust store, the device's verdicts."""

from __future__ import annotations

import copy
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from outpost.errors import InputError, ManifestError
from outpost.trust.admission import Admission, ContentRefusedError
from outpost.trust.canonical import canonical_bytes
from outpost.trust.content import payload, sign_document
from outpost.trust.keys import KeyFileError, generate, key_id, read_private, read_public
from outpost.trust.store import TrustStore

DIGEST = "sha256:" + "ab" * 32
ROOT = Path(__file__).resolve().parents[3]


def manifest(image: str = f"outpost-test/behave@{DIGEST}") -> dict[str, Any]:
    doc = json.loads((ROOT / "manifests" / "motor-monitor.json").read_text())
    desired = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
    for spec in [desired["systemModules"]["edgeHub"], *desired["modules"].values()]:
        spec["settings"]["image"] = image
    return doc


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    generate(tmp_path / "old")
    generate(tmp_path / "new")
    generate(tmp_path / "stranger")
    return {name: tmp_path / name for name in ("old", "new", "stranger")}


def gate(tmp_path: Path, *pubs: Path, **kw: Any) -> Admission:
    store = TrustStore(tmp_path / "state" / "trust")
    for pub in pubs:
        store.add(read_public(pub.with_suffix(".pub")), pub.name)
    warnings: list[str] = []
    return Admission(store, on_warning=warnings.append, **kw)


def signed(doc: dict[str, Any], prefix: Path) -> dict[str, Any]:
    return sign_document(doc, read_private(prefix.with_suffix(".key")))


# --- canonical form ----------------------------------------------------------------------------


def test_canonical_form_is_rfc8785():
    # RFC 8785 section 3.2.2-style: sorted keys, no whitespace, ES6 numbers, minimal escapes
    doc = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "b": '\u20ac$\u000f\nA\'B"\\\\"/',
    }
    assert canonical_bytes(doc) == (
        b'{"b":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/","numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27]}'
    )
    assert canonical_bytes({"b": 1, "a": {"d": 1.0, "c": True}}) == canonical_bytes({"a": {"c": True, "d": 1}, "b": 1})


def test_values_json_cannot_carry_exactly_are_refused():
    with pytest.raises(InputError, match="canonicalise"):
        canonical_bytes({"x": float("nan")})
    with pytest.raises(InputError):
        canonical_bytes({"x": 2**60})


# --- keys -------------------------------------------------------------------------------------


def test_generate_writes_a_private_key_only_the_owner_reads(tmp_path):
    pair = generate(tmp_path / "keys" / "operator")
    assert stat.S_IMODE(pair.private.stat().st_mode) == 0o600
    assert pair.public.name == "operator.pub"
    assert key_id(read_public(pair.public)) == pair.key_id == key_id(read_private(pair.private).public_key())
    with pytest.raises(KeyFileError, match="exists"):
        generate(tmp_path / "keys" / "operator")
    assert generate(tmp_path / "keys" / "operator", force=True).key_id != pair.key_id


def test_a_private_key_is_not_accepted_as_a_public_one(tmp_path):
    pair = generate(tmp_path / "op")
    with pytest.raises(KeyFileError, match="private key"):
        read_public(pair.private)
    (tmp_path / "junk.pub").write_text("hello")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        read_public(tmp_path / "junk.pub")
    with pytest.raises(KeyFileError, match="cannot read"):
        read_private(tmp_path / "missing.key")


# --- signatures and admission -----------------------------------------------------------------


def test_signature_covers_the_document_but_not_itself(keys):
    doc = manifest()
    one = signed(doc, keys["old"])
    assert payload(one) == payload(doc)
    assert one["outpost"]["signatures"][0]["keyId"] == key_id(read_public(keys["old"].with_suffix(".pub")))
    both = signed(one, keys["new"])
    assert [s["keyId"] for s in both["outpost"]["signatures"]] == [
        s["keyId"] for s in [*one["outpost"]["signatures"], signed(doc, keys["new"])["outpost"]["signatures"][0]]
    ]
    assert len(signed(both, keys["new"])["outpost"]["signatures"]) == 2  # same key replaces, not appends
    assert doc.get("outpost") is None  # the input is not modified


def test_without_a_trust_root_anything_valid_is_admitted_and_tags_warn(tmp_path, keys):
    admission = gate(tmp_path)
    assert admission(manifest()).key_id == ""
    result = admission(manifest(image="outpost-test/behave:1"))
    assert len(result.warnings) == 5
    assert "named by tag only" in result.warnings[0]
    assert result.warnings[0].startswith("/modulesContent/$edgeAgent/properties.desired/")


def test_trusted_content_is_admitted_and_the_rest_refused_with_the_reason(tmp_path, keys):
    admission = gate(tmp_path, keys["old"])
    assert admission(signed(manifest(), keys["old"])).key_id == key_id(read_public(keys["old"].with_suffix(".pub")))

    with pytest.raises(ContentRefusedError, match="unsigned content refused") as unsigned:
        admission(manifest())
    assert unsigned.value.problems[0].pointer == "/outpost/signatures"

    with pytest.raises(ContentRefusedError, match="does not trust"):
        admission(signed(manifest(), keys["stranger"]))

    tampered = signed(manifest(), keys["old"])
    tampered["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["motor-sensor"]["env"] = {
        "X": {"value": "1"}
    }
    with pytest.raises(ContentRefusedError, match="changed after signing"):
        admission(tampered)
    assert isinstance(unsigned.value, ManifestError)  # refused like any bad manifest: nothing is touched


def test_a_flipped_signature_byte_is_refused(tmp_path, keys):
    doc = signed(manifest(), keys["old"])
    sig = doc["outpost"]["signatures"][0]["sig"]
    doc["outpost"]["signatures"][0]["sig"] = ("B" if sig[0] != "B" else "C") + sig[1:]
    with pytest.raises(ContentRefusedError, match="changed after signing"):
        gate(tmp_path, keys["old"])(doc)
    doc["outpost"]["signatures"][0]["sig"] = "not base64!"
    with pytest.raises(ManifestError) as bad:
        gate(tmp_path, keys["old"])(doc)
    assert bad.value.problems[0].pointer == "/outpost/signatures/0"


def test_rotation_two_keys_then_the_old_one_removed(tmp_path, keys):
    admission = gate(tmp_path, keys["old"], keys["new"])
    by_old, by_new = signed(manifest(), keys["old"]), signed(manifest(), keys["new"])
    assert admission(by_old).key_id
    assert admission(by_new).key_id
    dual = signed(by_old, keys["new"])
    assert admission(dual).key_id
    assert admission.store.remove(key_id(read_public(keys["old"].with_suffix(".pub"))))
    assert admission(by_new).key_id
    assert admission(dual).key_id  # still carries the new key's signature
    with pytest.raises(ContentRefusedError, match="does not trust"):
        admission(by_old)


def test_require_digests_refuses_tag_only_images_by_pointer(tmp_path, keys):
    admission = gate(tmp_path, keys["old"], require_digests=True)
    with pytest.raises(ContentRefusedError) as refused:
        admission(signed(manifest(image="outpost-test/behave:1"), keys["old"]))
    pointers = {p.pointer for p in refused.value.problems}
    assert "/modulesContent/$edgeAgent/properties.desired/modules/motor-sensor/settings/image" in pointers
    assert "/modulesContent/$edgeAgent/properties.desired/systemModules/edgeHub/settings/image" in pointers
    assert admission(signed(manifest(), keys["old"])).warnings == ()
    admission.store.set_require_digests(True)
    assert Admission(admission.store).require_digests is None
    with pytest.raises(ContentRefusedError):
        Admission(admission.store)(signed(manifest(image="x:1"), keys["old"]))


def test_a_damaged_trust_store_refuses_instead_of_trusting_nothing(tmp_path):
    store = TrustStore(tmp_path / "trust")
    store.path.mkdir()
    store.file.write_text("{not json")
    with pytest.raises(InputError, match="unreadable trust store"):
        Admission(store)(manifest())


def test_signing_does_not_depend_on_key_order_or_whitespace(tmp_path, keys):
    doc = signed(manifest(), keys["old"])
    reordered = json.loads(json.dumps(doc, sort_keys=True, indent=4))
    assert gate(tmp_path, keys["old"])(copy.deepcopy(reordered)).key_id
