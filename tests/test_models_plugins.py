"""Model plug-ins: a family declares everything about itself and the zoo only collects it.

The toy family below stands for a new encoder added to sandwatch: ONE module-like definition
(its ``nn.Module``, builder, weight layout and ``SPECS``) and ONE registration line
(``register(*SPECS)`` in the fixture). Building, ``sandwatch models``, ``parameter_table``,
the training config's published LR and batch size, checkpoints and weight-file detection all
pick it up without any other file knowing it. Also: no import cycle inside ``sandwatch.models``,
one freezing vocabulary.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest
import torch
from torch import nn

import sandwatch.models as models_pkg
from sandwatch.cli.main import main
from sandwatch.errors import SandwatchError
from sandwatch.models import (
    LAYOUTS,
    MODELS,
    Checkpoint,
    FileFacts,
    ModelSpec,
    SegmentationModel,
    WeightLayout,
    build_model,
    count_parameters,
    detect_layout,
    parameter_table,
    read_weights,
    native_range,
    register,
    set_trainable,
    unregister,
)
from sandwatch.train.config import config_from_dict

torch.set_num_threads(1)

# ---- the toy family: what a new model module holds (here in the test, not in the zoo) ---------


class ToyEncoder(nn.Module):
    """Two convolutions: ``[stem (stride 1), down (stride 2)]``."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)

    def forward(self, x):
        a = torch.relu(self.stem(x))
        return [a, torch.relu(self.down(a))]


class ToyConvNet(SegmentationModel):
    """The toy encoder and a 1x1 decoder over the stem and the up-sampled down features."""

    def __init__(self, in_channels: int, width: int = 4):
        super().__init__()
        self.encoder = ToyEncoder(in_channels, width)
        self.decoder = nn.Conv2d(3 * width, 1, 1)

    def decoder_forward(self, features, input_size):
        up = nn.functional.interpolate(features[1], size=tuple(input_size), mode="nearest")
        return self.decoder(torch.cat([features[0], up], dim=1))


def toy_facts(sd):
    stem = sd.get("stem.weight")
    if stem is None:
        return FileFacts()
    width, n = int(stem.shape[0]), int(stem.shape[1])
    return FileFacts("toy-convnet", n, ("B02", "B03", "B04", "B08") if n == 4 else None,
                     {"width": width} if width != 4 else {})


TOY_LAYOUT = WeightLayout(
    "toy-v1", "toy self-supervised checkpoint (backbone.*, projector set aside)",
    recognise=lambda obj: isinstance(obj.get("toy_state"), dict),
    tensors=lambda obj: obj["toy_state"], ignore=r"^projector\.", strip="backbone.", facts=toy_facts,
    info=lambda obj: {"epoch": obj.get("epoch")})

SPECS = (ModelSpec("toy-convnet", "toy conv encoder + 1x1 decoder (test plug-in)", ("B02", "B03", "B04", "B08"),
                   native_range, lambda n_bands, width=4: ToyConvNet(n_bands, int(width)), {"width": 4},
                   window_multiple=16, freeze_encoder=True, lr=3e-4, batch_size=32, layouts=(TOY_LAYOUT,)),)

# ---- end of the toy family ----------------------------------------------------------------------


@pytest.fixture
def toy():
    register(*SPECS)                                    # the one registration line
    yield SPECS[0]
    unregister("toy-convnet")


def toy_weights_file(path, width=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    enc = {k: torch.randn(v.shape, generator=g) for k, v in ToyConvNet(4, width).encoder.state_dict().items()}
    torch.save({"epoch": 7, "toy_state": {**{f"backbone.{k}": v for k, v in enc.items()},
                                          "projector.weight": torch.randn(3, 3, generator=g)}}, path)
    return enc


def test_toy_family_builds_lists_and_trains_with_its_published_values(toy, capsys):
    model = build_model("toy-convnet")
    assert model.arch == "toy-convnet" and model.band_spec.bands == ("B02", "B03", "B04", "B08")
    assert model(torch.rand(2, 4, 32, 32)).shape == (2, 1, 32, 32)
    assert not model.encoder_frozen                      # no weights: everything trains
    assert build_model("toy-convnet", bands=["R", "G", "B"], width=2).encoder.stem.in_channels == 3
    with pytest.raises(SandwatchError, match="multiple of 16"):
        Checkpoint.from_model(model, window=40)

    row = parameter_table("toy-convnet")[0]
    assert (row["freeze_encoder"], row["lr"], row["batch_size"], row["weights"]) == (True, 3e-4, 32, ["toy-v1"])
    assert row["trainable"] == row["decoder_parameters"] == count_parameters(model.decoder)

    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows)[-1] == "toy-convnet" and rows["toy-convnet"]["window_multiple"] == 16
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "toy-convnet" in out and "toy-v1: toy self-supervised checkpoint" in out

    cfg = config_from_dict({"manifest": "m.yaml", "model": {"arch": "toy-convnet"}})
    assert (cfg.lr, cfg.batch_size) == (3e-4, 32)
    assert config_from_dict({"manifest": "m.yaml", "model": {"arch": "toy-convnet"}, "optim": {"lr": 1e-2}}).lr == 1e-2


def test_toy_family_checkpoints_and_weight_files(toy, tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("toy-convnet", width=3).eval()
    back = Checkpoint.load(Checkpoint.from_model(model, window=64).save(tmp_path / "best.pt"))
    assert (back.arch, back.options, back.window) == ("toy-convnet", {"width": 3}, 64)
    x = torch.rand(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(back.build_model()(x), model(x))

    path = tmp_path / "toy.pth"
    enc = toy_weights_file(path, width=6)
    assert detect_layout(torch.load(path, weights_only=True)) == "toy-v1"
    wf = read_weights(path)
    assert (wf.layout, wf.arch, wf.n_bands, wf.options, wf.info) == ("toy-v1", "toy-convnet", 4, {"width": 6}, {"epoch": 7})
    assert wf.ignored == ["projector.weight"] and set(wf.state_dict) == set(enc)
    loaded = build_model("toy-convnet", weights=path, width=6)
    assert loaded.encoder_frozen                         # the spec's default with pretrained weights
    assert torch.equal(loaded.encoder.down.weight, enc["down.weight"])
    assert main(["models", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "layout:      toy-v1: toy self-supervised" in out and "OK, loads into toy-convnet" in out
    with pytest.raises(SandwatchError, match="holds toy-v1 weights for toy-convnet, which unet cannot take"):
        build_model("unet", weights=path)


def test_unregister_leaves_the_zoo_as_it_was(toy):
    assert "toy-convnet" in MODELS and "toy-v1" in LAYOUTS
    with pytest.raises(ValueError, match="already registered"):
        register(ModelSpec("toy-convnet", "another", ("B02",), native_range, ToyConvNet))
    unregister("toy-convnet")
    assert "toy-convnet" not in MODELS and "toy-v1" not in LAYOUTS
    with pytest.raises(SandwatchError, match="unknown model 'toy-convnet'"):
        config_from_dict({"manifest": "m.yaml", "model": {"arch": "toy-convnet"}}).lr  # noqa: B018
    register(*SPECS)                                     # for the fixture's teardown


def test_no_library_file_names_the_toy_family():
    """What the plug-in needed is this file: nothing in src/ knows it."""
    src = Path(models_pkg.__file__).parents[1]
    assert not [p for p in src.rglob("*.py") if "toy-convnet" in p.read_text() or "toy-v1" in p.read_text()]


# ---- the import graph of sandwatch.models ---------------------------------------------------------

def _models_import_graph() -> dict[str, set[str]]:
    """Module -> the sandwatch.models modules it imports anywhere (top level or inside functions)."""
    folder = Path(models_pkg.__file__).parent
    names = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name in names:
        deps = set()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            deps |= {m.split(".")[2] for m in mods if m.startswith("sandwatch.models.") and m.split(".")[2] in names}
        graph[name] = deps - {name}
    return graph


def test_models_package_has_no_import_cycle():
    graph = _models_import_graph()
    assert {"base", "spec", "zoo", "weights", "registry", "checkpoint"} <= set(graph)
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as err:
        pytest.fail(f"import cycle in sandwatch.models: {err.args[1]}")
    assert order.index("zoo") < order.index("weights") < order.index("registry") < order.index("checkpoint")
    for family in ("unet", "resnet_unet", "satmae"):       # families know only base and spec (and each other)
        assert graph[family] <= {"base", "spec", "unet"}, (family, graph[family])


def test_each_models_module_imports_first_in_a_fresh_interpreter():
    names = sorted(_models_import_graph())
    code = (
        "import importlib, sys\n"
        f"for first in {names!r}:\n"
        "    for m in [m for m in sys.modules if m.startswith('sandwatch')]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module('sandwatch.models.' + first)\n"
        "    for other in reversed(" + repr(names) + "):\n"
        "        importlib.import_module('sandwatch.models.' + other)\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# ---- one freezing vocabulary ------------------------------------------------------------------------

def test_freezing_is_one_boolean_from_config_to_model():
    from sandwatch.train.runner import _build_model

    cfg = config_from_dict({"manifest": "m.yaml", "model": {"arch": "unet", "options": {"width": 2},
                                                           "freeze_encoder": True}})
    model, _ = _build_model(cfg)
    assert model.encoder_frozen and count_parameters(model, trainable_only=True) == count_parameters(model.decoder)
    assert not set_trainable(model, False).encoder_frozen
    with pytest.raises(SandwatchError, match="not True or False.*linear_probe"):
        set_trainable(model, "linear_probe")
    with pytest.raises(SandwatchError, match="unknown option.*mode"):
        build_model("unet", mode="finetune")
