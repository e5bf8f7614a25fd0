"""The zoo: every architecture sandwatch knows, collected from the family modules.

Each family module declares its architectures (``SPECS``, see :mod:`sandwatch.models.spec`);
this module only collects them, one registration line per family. Adding an encoder is one
new module that defines its ``nn.Module`` and its ``SPECS``, plus one line here (or a
``register(*SPECS)`` call from outside the package: a plug-in)::

    register(*my_family.SPECS)

:data:`MODELS` (name -> :class:`ModelSpec`) and :data:`LAYOUTS` (name -> :class:`WeightLayout`,
gathered from the specs) are what the builder, the weight reader, the checkpoint validation,
the training config and ``sandwatch models`` consult.
"""

from __future__ import annotations

from sandwatch.errors import SandwatchError
from sandwatch.models import resnet_unet, satmae, unet
from sandwatch.models.spec import ModelSpec, WeightLayout

MODELS: dict[str, ModelSpec] = {}
LAYOUTS: dict[str, WeightLayout] = {}
#: the layout the weight reader handles itself: a checkpoint written by sandwatch train
SANDWATCH = "sandwatch"


def register(*specs: ModelSpec, replace: bool = False) -> tuple[ModelSpec, ...]:
    """Add architectures (and the weight layouts they read) to the zoo. A name already taken
    is an error unless ``replace``; so is a different layout under a name already used."""
    for spec in specs:
        name = spec.name.strip().lower()
        if name != spec.name or not name:
            raise ValueError(f"model name {spec.name!r} must be non-empty lower case without surrounding spaces")
        if name in MODELS and not replace and MODELS[name] is not spec:
            raise ValueError(f"model {name!r} is already registered")
        for layout in spec.layouts:
            known = LAYOUTS.get(layout.name)
            if layout.name == SANDWATCH or (known is not None and known is not layout and not replace):
                raise ValueError(f"weight layout {layout.name!r} is already taken")
    for spec in specs:
        MODELS[spec.name] = spec
        for layout in spec.layouts:
            LAYOUTS[layout.name] = layout
    return specs


def unregister(name: str) -> None:
    """Remove an architecture, and the layouts no other architecture reads."""
    spec = MODELS.pop(name)
    used = {layout.name for other in MODELS.values() for layout in other.layouts}
    for layout in spec.layouts:
        if layout.name not in used:
            LAYOUTS.pop(layout.name, None)


def get_spec(arch: str) -> ModelSpec:
    """The registry entry, or a clear error listing the known names."""
    spec = MODELS.get(str(arch).strip().lower())
    if spec is None:
        raise SandwatchError.about("arch", f"unknown model {arch!r}", f"use one of {', '.join(MODELS)}")
    return spec


register(*unet.SPECS)
register(*resnet_unet.SPECS)
register(*satmae.SPECS)

#: The zoo's own models (what ``sandwatch models`` lists; plug-ins registered later are extra).
BUILTIN: tuple[str, ...] = tuple(MODELS)
