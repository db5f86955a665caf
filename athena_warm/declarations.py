"""Declarations beyond ``Mapping``: the registry and loading them from a module or TOML.

    from athena_warm.declarations import load_config, load_declarations, REGISTRY

``load_config(path)`` declares the mappings of a TOML file; ``load_declarations(app=, config=)``
imports a module and/or reads a TOML file (``$ATHENA_WARM_APP`` / ``$ATHENA_WARM_CONFIG``);
``REGISTRY`` holds every declaration of this process (a ``Registry``); ``unregister(name)``
removes one. A function author needs only ``athena_warm.Mapping``.
"""

from ._declare import REGISTRY, Mapping, Registry, load_config, load_declarations, unregister

__all__ = ["REGISTRY", "Mapping", "Registry", "load_config", "load_declarations", "unregister"]
