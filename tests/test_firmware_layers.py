"""The firmware's layers hold: no import cycle, no layer importing one above it, hardware only in
the HAL (issue #17; docs/architecture.md, The firmware).

Imports are read with ast from every firmware/**/*.py, those inside functions included: the
firmware imports lazily to keep its heap small, and a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"

# What each layer of device/ may import besides itself (lowest first). `device` itself (the
# package root: VERSION, forget) is open to every layer.
ALLOWED = {
    "board": set(),
    "drivers": {"board"},
    "evidence": set(),
    "link": {"board", "evidence"},
    "roles": {"board", "drivers", "evidence"},
    "app": {"board", "drivers", "evidence", "link", "roles"},
}
HARDWARE = {"machine", "network", "neopixel", "esp", "esp32", "bluetooth"}
HAL = "device.board.hal"
# The one place device/ names sim/: the HAL's board selection, boards.open_hal (`"hal": "sim"` in
# a board file opens the unix port's simulated board; a board image has no sim/ and never takes
# that branch). It is not in hal.py, which sim.hal_sim imports for the HAL's names.
SIM_DOOR = ("device.board.boards", "sim.hal_sim")


def module_name(path: Path, root: Path = FIRMWARE) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, name: str, known: set[str]) -> set[str]:
    """Every module `source` (module `name`) imports, at any depth of the code. `from p import x`
    counts as p.x where p.x is a firmware module, else as p."""
    found: set[str] = set()
    package = name if name in known and _is_package(name, known) else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return found


def _is_package(name: str, known: set[str]) -> bool:
    return any(other.startswith(name + ".") for other in known)


def firmware_graph(root: Path = FIRMWARE) -> dict[str, set[str]]:
    """Module -> the modules and outside names it imports, for every .py under `root`."""
    files = {
        module_name(p, root): p for p in sorted(root.rglob("*.py")) if p.name != "manifest.py"
    }
    known = set(files)
    return {name: imports_of(path.read_text(), name, known) for name, path in files.items()}


def layer_of(name: str) -> str | None:
    """device.<layer>.x -> layer; device.app -> "app"; None outside the layered package."""
    parts = name.split(".")
    if parts[0] != "device" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ALLOWED else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles among the graph's own modules (Tarjan's strongly connected components
    of more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def problems(graph: dict[str, set[str]]) -> list[str]:
    """Every broken rule of the firmware's layering, one line each."""
    out = [f"import cycle: {' <-> '.join(cycle)}" for cycle in cycles(graph)]
    for name, targets in sorted(graph.items()):
        own = layer_of(name)
        for target in sorted(targets):
            top = target.split(".")[0]
            if top in HARDWARE and name != HAL:
                out.append(f"{name} imports {target}: only {HAL} touches the hardware")
            if name.startswith("device.") and top == "sim" and (name, target) != SIM_DOOR:
                out.append(f"{name} imports {target}: device/ never imports sim/")
            other = layer_of(target)
            if own and other and other != own and other not in ALLOWED[own]:
                out.append(f"{name} imports {target}: the {own} layer may not import {other}")
    return out


def test_the_firmware_keeps_its_layers():
    graph = firmware_graph()
    assert "device.drivers.pn532" in graph and "device.app" in graph  # the tree was read
    assert problems(graph) == []


def test_every_device_module_sits_in_a_layer():
    # a module dropped straight into device/ would escape the layer rules above
    loose = [n for n in firmware_graph() if n.startswith("device.") and layer_of(n) is None]
    assert loose == []


def test_lazy_imports_inside_functions_count():
    source = "def start():\n    from device.roles import wiring\n"
    known = {"device.roles", "device.roles.wiring", "device.link.clock"}
    assert imports_of(source, "device.link.clock", known) == {"device.roles.wiring"}


def test_a_cycle_is_found():
    graph = {
        "device.drivers.pn532": {"device.drivers.pn532_i2c", "time"},
        "device.drivers.pn532_i2c": {"device.drivers.pn532"},
        "device.drivers.cards": {"device.drivers.pn532"},
    }
    assert cycles(graph) == [["device.drivers.pn532", "device.drivers.pn532_i2c"]]
    assert problems(graph) == ["import cycle: device.drivers.pn532 <-> device.drivers.pn532_i2c"]


def test_an_import_from_a_higher_layer_is_refused():
    graph = {
        "device.drivers.cards": {"device.roles.reader"},
        "device.roles.reader": {"device.drivers.pn532"},
        "device.drivers.pn532": set(),
    }
    assert problems(graph) == [
        "device.drivers.cards imports device.roles.reader: the drivers layer may not import roles"
    ]


def test_hardware_and_sim_stay_behind_the_hal():
    graph = {
        "device.roles.lock": {"machine", "device.board.hal"},
        "device.board.hal": {"machine", "sim.hal_sim"},
        "device.board.boards": {"sim.hal_sim", "device.board.hal"},
        "device.app": {"sim.control"},
        "sim.hal_sim": {"device.board.hal"},
    }
    assert problems(graph) == [
        "import cycle: device.board.hal <-> sim.hal_sim",
        "device.app imports sim.control: device/ never imports sim/",
        "device.board.hal imports sim.hal_sim: device/ never imports sim/",
        "device.roles.lock imports machine: only device.board.hal touches the hardware",
    ]
