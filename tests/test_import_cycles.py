"""No import cycle among the modules of ``rrjobs``, ``TYPE_CHECKING`` imports included.

A cycle is a module that, through the modules it imports, imports itself again.
grimp (import-linter's graph) sees every ``import`` statement, also those under
``if TYPE_CHECKING:`` and inside functions, so a cycle that only type checkers
follow counts too: it still ties two modules into one unit.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import grimp
import pytest


def import_cycles(package: str) -> list[list[str]]:
    """Each import cycle among ``package``'s modules, as the modules in import order
    (the first imports the second, ..., the last the first), each cycle once."""
    graph = grimp.build_graph(package, cache_dir=None)
    found: dict[frozenset[str], list[str]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if importer == imported:
                found.setdefault(frozenset([importer]), [importer])
                continue
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycle = [importer, *back[:-1]]
                found.setdefault(frozenset(cycle), cycle)
    return sorted(found.values())


def describe(cycles: list[list[str]]) -> str:
    return "\n".join(" -> ".join([*cycle, cycle[0]]) for cycle in cycles)


def test_rrjobs_has_no_import_cycle() -> None:
    cycles = import_cycles("rrjobs")
    assert cycles == [], f"import cycles in src/rrjobs:\n{describe(cycles)}"


def test_the_check_reports_a_cycle_also_through_type_checking_imports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic import b\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\n\n"
                                  "if TYPE_CHECKING:\n    from cyclic.c import C\n")
    (package / "c.py").write_text("import cyclic.a\n\nC = 1\n")
    (package / "d.py").write_text("import cyclic.a\n")  # imports the cycle, is not in it
    (package / "e.py").write_text("import cyclic.e\n")  # imports itself
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    cycles = import_cycles("cyclic")
    assert cycles == [["cyclic.a", "cyclic.b", "cyclic.c"], ["cyclic.e"]]
    assert describe(cycles[:1]) == "cyclic.a -> cyclic.b -> cyclic.c -> cyclic.a"
