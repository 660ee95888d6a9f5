"""I/O the command line needs for itself (the libraries the rest of Outpost keeps in its own adapters)."""
