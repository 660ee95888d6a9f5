"""The emulated node's I/O: the MQTT link (paho) and HTTP (activation, model download)."""
