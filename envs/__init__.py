"""misgen environments. Importing this package registers the gymnasium ids below.

Kept light: the registrations name their entry points as strings, so torch and the cores are
imported only when an environment is made.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

# One explicit list of the suite's environments: (id, single entry point, vector entry point).
ENVIRONMENTS = (
    ("misgen/ArrowMaze-v0", "envs.arrow_maze:ArrowMazeEnv", "envs.arrow_maze:ArrowMazeVectorEnv"),
    ("misgen/KeysChests-v0", "envs.keys_chests:KeysChestsEnv", "envs.keys_chests:KeysChestsVectorEnv"),
)


def _register_all() -> None:
    for env_id, entry_point, vector_entry_point in ENVIRONMENTS:
        existing = registry.get(env_id)
        if existing is not None:
            if existing.entry_point != entry_point:
                raise RuntimeError(f"{env_id} is already registered with entry point {existing.entry_point}")
            continue
        register(id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point)


_register_all()
