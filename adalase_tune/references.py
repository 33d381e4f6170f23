"""User code by reference: a dotted path ``module:attr`` or an installed entry point.

``model.name`` and ``data.name`` take a built-in name, the name of an entry point in the group
``adalase_tune.models`` / ``adalase_tune.data`` of an installed package, or ``module:attr``
(docs/extending.md). Nothing is registered inside the package: a Ray trial resolves the same
reference in its own process, so the module must be importable there too (:func:`import_path`).

Example::

    load_dotted("model.name", "mypkg.models:build")  # -> the callable mypkg.models.build
"""

from __future__ import annotations

import importlib
import os
import site
import sys
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any, Optional

from .config import ConfigError, _did_you_mean

IMPORT_FIX = "put its folder on PYTHONPATH (or run from that folder), or pip install its package"


def is_dotted(name: str) -> bool:
    return ":" in str(name)


def _import(key: str, ref: str, module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ConfigError(f"{key} = {ref!r}: no module named {err.name!r}; {IMPORT_FIX}") from None
        raise ConfigError(f"{key} = {ref!r}: importing {module_name} failed: {err}; fix that module") from None
    except Exception as err:  # the user's module raised while importing
        text = " ".join(str(err).split())[:300]
        raise ConfigError(
            f"{key} = {ref!r}: importing {module_name} failed: {type(err).__name__}: {text}; fix that module"
        ) from None


def load_dotted(key: str, ref: str) -> Any:
    """The callable that ``module:attr`` (``attr`` may be dotted, ``Class.build``) names."""
    module_name, _, attr = str(ref).partition(":")
    if not module_name or not attr or ":" in attr:
        raise ConfigError(f"{key} = {ref!r}: a dotted path has the form module:attribute, e.g. mypkg.models:build")
    obj = _import(key, ref, module_name)
    _note_loaded(module_name)
    where = module_name
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))]
            raise ConfigError(
                f"{key} = {ref!r}: {where} has no attribute {part!r}{_did_you_mean(part, names)}; "
                f"it defines {', '.join(names[:8])}"
            )
        obj, where = getattr(obj, part), f"{where}.{part}"
    if not callable(obj):
        raise ConfigError(f"{key} = {ref!r}: {where} is a {type(obj).__name__}, not a callable builder")
    return obj


def installed(group: str) -> dict[str, EntryPoint]:
    """The entry points of ``group`` in the installed distributions, by name (read every time:
    ``sys.path`` may have changed)."""
    return {ep.name: ep for ep in entry_points(group=group)}


def load_entry_point(key: str, ep: EntryPoint) -> Any:
    try:
        obj = ep.load()
    except Exception as err:
        text = " ".join(str(err).split())[:300]
        dist = f" of {ep.dist.name}" if ep.dist is not None else ""
        raise ConfigError(
            f"{key} = {ep.name!r}: the entry point {ep.value!r}{dist} (group {ep.group}) does not load: "
            f"{type(err).__name__}: {text}"
        ) from None
    if not callable(obj):
        raise ConfigError(f"{key} = {ep.name!r}: the entry point {ep.value!r} is not a callable builder")
    return obj


IMPORTS_VAR = "ADALASE_TUNE_IMPORTS"  # a local Ray's workers: the modules that registered names on the driver
_REGISTERING: list[str] = []


def note_registration(module: Optional[str]) -> None:
    """Remember the module that called ``Registry.register`` (a user's, not adalase_tune's; a script's
    ``__main__`` cannot be imported elsewhere and is left out)."""
    if module and module != "__main__" and module.split(".")[0] != "adalase_tune" and module not in _REGISTERING:
        _REGISTERING.append(module)


def registering_modules() -> list[str]:
    return list(_REGISTERING)


def import_registering_modules(key: str, name: str) -> bool:
    """Import the modules named in ``$ADALASE_TUNE_IMPORTS`` that are not imported yet (in a Ray
    worker: the driver's registrations happen again here). True when one was new."""
    new = [m for m in os.environ.get(IMPORTS_VAR, "").split(",") if m and m not in sys.modules]
    for module in new:
        _import(key, name, module)
    return bool(new)


def _system_dirs() -> list[str]:
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    sites = set(site.getsitepackages() + [site.getusersitepackages()])
    return sorted(prefixes | {os.path.realpath(p) for p in sites})


_LOADED: list[str] = []  # the modules dotted paths named in this process


def _note_loaded(module: str) -> None:
    if module.split(".")[0] != "adalase_tune" and module not in _LOADED:
        _LOADED.append(module)


def user_code() -> list[str]:
    """The user's own code this process uses by reference (dotted paths, registering modules), as
    the folders of their top-level packages or their single files, for Ray's ``py_modules``: a
    cluster's nodes get a copy, so nothing needs installing there. Installed packages (under
    site-packages, entry points among them) are left out: they must be installed on every node."""
    system = _system_dirs()
    out: list[str] = []
    for name in dict.fromkeys(m.split(".")[0] for m in _LOADED + _REGISTERING):
        module = sys.modules.get(name)
        paths = list(getattr(module, "__path__", None) or [getattr(module, "__file__", None) or ""])
        path = os.path.realpath(paths[0]) if paths[0] else ""
        inside = any(path == s or path.startswith(s + os.sep) for s in system)
        if path and not inside and path not in out:
            out.append(path)
    return out


def import_path() -> list[str]:
    """The folders of this process's ``sys.path`` that are the user's (not the interpreter's nor
    site-packages): what a local Ray's workers need on ``PYTHONPATH`` to import the same modules."""
    system = _system_dirs()
    out: list[str] = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        inside = any(path == s or path.startswith(s + os.sep) for s in system)
        if os.path.isdir(path) and not inside and path not in out:
            out.append(path)
    return out


__all__ = [
    "is_dotted",
    "load_dotted",
    "installed",
    "load_entry_point",
    "import_path",
    "user_code",
    "note_registration",
    "registering_modules",
    "import_registering_modules",
]
