"""The only parts of :mod:`outpost.builder` that talk to Docker, registries and pip."""
