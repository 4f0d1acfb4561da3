"""Writes docs/architecture.md and its picture from the package's imports.

The rooms of keras_adalink (a subpackage, or a group of top-level modules)
sit on floors: a module may import from its own floor or a lower one, never
a higher one, and module imports form no circle. `ROOMS` is the one place
the floors are written; tests/test_architecture.py checks the code against
it and the page against this script.

    python docs/make_architecture.py          # rewrite page and picture
    python docs/make_architecture.py --check  # compare the page
"""

import ast
import collections
import pathlib
import sys

import generated_page

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_adalink"
PAGE = ROOT / "docs" / "architecture.md"
PICTURE = ROOT / "docs" / "images" / "architecture.png"

# (floor, room, modules (dotted, under keras_adalink), what it owns).
ROOMS = [
    (0, "graph", ["graph"], "every use of private Keras/KerasHub API"),
    (
        0,
        "support",
        ["version", "quiet", "datasets", "image_datasets", "heads"]
        + ["metrics", "schedules"],
        "data loaders, metrics, schedules, the mean-pooled head",
    ),
    (1, "layers", ["layers", "validation"], "AdaLink and the routers"),
    (1, "sites", ["sites"], "where the adapter goes: the rule, the table"),
    (2, "models", ["models"], "AdaLinkBackbone, the adapted graph"),
    (
        3,
        "library",
        ["adapt", "adapter_file", "compose", "compose_sources"]
        + ["distribution", "export", "export_peft", "fold", "baselines"]
        + ["quantization", "live", "slot_lock", "presets"],
        "adapt, files, presets, fold, compose, live tasks, export "
        "(SavedModel, PEFT), layouts, "
        "baselines, quantization",
    ),
    (4, "api", ["__init__", "demo"], "the public API, the demo"),
    (5, "cli", ["cli"], "the keras-adalink command"),
]


def modules():
    """`{dotted module name: path}` of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def room_of(module):
    rest = module.removeprefix("keras_adalink").lstrip(".") or "__init__"
    for floor, room, members, _ in ROOMS:
        for member in members:
            if rest == member or rest.startswith(member + "."):
                return floor, room
    raise KeyError(f"{module} is in no room of docs/make_architecture.py")


def imports():
    """`{module: {imported module of ours}}`, function-level imports too."""
    known = modules()
    graph = {}
    for name, path in known.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if not node.module.startswith("keras_adalink"):
                    continue
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in known else node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in known)
        graph[name] = {m for m in found if m in known and m != name}
    return graph


def violations():
    """Imports from a higher floor, as readable lines."""
    found = []
    for module, targets in sorted(imports().items()):
        floor, room = room_of(module)
        for target in sorted(targets):
            target_floor, target_room = room_of(target)
            if target_floor > floor:
                found.append(
                    f"{module} ({room}, floor {floor}) imports {target} "
                    f"({target_room}, floor {target_floor})"
                )
    return found


def circles():
    """Strongly connected groups of modules (each a circle of imports)."""
    graph = imports()
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def room_edges():
    edges = collections.Counter()
    for module, targets in imports().items():
        for target in targets:
            a, b = room_of(module)[1], room_of(target)[1]
            if a != b:
                edges[(a, b)] += 1
    return edges


def render():
    edges = room_edges()
    lines = [
        "# Architecture",
        "",
        "Generated by `docs/make_architecture.py` from the package's own "
        "imports; `tests/test_architecture.py` fails when a module imports "
        "from a higher floor, when imports form a circle, when private "
        "Keras/KerasHub API is used outside `keras_adalink/graph.py`, or "
        "when this page is stale.",
        "",
        "![Rooms of keras_adalink and their imports](images/architecture.png)",
        "",
        "The data path reads one way: embeddings -> AdaLink / router -> "
        "frozen blocks -> head. `sites` finds where in a backbone the "
        "adapter goes (`rule.py` reads any functional graph; `families.py` "
        "is the one table of the families that need more, each with its "
        "reason); `models` builds the adapted graph there; the library "
        "verbs (`adapt`, `fold`, `compose`, files, export) work on adapted "
        "models; the CLI drives them.",
        "",
        "| floor | room | modules | owns | imports from |",
        "|---|---|---|---|---|",
    ]
    for floor, room, members, owns in ROOMS:
        uses = sorted({b for (a, b) in edges if a == room})
        lines.append(
            f"| {floor} | `{room}` | "
            + ", ".join(f"`{m}`" for m in members)
            + f" | {owns} | "
            + (", ".join(f"`{u}`" for u in uses) or "—")
            + " |"
        )
    lines += [
        "",
        "A module may import from its own floor or a lower one. Private "
        "Keras and KerasHub names (`keras.src`, `_run_through_graph`, "
        "`_inbound_nodes`, ...) appear only in `graph.py`, each listed in "
        "`graph.PRIVATE_API` with the version it was checked against; "
        "`tests/test_graph.py` names the symbol that a Keras upgrade "
        "removed.",
        "",
        "Importing the package has no side effects beyond its imports. The "
        "console script's entry point, `keras_adalink_launcher.py`, lives "
        "beside the package: it asks for the quiet start-up "
        "(`KERAS_ADALINK_QUIET_START`, `quiet.py`) before anything imports "
        "the package and, with it, TensorFlow.",
    ]
    return "\n".join(lines) + "\n"


def draw(path=PICTURE):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floors = collections.defaultdict(list)
    for floor, room, *_ in ROOMS:
        floors[floor].append(room)
    place = {}
    for floor, rooms in floors.items():
        for i, room in enumerate(rooms):
            place[room] = ((i + 1) / (len(rooms) + 1), floor)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for a, b in room_edges():
        (x0, y0), (x1, y1) = place[a], place[b]
        ax.annotate(
            "",
            xy=(x1, y1 + 0.22),
            xytext=(x0, y0 - 0.22),
            arrowprops=dict(arrowstyle="->", color="#6b7280", lw=0.8),
        )
    for room, (x, y) in place.items():
        ax.text(
            x,
            y,
            room,
            ha="center",
            va="center",
            fontsize=11,
            bbox=dict(boxstyle="round", fc="#d9dee6", ec="#6b7280"),
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, max(floors) + 0.6)
    ax.set_yticks(sorted(floors))
    ax.set_yticklabels([f"floor {f}" for f in sorted(floors)])
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title("keras_adalink: rooms and imports (arrows: imports)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(generated_page.main(PAGE, render, __doc__.splitlines()[0], draw))
