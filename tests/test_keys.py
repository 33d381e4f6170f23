"""keys.py spells each shared key once: no other module of the package writes one as a literal."""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pytest

from adalase_tune import keys

PACKAGE = Path(keys.__file__).parent
NAMES = {v for n, v in vars(keys).items() if n.isupper() and isinstance(v, str) and "/" in v}


def literals(path: Path) -> list[tuple[int, str]]:
    """The plain (not f-) string literals of a module, with their line numbers."""
    toks = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [(t.start[0], t.string[1:-1]) for t in toks if t.type == tokenize.STRING and t.string[0] in "\"'"]


def test_the_keys_are_namespaced_with_one_separator() -> None:
    assert NAMES and all(v.count("/") == 1 and "." not in v and ":" not in v for v in NAMES)
    assert keys.weight_key("input/translate") == "da_prob/input:translate"
    assert keys.tune_key("adalase.eta") == "adalase/eta" and keys.q("input") == "adalase/q/input"


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if p.name != "keys.py"), ids=str)
def test_no_module_spells_a_key_itself(path: Path) -> None:
    found = [(line, s) for line, s in literals(path) if s in NAMES]
    assert not found, f"{path.relative_to(PACKAGE)} spells keys that keys.py defines: {found}; import them"
