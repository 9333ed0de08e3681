"""Families pruned along Torch-Pruning's dependency graph, and the ``custom`` family.

:class:`DependencyGraphFamily` holds everything a network pruned by
:mod:`prunesearch.methods.pruning.tp_groups` needs: genes are dependency groups (grouped-conv
groups keep multiples of the group count), layer specs are traced from a pruned copy of the
space's structure-only base (:meth:`spec_base`), and the classifier is found from the forward
pass. :class:`CustomFamily` is the one for any other ``nn.Module``: a user's
``model.factory`` (``"package.module:function"``, called with ``num_classes=``), a network given
to the Python API (an ``object:`` name), or any network a caller prunes by hand.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from prunesearch.methods.families import ModelFamily

__all__ = ["CustomFamily", "DependencyGraphFamily", "LazyModels", "structure_copy",
           "tag_model"]

_NAME_ATTR = "_prunesearch_model_name"


_CLASSES_ATTR = "_prunesearch_num_classes"


def tag_model(model: nn.Module, name: str, *, num_classes: int | None = None,
              classifier: str | None = None, ignore: Sequence[str] = ()) -> nn.Module:
    """Record the name ``model`` was built under, its classes and graph options (plain
    attributes: they travel with deep copies and pickles, never with state dicts)."""
    from prunesearch.methods.pruning.tp_groups import set_graph_options

    object.__setattr__(model, _NAME_ATTR, name)
    if num_classes is not None:
        object.__setattr__(model, _CLASSES_ATTR, int(num_classes))
    return set_graph_options(model, classifier=classifier, ignore=ignore)


def structure_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose tensors are zero-stride views of one zero (shapes only): what
    layer specs are traced from, and a few bytes to pickle whatever the network's size."""
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for module in clone.modules():
            for name, param in list(module._parameters.items()):
                if param is not None:
                    module._parameters[name] = nn.Parameter(
                        torch.zeros((), dtype=param.dtype).expand(param.shape),
                        requires_grad=param.requires_grad)
            for name, buf in list(module._buffers.items()):
                if buf is not None:
                    module._buffers[name] = torch.zeros((), dtype=buf.dtype).expand(buf.shape)
    return clone.eval()


class LazyModels(Mapping[str, Callable[[int], nn.Module]]):
    """A model-name mapping computed on first use (keeps heavy imports off module import).

    Args:
        names: every name (may import heavy modules: called only when needed).
        builder: ``name -> build(num_classes)``.
        prefix: when set, every name outside ``fixed`` starts with it, so membership of a name
            without it is answered without calling ``names`` (a config naming ``digits-cnn``
            never imports torchvision's model zoo).
        fixed: names known without calling ``names``.
    """

    def __init__(self, names: Callable[[], Sequence[str]],
                 builder: Callable[[str], Callable[[int], nn.Module]], *,
                 prefix: str | None = None, fixed: Sequence[str] = ()) -> None:
        self._names = names
        self._builder = builder
        self.prefix = prefix
        self.fixed = tuple(fixed)

    def __getitem__(self, name: str) -> Callable[[int], nn.Module]:
        if name not in self._names():
            raise KeyError(name)
        return self._builder(name)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._names()))

    def __len__(self) -> int:
        return len(tuple(self._names()))

    def __contains__(self, name: object) -> bool:
        if name in self.fixed:
            return True
        if self.prefix is not None and not (isinstance(name, str)
                                            and name.startswith(self.prefix)):
            return False
        return name in self._names()


class DependencyGraphFamily(ModelFamily):
    """Base of the families pruned along Torch-Pruning's dependency graph."""

    exact_cost = False

    def model_name_of(self, model: Any) -> str:
        # A network built here carries its name; one built by the caller is named by its class
        # (rebuilding it then needs the base network: rebuild(base, recipe)).
        return str(getattr(model, _NAME_ATTR, None) or type(model).__name__)

    def build_from_arch(self, arch: Mapping[str, Any]) -> nn.Module:
        name = str(arch["name"])
        classes = int(arch["num_classes"])
        if name in self.models:
            model = self.models[name](classes)
        elif name.startswith(("factory:", "object:")):
            model = build_source(name, classes)
        else:
            raise ValueError(f"the base network '{name}' was built outside prunesearch: rebuild "
                             "it with rebuild(base_model, recipe), or name it by model.factory")
        return tag_model(model, name, num_classes=classes, classifier=arch.get("classifier"),
                         ignore=arch.get("ignore") or ())

    def num_classes(self, model: nn.Module, input_shape: tuple[int, int, int]) -> int:
        from prunesearch.methods.pruning.tp_groups import find_classifier, num_outputs

        return num_outputs(find_classifier(model, input_shape))

    def spec_base(self, model: nn.Module) -> nn.Module:
        return structure_copy(model)

    def groups(self, model: nn.Module, input_shape: tuple[int, int, int]
               ) -> list[tuple[str, int, str, int]]:
        from prunesearch.methods.pruning.tp_groups import tp_groups

        return [(name, width, "tp-group", multiple)
                for name, width, multiple in tp_groups(model, input_shape=input_shape)]

    def producers(self, model: nn.Module, input_shape: tuple[int, int, int]
                  ) -> dict[str, list[Any]]:
        from prunesearch.methods.pruning.tp_groups import tp_producers

        return tp_producers(model, input_shape=input_shape)

    def prune(self, model: nn.Module, kept: Mapping[str, Sequence[int]],
              input_shape: tuple[int, int, int]) -> nn.Module:
        from prunesearch.methods.pruning.tp_groups import tp_prune

        return tp_prune(model, kept, input_shape=input_shape)

    def layer_specs(self, space: Any, channels: tuple[int, ...], batch: int,
                    hw: tuple[int, int]) -> Sequence[Any]:
        from prunesearch.methods.pruning.specs import affine_specs

        return affine_specs(space, channels, batch, hw)

    def arch_config(self, model: nn.Module, model_name: str) -> dict[str, Any]:
        from prunesearch.methods.pruning.tp_groups import graph_options, num_outputs

        options = graph_options(model)
        classes = getattr(model, _CLASSES_ATTR, None)
        if classes is None:
            # Not built by a builder here: the named classifier, else the last layer.
            layers = ([dict(model.named_modules())[options.classifier]] if options.classifier
                      else [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))])
            classes = num_outputs(layers[-1]) if layers else None
        return {"family": self.name, "name": model_name, "num_classes": classes,
                "classifier": options.classifier or None, "ignore": list(options.ignore)}


def build_source(source: str, num_classes: int) -> nn.Module:
    """Build the network a ``factory:`` or ``object:`` name stands for (random init, or the
    object's own weights)."""
    from prunesearch.methods.errors import ConfigError
    from prunesearch.methods.objects import is_object, resolve

    if is_object(source):
        return copy.deepcopy(resolve(source, key="model.name"))
    path = source.removeprefix("factory:")
    factory = resolve(path, key="model.factory")
    if not callable(factory):
        raise ConfigError(f"model.factory: {path!r} is not callable")
    try:
        model = factory(num_classes=num_classes)
    except TypeError as exc:
        raise ConfigError(f"model.factory: {path}(num_classes={num_classes}) failed: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.factory: {path} returned {type(model).__name__}, not an "
                          "nn.Module")
    return model


class CustomFamily(DependencyGraphFamily):
    """Any ``nn.Module`` no other family owns: ``model.factory`` networks, Python objects."""

    name = "custom"
    catch_all = True
    # A user's network may take sequences (Conv1d) or feature vectors (an MLP) as well.
    input_ranks = (3, 2, 1)

    def __init__(self) -> None:
        from prunesearch.methods.objects import registered

        self.models = LazyModels(lambda: registered("object:model-"),
                                 lambda name: lambda num_classes: build_source(name, num_classes),
                                 prefix="object:model-")

    def owns(self, model: Any) -> bool:
        return isinstance(model, nn.Module)

