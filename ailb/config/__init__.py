"""Configuration: YAML with environment variables over it, validated once into frozen values.

``settings`` is the only module that imports Dynaconf; ``parse`` (with ``values``,
``deployments`` and ``memory``) turns the merged mapping into ``schema``'s frozen dataclasses,
naming the bad key in every error; ``view`` is the effective configuration with secrets masked.
Nothing is imported here: importing the package has no side effects.
"""
