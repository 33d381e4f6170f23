"""Name -> implementation lookup that fails loudly and lists the valid names."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of implementations, e.g. ``OPS = Registry("augment.op")``.

    Example::

        OPS.register("mixup")(Mixup)
        OPS.get("mixup")  # -> Mixup
        OPS.get("mixpu")  # ValueError: augment.op = 'mixpu': choose one of ... (did you mean 'mixup'?)
    """

    def __init__(self, key: str):
        self.key = key
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            assert name not in self._items, f"{self.key}: {name} registered twice"
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            from .config import ConfigError

            close = difflib.get_close_matches(str(name), self._items, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{self.key} = {name!r}: choose one of {', '.join(self._items)}{hint}")
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
