"""Make a clash of misgen's top-level package names with another distribution's loud.

misgen installs five generic top-level packages: envs, agents, analysis, experiments and configs. Another
distribution may install a package of the same name (openai-agents installs ``agents``, PyPI has an
``envs``, many projects ship a ``configs``), or a directory on ``sys.path`` may hold one; Python then
silently imports whichever comes first. So each of our packages calls :func:`ensure_ours` from its
``__init__``: all five names must resolve to packages of one directory (this file's parent's parent), each
``__init__.py`` calling this check; otherwise an ImportError names the other package, its distribution where
``importlib.metadata`` knows it, and the fix (a virtual environment of misgen's own).

It lives in ``configs``, the one package with no dependencies (``envs`` imports gymnasium), so that every
package can import it at no cost: the standard library only, the five import specs looked up (nothing
imported) and five small files read, once a process. Editable installs, plain installs and runs from the
repository root all pass the same way. The packages import it with a fallback for a foreign ``configs``.
"""

from __future__ import annotations

import os
from importlib.util import find_spec

PACKAGES = ("envs", "agents", "analysis", "experiments", "configs")
# Every __init__.py of ours contains this call; another distribution's package of the same name does not.
_MARKER = b"ensure_ours(__name__)"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_checked = False


def ensure_ours(importing: str) -> None:
    """Raise ImportError unless every misgen top-level package resolves to this project's copy."""
    global _checked
    if _checked:
        return
    for name in PACKAGES:
        origin = _origin(name)
        if origin is None or not _is_ours(origin):
            raise ImportError(_message(name, origin, importing))
    _checked = True


def _origin(name: str) -> str | None:
    try:
        spec = find_spec(name)  # the module already imported, or where an import would find it
    except (ImportError, ValueError):
        return None
    return None if spec is None else spec.origin


def _is_ours(origin: str) -> bool:
    if os.path.basename(origin) != "__init__.py":
        return False
    parent = os.path.dirname(os.path.dirname(os.path.abspath(origin)))
    if parent != _ROOT and not _same_file(parent, _ROOT):
        return False
    try:  # the same directory, but another distribution's files may have been installed over ours
        with open(origin, "rb") as file:
            return _MARKER in file.read()
    except OSError:
        return False


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _distributions(name: str) -> list[str]:
    try:
        from importlib.metadata import packages_distributions

        return sorted({d for d in packages_distributions().get(name, []) if d.lower() != "misgen"})
    except Exception:  # metadata of some installed distribution unreadable: name none
        return []


def _message(name: str, origin: str | None, importing: str) -> str:
    ours = os.path.join(_ROOT, name)
    dists = _distributions(name)
    if origin is None:
        found = f"cannot be found (misgen's is {ours})"
    else:
        found = f"resolves to {origin}, not to misgen's {ours}"
    if dists:
        whose = f"it belongs to the installed distribution {', '.join(dists)}"
    elif origin is not None:
        whose = "it is not misgen's (a directory on sys.path or PYTHONPATH, or the working directory, holds it)"
    else:
        whose = "misgen's copy is missing"
    return (
        f"misgen: the top-level package {name!r} {found} (found on importing misgen's {importing!r}); {whose}. "
        f"misgen installs the top-level packages {', '.join(PACKAGES)}, which clash with other packages of those "
        "names: install misgen in a virtual environment of its own (python3 -m venv .venv && .venv/bin/pip "
        "install -e .), or take the other package off sys.path."
    )
