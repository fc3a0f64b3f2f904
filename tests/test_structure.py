"""The shape of the package, read from the source with `ast` (scripts/import_graph.py): the import graph is a
DAG, imports sit at the top of their module, and each layer imports only the layers below it (docs/design.md §1).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rlhfkit.cli import COMMANDS
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.ppo import train_ppo

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

# Imported inside the functions that need them: extras a user may not have installed.
OPTIONAL = {"peft", "vllm", "psycopg", "pyinstrument"}


def _load_import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


G = _load_import_graph()
GRAPH = G.module_graph(SRC)


def _short(module: str) -> str:
    return module.removeprefix("rlhfkit.")


def _imports_of(prefix: str) -> dict[str, set[str]]:
    """module -> the rlhfkit modules it imports, for every module of the package or module `prefix`."""
    name = "rlhfkit." + prefix
    return {m: targets for m, targets in GRAPH.items() if m == name or m.startswith(name + ".")}


def _within(module: str, allowed: set[str]) -> bool:
    short = _short(module)
    return any(short == a or short.startswith(a + ".") for a in allowed)


def test_the_graph_reader_sees_the_package():
    """Guards the tests below against passing on an empty graph (a wrong path reads no modules)."""
    assert {"rlhfkit.cli", "rlhfkit.losses", "rlhfkit.train.ppo", "rlhfkit.label.app"} <= set(GRAPH)
    assert "rlhfkit.data.collate" in GRAPH["rlhfkit.losses"]


def test_no_import_cycle_among_rlhfkit_modules():
    assert G.cycles(GRAPH) == []


def test_cycles_are_found_when_there_is_one():
    """The cycle finder itself: a → b → c → a is one strongly connected component."""
    assert G.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_inside_a_function_except_optional_dependencies():
    inner = [f"{path}:{line} imports {top}" for path, line, top in G.inner_imports(SRC) if top not in OPTIONAL]
    assert inner == []


@pytest.mark.parametrize("package, allowed", [
    # the equations: pure tensor functions, and the one mask helper they share with the collators
    ("losses", {"data.collate"}),
    # safe writes (a full disk is one line): beside errors at the bottom
    ("storage", {"errors"}),
    # formats know nothing of what consumes them
    ("data", {"data", "config", "errors", "storage"}),
    # models load and call networks (and declare the option of their precision); they do not train, evaluate or
    # know the toy world
    ("models", {"models", "data", "losses", "errors", "storage", "config"}),
    # sampling calls a model, in the model's precision
    ("generation", {"data", "models"}),
    # rollout engines sample (generation) from models; they never train
    ("engines", {"engines", "generation", "models", "data", "config", "errors", "storage"}),
    # the labeling app stands alone: formats, errors, configs and itself
    ("label", {"label", "data", "errors", "config", "storage"}),
    # reward sources load and call reward models and the user's functions; they know no trainer and no world
    ("rewards", {"rewards", "models", "data", "errors", "config"}),
    # evaluation measures; it never runs a pipeline
    ("eval", {"eval", "config", "data", "engines", "errors", "generation", "models", "rewards", "train", "world"}),
])
def test_layer_imports_only_the_layers_below(package, allowed):
    modules = _imports_of(package)
    assert modules, f"no module found for {package}"
    wrong = sorted(f"{_short(m)} -> {_short(t)}" for m, targets in modules.items() for t in targets
                   if not _within(t, allowed))
    assert wrong == []


def _reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for target in GRAPH.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_trainers_never_reach_the_toy_world_its_gold_reward_is_a_registered_judge():
    trainers = list(_imports_of("train"))
    assert {"rlhfkit.train.ppo", "rlhfkit.train.reward"} <= set(trainers)
    wrong = {_short(m): sorted(_short(t) for t in _reachable(m) if t.startswith("rlhfkit.world"))
             for m in trainers}
    assert {m: w for m, w in wrong.items() if w} == {}
    assert "rlhfkit.rewards.sources" in GRAPH["rlhfkit.world.gold"]  # the world registers its judge


def test_demo_compare_and_loop_share_pipeline_and_never_import_each_other():
    commands = {"rlhfkit.demo", "rlhfkit.compare", "rlhfkit.loop"}
    for module in commands:
        assert "rlhfkit.pipeline" in GRAPH[module]
        assert not GRAPH[module] & commands, f"{module} imports {GRAPH[module] & commands}"
    importers = {m for m, targets in GRAPH.items() if targets & commands}
    assert importers == {"rlhfkit.cli"}


def test_cli_names_each_command_by_its_config_and_function():
    """COMMANDS holds the classes and functions themselves (go-to-definition works), no module strings."""
    assert COMMANDS["ppo"].config is PPOConfig and COMMANDS["ppo"].function is train_ppo
    for name, cmd in COMMANDS.items():
        assert isinstance(cmd.config, type) and callable(cmd.function), name
