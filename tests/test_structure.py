"""The shape of the package, read from the source with `ast` (scripts/import_graph.py): the module graph and the
package graph are DAGs, imports sit at the top of their module (the CLI resolves its commands by string instead), and
each package imports only the layers below it, in the order written once in `LAYERS`:

    errors < config, storage, stats < data < losses < models < rewards, generation < environments < engines
      < runtime < train, eval, world < label < recipes < cli

The CLI itself imports nothing heavy: `rlhf --help` and every `rlhf CMD --help` load no torch.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhfkit.cli import COMMANDS, main
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


# The layers, lowest first. A package (or top-level module) imports only packages of lower layers; the composite
# commands of the top layers may also build on one another, without a cycle. Written once, here.
LAYERS = [
    {"errors"},
    {"config", "storage", "stats"},    # the config machinery, safe writes, win rates and correlations (NumPy only)
    {"data"},                          # formats know nothing of what consumes them
    {"losses"},                        # the equations: pure tensor functions
    {"models"},                        # load and call networks; they do not train, evaluate or know the toy world
    {"rewards", "generation"},         # reward sources and the RM's measurements; sampling calls a model
    {"environments"},                  # user environments (tools, rewards), loaded like reward functions
    {"engines"},                       # rollout engines sample (generation) from models; they never train
    {"runtime"},                       # the run helpers: options, run directory, seeding, optimizer
    {"train", "eval", "world"},        # the trainers, the measurements, the toy world: none imports another
    {"label"},                         # the labeling app: formats, errors, configs and itself
    {"recipes"},                       # the commands that compose the stages: sample, demo, compare, loop, bench
    {"cli"},                           # names every command by string
]
TOP = LAYERS[-2] | LAYERS[-1]


def _layer(package: str) -> int:
    found = [i for i, layer in enumerate(LAYERS) if package in layer]
    assert found, f"package {package!r} has no layer in LAYERS"
    return found[0]


PACKAGES = {p: targets for p, targets in G.package_graph(GRAPH).items() if p != "(root)"}


def test_every_package_has_a_layer():
    assert {p for layer in LAYERS for p in layer} == set(PACKAGES)


def test_no_import_cycle_among_packages():
    """Package-level cycles (train <-> eval, eval <-> world, ...), with no exception list."""
    assert G.cycles(PACKAGES) == []


def test_packages_import_only_lower_layers():
    """Layer order: errors < config/storage/stats < data < losses < models < rewards/generation < environments <
    engines < runtime < train/eval/world < label < recipes (sample, pipeline, demo, compare, loop, bench and their
    configs) < cli. No exception list: world imports nothing above data, rewards, models and the run
    helpers; eval receives the toy world's gold as a judge loaded by name (rewards/sources.py)."""
    wrong = sorted(f"{p} -> {t}" for p, targets in PACKAGES.items() for t in targets
                   if _layer(t) > _layer(p) or (_layer(t) == _layer(p) and p not in TOP))
    assert wrong == []


def test_a_layer_violation_and_a_package_cycle_are_found():
    """The checks themselves: a made-up eval -> train edge breaks the layer rule and, with train -> eval, a cycle."""
    graph = {p: set(t) for p, t in PACKAGES.items()}
    graph["eval"].add("train")
    graph["train"].add("eval")
    assert ["eval", "train"] in G.cycles(graph)
    assert _layer("train") == _layer("eval") and "eval" not in TOP


def _reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for target in GRAPH.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_trainers_and_evaluation_never_reach_the_toy_world_its_gold_reward_is_a_named_judge():
    trainers = list(_imports_of("train")) + list(_imports_of("eval"))
    assert {"rlhfkit.train.ppo", "rlhfkit.train.reward"} <= set(trainers)
    wrong = {_short(m): sorted(_short(t) for t in _reachable(m) if t.startswith("rlhfkit.world"))
             for m in trainers}
    assert {m: w for m, w in wrong.items() if w} == {}
    assert not GRAPH["rlhfkit.world.gold"] & {"rlhfkit.rewards.sources"}  # named by string, never registered


def test_demo_compare_and_loop_share_pipeline_and_never_import_each_other():
    commands = {"rlhfkit.recipes.demo", "rlhfkit.recipes.compare", "rlhfkit.recipes.loop"}
    for module in commands:
        assert "rlhfkit.recipes.pipeline" in GRAPH[module]
        assert not GRAPH[module] & commands, f"{module} imports {GRAPH[module] & commands}"
    importers = {m for m, targets in GRAPH.items() if targets & commands}
    # the CLI names them by string (`COMMANDS`), resolved when one runs; the one module that composes commands is
    # the label-efficiency experiment (`rlhf compare --label-budget` runs a loop per arm), where compare is entered
    assert importers == {"rlhfkit.recipes.label_budget"}
    assert GRAPH["rlhfkit.recipes.label_budget"] & commands == {"rlhfkit.recipes.compare", "rlhfkit.recipes.loop"}


HEAVY = ("torch", "transformers", "datasets", "pyarrow", "fastapi", "sqlalchemy", "alembic", "matplotlib",
         "tensorboard", "accelerate", "peft")


def _loaded_after(code: str) -> list[str]:
    """The heavy top-level packages in `sys.modules` after `code` ran in a fresh interpreter (not timed)."""
    probe = f"import sys\n{code}\nprint('\\nloaded:', *(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_clean_env(), check=True)
    return done.stdout.rpartition("loaded:")[2].split()


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLI_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


LABEL_DB = {"sqlalchemy"}  # label/names.py: the label configs check --db with its URL parser
CLI_ENV = ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_HUB_OFFLINE", "OMP_WAIT_POLICY")


def test_importing_the_cli_imports_no_heavy_library():
    """`python -X importtime -c "import rlhfkit.cli"`: every module imported, none of them heavy."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import rlhfkit.cli"], capture_output=True,
                          text=True, env=_clean_env(), check=True)
    imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "rlhfkit.cli" in imported  # the reader sees the import it measures
    assert sorted(m for m in imported if m.split(".")[0] in HEAVY) == []


@pytest.mark.parametrize("argv", [["--help"], ["label", "--help"], ["label"], ["ppo", "--help"],
                                  ["eval", "bon", "--help"], ["label", "serve", "--help"], ["loop", "--help"]])
def test_help_imports_no_heavy_library(argv):
    """`rlhf --help`, group help and a command's --help read only the light config modules (sqlalchemy: the label
    configs check a --db URL with `label/names.py`'s `normalize_url`, so `rlhf label CMD --help` and the loop's
    config load it; never alembic, the ORM or torch)."""
    loaded = _loaded_after(f"from rlhfkit.cli import main\nmain({argv!r})")
    allowed = LABEL_DB if argv in (["label", "serve", "--help"], ["loop", "--help"]) else set()
    assert sorted(set(loaded) - allowed) == []


def test_every_config_loads_without_torch_and_every_command_resolves():
    """The table names each command's config class and function as strings; each config's module is light, each
    entry resolves to a dataclass and a function."""
    loaded = _loaded_after("from rlhfkit.cli import COMMANDS\nfor c in COMMANDS.values(): c.load_config()")
    assert sorted(set(loaded) - LABEL_DB) == []
    assert COMMANDS["ppo"].load_config() is PPOConfig and COMMANDS["ppo"].load_function() is train_ppo
    for name, cmd in COMMANDS.items():
        assert dataclasses.is_dataclass(cmd.load_config()) and callable(cmd.load_function()), name


def test_the_cli_sets_its_environment_before_any_command_module_imports_torch():
    """TRANSFORMERS_VERBOSITY, HF_HUB_*, OMP_WAIT_POLICY are read when torch/transformers are first imported: they are
    set once `rlhfkit.cli` is imported, and torch is not imported yet then."""
    code = ("import os, sys\nimport rlhfkit.cli\n"
            f"assert all(k in os.environ for k in {CLI_ENV!r}), os.environ\n"
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], env=_clean_env(), check=True)


def test_group_help_lists_the_group(capsys):
    """`rlhf label --help` (0) and `rlhf label` alone (2, as bare `rlhf`) list the label commands, not an error."""
    assert main(["label", "--help"]) == 0
    out = capsys.readouterr().out
    assert "label serve" in out and "label export" in out and "ppo" not in out
    assert main(["label"]) == 2
    assert "label import" in capsys.readouterr().out
    assert main(["label", "nope"]) == 2
    assert "unknown command 'label nope'" in capsys.readouterr().err
