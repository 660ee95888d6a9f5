"""The only bundle modules that import I/O libraries (docker, urllib)."""
