"""Model families by name: everything the search needs to know about one kind of network.

A :class:`ModelFamily` builds its models by name, tells which channel groups a model has (the
genome space), ranks and prunes them (surgery), lists the inference ops of any pruned width
vector (layer specs for the latency table and the memory model), and rebuilds a model from the
JSON description a recipe stores. :data:`FAMILIES` is the only list of families and, through
them, of model names (``model.name`` is validated against :func:`model_names`).

| family         | module               | models                                 | pruning       |
|----------------|----------------------|----------------------------------------|---------------|
| `digits-cnn`   | :mod:`.digits_cnn`   | ``digits-cnn``                         | own surgery   |
| `cifar-resnet` | :mod:`.cifar_resnet` | ``resnet20/32/44/56/110`` (option A)   | own surgery   |
| `torchvision`  | :mod:`.torchvision`  | ``resnet18/50``, ``mobilenet_v2``,     | Torch-Pruning |
|                |                      | ``torchvision:NAME`` (any classifier)  |               |
| `custom`       | :mod:`.graph`        | ``model.factory``, a Python object,    | Torch-Pruning |
|                |                      | any other ``nn.Module``                |               |

Adding a family is one module defining a :class:`ModelFamily` subclass plus one
``register_family`` line at the bottom of this file. The input shape is never the family's
guess: it comes from the dataset (``input_shape`` arguments), except for the fixed-size own
families' defaults used when a caller prunes by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prunesearch.methods.errors import lookup

__all__ = [
    "FAMILIES",
    "ModelFamily",
    "family_entry",
    "family_of",
    "is_model_name",
    "model_family",
    "model_names",
    "register_family",
]


class ModelFamily:
    """One family of networks. Subclasses set the attributes and implement the hooks.

    Attributes:
        name: Registry name, recorded in genome spaces and recipes (``base_arch.family``).
        models: Model name -> ``build(num_classes) -> nn.Module`` (random init, no download).
        pretrained_cifar10: Model names with a pretrained CIFAR-10 file under
            ``data.root/weights/cifar10-resnet/``.
        exact_cost: The layer specs of a genome depend on small gene sets and are cheap, so the
            exact vectorised cost model applies; False: specs come from tracing a pruned copy
            (seconds each) and are memoised per genome instead.
        default_input_shape: ``(C, H, W)`` used when a caller gives none; ``None``: the caller
            must give one (networks that accept any image size).
    """

    name: str = ""
    models: Mapping[str, Callable[[int], Any]] = {}
    pretrained_cifar10: frozenset[str] = frozenset()
    exact_cost: bool = True
    default_input_shape: tuple[int, int, int] | None = None
    #: Owns any network no other family owns (asked last, whenever it was registered).
    catch_all: bool = False
    #: Ranks of one input sample the family takes: 3 is ``(C, H, W)`` images; a family that
    #: also takes sequences ``(C, L)`` and feature vectors ``(F,)`` lists 2 and 1.
    input_ranks: tuple[int, ...] = (3,)

    # ---------------------------------------------------------------- identification
    def owns(self, model: Any) -> bool:
        """Whether ``model`` (an ``nn.Module``) belongs to this family."""
        raise NotImplementedError

    def check_input(self, model_name: str, input_shape: Sequence[int]) -> None:
        """Raise ``ValueError`` if ``model_name`` cannot take images of ``input_shape``."""

    def input_shape(self, model: Any, input_shape: Sequence[int] | None) -> tuple[int, ...]:
        """The input shape of one sample to use for ``model``: the caller's, else the family
        default. ``(C, H, W)`` for images; families pruned along the dependency graph also take
        ``(C, L)`` (sequences) and ``(F,)`` (feature vectors)."""
        if input_shape is not None:
            shape = tuple(int(v) for v in input_shape)
            if len(shape) not in self.input_ranks or min(shape, default=0) < 1:
                layouts = {3: "(C, H, W)", 2: "(C, L)", 1: "(F,)"}
                raise ValueError(f"input_shape must be "
                                 f"{' or '.join(layouts[r] for r in self.input_ranks)}, got "
                                 f"{tuple(input_shape)}")
            return shape
        if self.default_input_shape is None:
            raise ValueError(f"{self.name} models take any image size: pass input_shape=(C, H, W) "
                             "(the dataset's)")
        return self.default_input_shape

    def model_name_of(self, model: Any) -> str:
        """The name recorded for ``model`` when a caller gives none (its builder's name)."""
        tagged = getattr(model, "_prunesearch_model_name", None)
        if tagged:
            return str(tagged)
        if len(self.models) != 1:
            raise ValueError(f"model_name is required for the {self.name} family "
                             f"({', '.join(list(self.models)[:6])}, ...)")
        return next(iter(self.models))

    def num_classes(self, model: Any, input_shape: tuple[int, int, int]) -> int:
        """Classifier outputs of ``model``."""
        from prunesearch.methods.models import _classifier

        return int(_classifier(model).out_features)

    def spec_base(self, model: Any) -> Any:
        """What a genome space keeps to trace layer specs from (``None``: nothing)."""
        return None

    # ---------------------------------------------------------------- genome space
    def groups(self, model: Any, input_shape: tuple[int, int, int]
               ) -> list[tuple[str, int, str] | tuple[str, int, str, int]]:
        """``(name, full_width, kind[, multiple])`` of every prunable group, in genome order
        (``multiple``: kept widths are multiples of it, default 1)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- surgery
    def producers(self, model: Any, input_shape: tuple[int, int, int]) -> dict[str, list[Any]]:
        """Group name -> the ``(module, index map)`` pairs writing its channels (importance)."""
        raise NotImplementedError

    def prune(self, model: Any, kept: Mapping[str, Sequence[int]],
              input_shape: tuple[int, int, int]) -> Any:
        """A new, smaller network keeping channels ``kept[group]`` of every group."""
        raise NotImplementedError

    # ---------------------------------------------------------------- cost
    def layer_specs(self, space: Any, channels: tuple[int, ...], batch: int,
                    hw: tuple[int, int]) -> Sequence[Any]:
        """Inference ops (``LayerSpec``) of the network pruned to ``channels``."""
        raise NotImplementedError

    # ---------------------------------------------------------------- recipes
    def arch_config(self, model: Any, model_name: str) -> dict[str, Any]:
        """JSON-able description :meth:`build_from_arch` rebuilds ``model``'s shapes from."""
        config = dict(model.arch_config())
        config.setdefault("family", self.name)
        return config

    def build_from_arch(self, arch: Mapping[str, Any]) -> Any:
        """A model (random weights) with the shapes :meth:`arch_config` described."""
        raise NotImplementedError


FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to :data:`FAMILIES` (its model names must be new)."""
    if not family.name:
        raise ValueError("a model family needs a name")
    if family.name in FAMILIES and FAMILIES[family.name] is not family:
        raise ValueError(f"model family {family.name!r} is already registered")
    others = [f for f in FAMILIES.values() if f is not family]
    # Membership, not listing: a lazy family (torchvision's model zoo) is listed only when a
    # name under its prefix is looked up, so registering the families imports nothing heavy.
    clash = sorted({m for m in _eager_names(family.models) if any(m in f.models for f in others)}
                   | {m for f in others for m in _eager_names(f.models) if m in family.models})
    prefix = getattr(family.models, "prefix", None)
    if prefix is not None and any(getattr(f.models, "prefix", None) == prefix for f in others):
        raise ValueError(f"model-name prefix {prefix!r} already belongs to another family")
    if clash:
        raise ValueError(f"model names {clash} already belong to another family")
    FAMILIES[family.name] = family
    return family


def _eager_names(models: Any) -> tuple[str, ...]:
    """The names of a family's model map known without importing anything (a lazy map's
    ``fixed`` names; every name of a plain mapping)."""
    if getattr(models, "prefix", None) is not None:
        return tuple(models.fixed)
    return tuple(models)


def is_model_name(name: str) -> bool:
    """Whether some family builds ``name`` (membership: lists no lazy family needlessly)."""
    return any(name in family.models for family in FAMILIES.values())


def family_entry(name: str) -> ModelFamily:
    """The family registered as ``name``.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid ones).
    """
    return lookup(FAMILIES, name, key="family", kind="model family")


def model_names() -> tuple[str, ...]:
    """Every registered model name, family by family (the config's ``model.name`` choices)."""
    return tuple(m for family in FAMILIES.values() for m in family.models)


def model_family(model_name: str) -> ModelFamily:
    """The family that builds the model called ``model_name``.

    Raises:
        UnknownNameError: no family builds ``model_name``.
    """
    for family in FAMILIES.values():
        if model_name in family.models:
            return family
    owners = {m: family for family in FAMILIES.values() for m in family.models}
    return lookup(owners, model_name, key="model.name", kind="model")


def family_of(model: Any) -> ModelFamily:
    """The family an ``nn.Module`` belongs to: the first registered family that owns it, a
    catch-all family (``custom``) only when no other does."""
    for family in sorted(FAMILIES.values(), key=lambda f: f.catch_all):
        if family.owns(model):
            return family
    raise TypeError(f"{type(model).__name__} belongs to no registered model family "
                    f"({', '.join(FAMILIES)})")


# The registry: one line per family.
from prunesearch.methods.families.cifar_resnet import CifarResNetFamily  # noqa: E402
from prunesearch.methods.families.digits_cnn import DigitsCNNFamily  # noqa: E402
from prunesearch.methods.families.graph import CustomFamily  # noqa: E402
from prunesearch.methods.families.torchvision import TorchvisionFamily  # noqa: E402

register_family(DigitsCNNFamily())
register_family(CifarResNetFamily())
register_family(TorchvisionFamily())
register_family(CustomFamily())  # last: it owns every nn.Module the others do not
