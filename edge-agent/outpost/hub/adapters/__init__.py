"""The hub's adapters: the only hub modules that import paho, sqlite3, kafka or azure."""
