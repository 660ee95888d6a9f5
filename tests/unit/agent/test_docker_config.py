"""``DockerRuntime._config``: the container config posted to the engine (pure; no engine needed)."""

from __future__ import annotations

from outpost.agent.adapters.docker_runtime import DockerRuntime
from outpost.agent.runtime import LABEL_MODULE
from outpost.agent.spec import ModuleSpec


def runtime() -> DockerRuntime:
    # _config only reads the namespace and the image pins: skip __init__, which connects to the engine.
    docker_runtime = DockerRuntime.__new__(DockerRuntime)
    docker_runtime.namespace = "default"
    docker_runtime._pins = dict
    return docker_runtime


def spec(name: str, binds: list[str] | None = None, state: str | None = "/var/lib/outpost/agent") -> ModuleSpec:
    host: dict[str, object] = {"NetworkMode": "host"}
    if binds is not None:
        host["Binds"] = binds
    return ModuleSpec(
        name=name,
        image=f"outpost/{name}:0.1.0",
        create_options={"HostConfig": host},
        env={"IOTEDGE_MODULEID": name, **({"OUTPOST_AGENT_STATE_DIR": state} if state else {})},
    )


def test_hub_gets_the_agent_state_root_at_the_same_path():
    config = runtime()._config(spec("edgeHub", binds=["certs:/certs:ro"]), "d1")
    assert config["HostConfig"]["Binds"] == ["certs:/certs:ro", "/var/lib/outpost:/var/lib/outpost"]
    assert "OUTPOST_AGENT_STATE_DIR=/var/lib/outpost/agent" in config["Env"]
    assert config["HostConfig"]["NetworkMode"] == "host"
    assert config["HostConfig"]["RestartPolicy"] == {"Name": "no"}
    assert config["Labels"][LABEL_MODULE] == "edgeHub"


def test_hub_bind_is_not_repeated_and_trailing_slash_is_ignored():
    config = runtime()._config(spec("edgeHub", binds=["/tmp/demo:/tmp/demo"], state="/tmp/demo/agent/"), "d1")
    assert config["HostConfig"]["Binds"] == ["/tmp/demo:/tmp/demo"]


def test_other_modules_and_a_hub_without_agent_state_get_no_bind():
    assert "Binds" not in runtime()._config(spec("fft-filter"), "d1")["HostConfig"]
    assert "Binds" not in runtime()._config(spec("edgeHub", state=None), "d1")["HostConfig"]


def test_create_options_of_the_spec_are_not_mutated():
    module = spec("edgeHub", binds=["a:/a"])
    runtime()._config(module, "d1")
    assert module.create_options["HostConfig"]["Binds"] == ["a:/a"]


def test_a_pinned_digest_runs_the_image_id_bundle_apply_recorded():
    from dataclasses import replace

    digest = "127.0.0.1:5000/app@sha256:" + "ab" * 32
    docker_runtime = runtime()
    docker_runtime._pins = lambda: {digest: "sha256:" + "cd" * 32}
    assert docker_runtime._config(replace(spec("app"), image=digest), "d1")["Image"] == "sha256:" + "cd" * 32
    assert docker_runtime._config(spec("app"), "d1")["Image"] == "outpost/app:0.1.0"  # others as named
