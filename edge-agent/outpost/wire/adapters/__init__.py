"""The MQTT connection shared by the hub and the module SDK: the only wire module importing paho."""
