"""Name -> implementation lookup that fails loudly and lists the valid names."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable
from typing import Generic, Optional, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of implementations, e.g. ``OPS = Registry("augment.op")``.

    A registry with an entry-point ``group`` (models, data) also finds the entry points of that
    group in installed packages, and takes a dotted path ``module:attr`` (:mod:`.references`).

    Example::

        OPS.register("mixup")(Mixup)
        OPS.get("mixup")  # -> Mixup
        OPS.get("mixpu")  # ValueError: augment.op = 'mixpu': choose one of ... (did you mean 'mixup'?)
    """

    def __init__(self, key: str, group: Optional[str] = None):
        self.key = key
        self.group = group
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        from .references import note_registration

        note_registration(sys._getframe(1).f_globals.get("__name__"))  # for a local Ray's workers

        def add(item: T) -> T:
            assert name not in self._items, f"{self.key}: {name} registered twice"
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        from . import references
        from .config import ConfigError

        if self.group is not None and references.is_dotted(name):
            return references.load_dotted(self.key, name)
        if references.import_registering_modules(self.key, name) and name in self._items:
            return self._items[name]  # registered by a user's module that the driver had imported
        if self.group is not None:
            found = references.installed(self.group).get(name)
            if found is not None:
                return references.load_entry_point(self.key, found)
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        example = f"mypkg.{self.group.rsplit('.', 1)[-1]}:build" if self.group else ""
        more = f", or a dotted path module:builder (e.g. {example}){hint}" if self.group else hint
        raise ConfigError(f"{self.key} = {name!r}: choose one of {', '.join(names)}{more}")

    def names(self) -> list[str]:
        """The built-in names, then (with a ``group``) the installed entry points' names."""
        if self.group is None:
            return list(self._items)
        from .references import installed

        return list(self._items) + [n for n in installed(self.group) if n not in self._items]

    def __contains__(self, name: str) -> bool:
        return name in self.names()
