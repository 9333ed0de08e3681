"""Inference ops of a pruned network, with exact shapes, as :class:`LayerSpec` records.

Each model family writes its own (:meth:`ModelFamily.layer_specs
<prunesearch.methods.families.ModelFamily.layer_specs>`): the CIFAR ResNets and the digits CNN
analytically from the kept widths with :class:`SpecBuilder` (pure Python, ~0.5 ms for a
ResNet-56 genome, cached: the cost models call it for thousands of genomes per generation);
torchvision models by tracing a Torch-Pruning-pruned copy with ``torch.fx``
(:func:`traced_specs`, slow, cached per width vector).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections.abc import Sequence

import torch
from torch import nn

from prunesearch.methods.cost.specs import LayerSpec
from prunesearch.methods.pruning.space import GenomeSpace

__all__ = ["SpecBuilder", "affine_specs", "layer_specs", "traced_specs"]


def _conv_out(hw: tuple[int, int], kernel: int, stride: int, padding: int) -> tuple[int, int]:
    return tuple((x + 2 * padding - kernel) // stride + 1 for x in hw)  # type: ignore[return-value]


class SpecBuilder:
    """Collects the :class:`LayerSpec` records of a network written out by hand (the model
    families whose specs are analytic)."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.ops: list[LayerSpec] = []

    def conv(self, cin: int, cout: int, hw: tuple[int, int], k: int, s: int, p: int,
             bias: bool = False) -> tuple[int, int]:
        """A dense conv; returns its output size."""
        out = _conv_out(hw, k, s, p)
        self.ops.append(LayerSpec("conv", self.batch, cin, cout, hw, out, k, s, p, 1, bias))
        return out

    def same(self, op: str, c: int, hw: tuple[int, int]) -> None:
        """A shape-preserving op (``bn``, ``relu``, ``add``)."""
        self.ops.append(LayerSpec(op, self.batch, c, c, hw, hw))

    def head(self, c: int, hw: tuple[int, int], num_classes: int) -> None:
        """Global average pool, flatten and the linear classifier."""
        self.ops.append(LayerSpec("gap", self.batch, c, c, hw, (1, 1)))
        self.ops.append(LayerSpec("flatten", self.batch, c, c, (1, 1), (1, 1)))
        self.ops.append(LayerSpec("linear", self.batch, c, num_classes, (1, 1), (1, 1),
                                  bias=True))


@functools.lru_cache(maxsize=8)
def _random_base(model_name: str, num_classes: int) -> nn.Module:
    from prunesearch.methods.models import build_model

    return build_model(model_name, num_classes).eval()


_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
                nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Mish, nn.PReLU, nn.Hardtanh, nn.SELU, nn.CELU,
                nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Hardshrink,
                nn.Softshrink)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d,
          nn.InstanceNorm2d)
#: Upsampling is memory-bound like an activation, over its (larger) output: recorded as one.
_UPSAMPLES = (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
_ELEMENTWISE_FNS = (nn.functional.relu, torch.relu, nn.functional.relu6, nn.functional.gelu,
                    nn.functional.silu, nn.functional.hardswish, nn.functional.hardsigmoid,
                    torch.sigmoid, nn.functional.sigmoid)
_BINARY_FNS = (operator.add, operator.iadd, torch.add, operator.mul, operator.imul, torch.mul)


@functools.lru_cache(maxsize=512)
def traced_specs(space: GenomeSpace, channels: tuple[int, ...], batch: int,
                 hw: tuple[int, int]) -> tuple[LayerSpec, ...]:
    """Specs of a Torch-Pruning-pruned copy (first channels kept) of the space's base, traced
    with ``torch.fx`` at input size ``hw`` (memoised).

    The cost model knows ten ops; the others are recorded as the nearest one: every activation
    as ``relu`` and every normalisation as ``bn`` (elementwise, same shape), a multiply (squeeze-
    excitation, layer scale) as ``add``, and a ``Linear`` applied to an ``(N, H, W, C)`` tensor
    (ConvNeXt) as the 1x1 conv it is. Concatenation, reshapes and permutes are free.

    Inputs need not be images: a space whose ``input_shape`` is ``(C, L)`` (sequences) records
    its ``(N, C, L)`` tensors with ``in_hw = (L, 1)`` and its ``Conv1d``/pooling ops with
    ``dims=1``; one whose ``input_shape`` is ``(F,)`` (feature vectors) has only ``(N, F)``
    tensors, recorded with ``in_hw = (1, 1)``.
    """
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    from prunesearch.methods.pruning.layers import example_inputs, token_vocabulary
    from prunesearch.methods.pruning.tp_groups import tp_prune

    base = space.base if space.base is not None else _random_base(space.model_name,
                                                                  space.num_classes)
    # Shapes do not depend on which channels are kept: keep the first ones (per block for
    # groups feeding grouped convs).
    kept = {g.name: _first_kept(g.full_width, c, g.multiple)
            for g, c in zip(space.groups, channels)}
    pruned = tp_prune(base, kept, input_shape=space.input_shape).eval()
    graph = symbolic_trace(pruned)
    example = example_inputs(pruned, (batch, space.input_shape[0], *hw))
    with torch.no_grad():
        ShapeProp(graph).propagate(example)
    modules = dict(graph.named_modules())
    ops: list[LayerSpec] = []
    # In a sequence network an (N, C, L) tensor is channels-first; elsewhere a rank-3 tensor is
    # a transformer's (N, tokens, C).
    sequence = len(space.input_shape) == 2 or (len(space.input_shape) == 1
                                               and token_vocabulary(pruned) is not None)

    def spatial(shape_: tuple[int, ...]) -> tuple[int, int]:
        if len(shape_) == 4:
            return int(shape_[2]), int(shape_[3])
        if sequence and len(shape_) == 3:
            return int(shape_[2]), 1
        return 1, 1

    def channels_and_hw(shape_: tuple[int, ...]) -> tuple[int, tuple[int, int]]:
        if sequence and len(shape_) == 3:
            return int(shape_[1]), spatial(shape_)
        return _channels_and_hw(shape_)

    def shape(node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()

    for node in graph.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        out = shape(node)
        if not out:
            continue  # tuples (chunk, split) and non-tensors: their consumers are recorded
        src = node.args[0] if node.args else None
        inp = shape(src) if isinstance(src, torch.fx.Node) else ()
        inp = inp or out
        in_hw, out_hw = spatial(inp), spatial(out)
        cin, cout = (inp[1] if len(inp) > 1 else 1), (out[1] if len(out) > 1 else 1)
        if node.op == "call_module":
            m = modules[node.target]
            if isinstance(m, nn.Conv2d):
                ops.append(LayerSpec("conv", batch, m.in_channels, m.out_channels, in_hw, out_hw,
                                     _square(m.kernel_size), _square(m.stride),
                                     _pad2(m.padding), m.groups, m.bias is not None,
                                     dilation=_square(m.dilation)))
            elif isinstance(m, nn.Conv1d):
                ops.append(LayerSpec("conv", batch, m.in_channels, m.out_channels, in_hw, out_hw,
                                     m.kernel_size[0], m.stride[0], _pad(m.padding), m.groups,
                                     m.bias is not None, dims=1, dilation=m.dilation[0]))
            elif isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
                one_d = isinstance(m, nn.ConvTranspose1d)
                ops.append(LayerSpec(
                    "deconv", batch, m.in_channels, m.out_channels, in_hw, out_hw,
                    m.kernel_size[0] if one_d else _square(m.kernel_size),
                    m.stride[0] if one_d else _square(m.stride),
                    m.padding[0] if one_d else _pad2(m.padding), m.groups, m.bias is not None,
                    dims=1 if one_d else 2,
                    dilation=m.dilation[0] if one_d else _square(m.dilation)))
            elif isinstance(m, nn.Embedding):
                # A lookup of L ids: the vocabulary rides in ``kernel`` (parameters, timing).
                steps = int(math.prod(inp[1:])) if len(inp) > 1 else 1
                ops.append(LayerSpec("embed", batch, 1, m.embedding_dim, (steps, 1), (steps, 1),
                                     kernel=m.num_embeddings))
            elif isinstance(m, nn.Linear) and len(inp) > 2:
                # Channels-last Linear on (N, H, W, C): a 1x1 conv over H x W positions.
                tokens = tuple(inp[1:3]) if len(inp) == 4 else (int(inp[1]), 1)
                ops.append(LayerSpec("conv", batch, m.in_features, m.out_features, tokens,
                                     tokens, 1, 1, 0, 1, m.bias is not None))
            elif isinstance(m, nn.Linear):
                ops.append(LayerSpec("linear", batch, m.in_features, m.out_features, (1, 1),
                                     (1, 1), bias=m.bias is not None))
            elif isinstance(m, _NORMS):
                c, where = channels_and_hw(out)
                ops.append(LayerSpec("bn", batch, c, c, where, where))
            elif isinstance(m, (*_ELEMENTWISE, *_UPSAMPLES)):
                c, where = channels_and_hw(out)
                ops.append(LayerSpec("relu", batch, c, c, where, where))
            elif isinstance(m, (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d,
                                nn.AdaptiveMaxPool1d)):
                if out_hw == (1, 1) and not isinstance(m, nn.MaxPool1d):
                    op = "gap"  # a global pool (average or max: the same memory-bound pass)
                else:
                    op = "maxpool" if isinstance(m, (nn.MaxPool1d, nn.AdaptiveMaxPool1d)) \
                        else "avgpool"
                if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)):
                    # An adaptive pool's window: the input length over the output length.
                    k = st = max(1, in_hw[0] // max(1, out_hw[0]))
                    pd = 0
                else:
                    k, st, pd = _one(m.kernel_size), _one(m.stride), _pad(m.padding)
                ops.append(LayerSpec(op, batch, cin, cout, in_hw, out_hw, k, st, pd, dims=1))
            elif isinstance(m, nn.MaxPool2d):
                ops.append(LayerSpec("maxpool", batch, cin, cout, in_hw, out_hw,
                                     _square(m.kernel_size), _square(m.stride),
                                     _pad2(m.padding)))
            elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
                op = "gap" if out_hw == (1, 1) else "avgpool"
                if op == "gap":
                    ops.append(LayerSpec(op, batch, cin, cout, in_hw, out_hw))
                elif isinstance(m, nn.AvgPool2d):
                    ops.append(LayerSpec(op, batch, cin, cout, in_hw, out_hw,
                                         _square(m.kernel_size),
                                         _square(m.stride if m.stride is not None
                                                 else m.kernel_size), _pad2(m.padding)))
                else:
                    # An adaptive pool's window: the input size over the output size.
                    window = _square(tuple(max(1, i // max(1, o))
                                           for i, o in zip(in_hw, out_hw)))
                    ops.append(LayerSpec(op, batch, cin, cout, in_hw, out_hw, window, window))
            elif isinstance(m, nn.Flatten):
                ops.append(LayerSpec("flatten", batch, cin, cin, (1, 1), (1, 1)))
            # Dropout, Identity, Permute and other free-at-inference modules cost nothing.
        elif node.op == "call_function":
            if node.target in _BINARY_FNS and len(out) >= 2:
                c, where = channels_and_hw(out)
                ops.append(LayerSpec("add", batch, c, c, where, where))
            elif node.target is torch.flatten:
                ops.append(LayerSpec("flatten", batch, cin, cin, (1, 1), (1, 1)))
            elif node.target in (nn.functional.adaptive_avg_pool1d, nn.functional.avg_pool1d):
                ops.append(LayerSpec("gap" if out_hw == (1, 1) else "avgpool", batch, cin, cout,
                                     in_hw, out_hw, dims=1))
            elif node.target in (nn.functional.adaptive_avg_pool2d, nn.functional.avg_pool2d):
                ops.append(LayerSpec("gap" if out_hw == (1, 1) else "avgpool", batch, cin, cout,
                                     in_hw, out_hw))
            elif node.target in _ELEMENTWISE_FNS or node.target is nn.functional.interpolate:
                c, where = channels_and_hw(out)
                ops.append(LayerSpec("relu", batch, c, c, where, where))
        elif node.op == "call_method" and node.target in ("flatten", "view", "reshape") \
                and len(out) == 2:
            ops.append(LayerSpec("flatten", batch, cin, cin, (1, 1), (1, 1)))
    return tuple(ops)


#: The fields of a :class:`LayerSpec` that follow the kept widths; every other field (op,
#: spatial sizes, kernel, stride, padding, bias) and the number and order of the ops do not.
_WIDTH_FIELDS = ("in_channels", "out_channels", "groups")


class _AffineSpecs:
    """Specs of any width vector from ``1 + len(groups)`` traces instead of one per vector.

    Each width field of each op (:data:`_WIDTH_FIELDS`) is an affine function of the kept
    widths, with integer slopes: a channel count is one group's width, a sum of several
    (concatenation) or a multiple (a Linear over a flattened C x H x W map), a depthwise conv's
    group count is its width. The slopes are read off traces with one group narrowed at a time,
    and :func:`affine_specs` checks the model on traces of mixed widths before using it.
    """

    def __init__(self, base: tuple[LayerSpec, ...], full: tuple[int, ...],
                 slopes: dict[tuple[int, str], dict[int, int]]) -> None:
        self.base = base
        self.full = full
        self.slopes = slopes  # (op index, field) -> {group index: slope}, non-zero only

    def __call__(self, channels: tuple[int, ...]) -> tuple[LayerSpec, ...]:
        delta = [c - f for c, f in zip(channels, self.full)]
        ops = list(self.base)
        changed: dict[int, dict[str, int]] = {}
        for (index, field), terms in self.slopes.items():
            value = getattr(self.base[index], field) + sum(a * delta[g] for g, a in terms.items())
            changed.setdefault(index, {})[field] = value
        for index, fields in changed.items():
            ops[index] = dataclasses.replace(ops[index], **fields)
        return tuple(ops)


def _probe_widths(space: GenomeSpace) -> list[int | None]:
    """Per group a kept width other than its full one (about half), ``None`` if it has none."""
    upper = space.upper()
    out = []
    for i, g in enumerate(space.groups):
        genome = list(upper)
        genome[i] = max(1, upper[i] // 2)
        width = space.channels(genome)[i]
        out.append(width if width != g.full_width else None)
    return out


def _fixed_fields(spec: LayerSpec) -> tuple:
    return tuple(getattr(spec, f.name) for f in dataclasses.fields(spec)
                 if f.name not in _WIDTH_FIELDS)


def _fit_affine(space: GenomeSpace, batch: int, hw: tuple[int, int]) -> _AffineSpecs | None:
    full = tuple(g.full_width for g in space.groups)
    base = traced_specs(space, full, batch, hw)
    fixed = [_fixed_fields(s) for s in base]
    slopes: dict[tuple[int, str], dict[int, int]] = {}
    for g, width in enumerate(_probe_widths(space)):
        if width is None:
            continue
        channels = list(full)
        channels[g] = width
        probe = traced_specs(space, tuple(channels), batch, hw)
        if len(probe) != len(base) or [_fixed_fields(s) for s in probe] != fixed:
            return None  # the ops themselves change with the width: trace every vector
        step = width - full[g]
        for index, (a, b) in enumerate(zip(base, probe)):
            for field in _WIDTH_FIELDS:
                diff = getattr(b, field) - getattr(a, field)
                if diff == 0:
                    continue
                if diff % step:
                    return None  # not an integer slope: not affine
                slopes.setdefault((index, field), {})[g] = diff // step
    return _AffineSpecs(base, full, slopes)


_Key = tuple[GenomeSpace, int, tuple[int, int]]
#: Per (space, batch, input size): the fitted model, or ``None`` where it does not hold.
_MODELS: dict[_Key, "_AffineSpecs | None"] = {}
#: Width vectors asked for per key in this process before its model is fitted.
_ASKED: dict[_Key, int] = {}


def _affine_model(space: GenomeSpace, batch: int, hw: tuple[int, int]) -> _AffineSpecs | None:
    """The checked affine model of the space's specs (fitted once per process), or ``None``
    where it does not hold."""
    import numpy as np

    key = (space, batch, hw)
    if key in _MODELS:
        return _MODELS[key]
    model = _fit_affine(space, batch, hw)
    if model is not None:
        # Two vectors of mixed widths, traced, must match the model exactly.
        rng = np.random.default_rng(len(space.groups))
        upper = space.upper()
        for _ in range(2):
            genome = [int(rng.integers(1, u + 1)) for u in upper]
            channels = tuple(space.channels(genome))
            if model(channels) != traced_specs(space, channels, batch, hw):
                model = None
                break
    _MODELS[key] = model
    _ASKED.pop(key, None)
    return model


def affine_specs(space: GenomeSpace, channels: tuple[int, ...], batch: int,
                 hw: tuple[int, int]) -> tuple[LayerSpec, ...]:
    """:func:`traced_specs` of ``channels``, without tracing once it pays: from a model of the
    specs as affine functions of the widths, fitted on ``1 + len(groups)`` traces per space,
    batch and input size and checked on two more (:class:`_AffineSpecs`); where the check
    fails, the traced specs themselves. A trace costs ~0.2 s (MobileNetV2), the model well
    under 1 ms: a HALP step asks for one vector per group and granule, a local-search step for
    hundreds. The model is fitted only once a process has asked for ``1 + len(groups)``
    vectors, so the fit never costs more than the tracing it replaces (an evaluator actor that
    times a few candidates keeps tracing them)."""
    key = (space, batch, hw)
    if key not in _MODELS:
        asked = _ASKED.get(key, 0) + 1
        if asked <= len(space.groups) + 1:
            _ASKED[key] = asked
            return traced_specs(space, channels, batch, hw)
    model = _affine_model(space, batch, hw)
    if model is None:
        return traced_specs(space, channels, batch, hw)
    return model(tuple(int(c) for c in channels))


def _pad(padding) -> int:
    if isinstance(padding, str):
        return 0  # 'same'/'valid': the shapes recorded carry the effect
    return _one(padding)


def _square(value) -> int | tuple[int, int]:
    """A 2-D conv/pool size as :class:`LayerSpec` holds it: one int when square, else (h, w)."""
    if isinstance(value, int):
        return value
    h, w = (int(v) for v in value)
    return h if h == w else (h, w)


def _pad2(padding) -> int | tuple[int, int]:
    if isinstance(padding, str):
        return 0  # 'same'/'valid': the shapes recorded carry the effect
    return _square(padding)


def _one(value) -> int:
    return int(value if isinstance(value, int) else value[0])


def _channels_and_hw(shape: tuple[int, ...]) -> tuple[int, tuple[int, int]]:
    """Channels and spatial size of an NCHW (or N, C) tensor for an elementwise op."""
    if len(shape) == 4:
        return int(shape[1]), (int(shape[2]), int(shape[3]))
    return int(shape[-1]), (1, 1)


def _first_kept(width: int, kept: int, multiple: int) -> list[int]:
    if multiple <= 1:
        return list(range(kept))
    block, per = width // multiple, kept // multiple
    return [b * block + p for b in range(multiple) for p in range(per)]


def layer_specs(space: GenomeSpace, channels: Sequence[int], *, batch: int = 1,
                input_hw: tuple[int, int] | None = None) -> list[LayerSpec]:
    """The ordered inference ops of the network pruned to ``channels`` (one width per group).

    Args:
        space: The model's genome space (it names the model and its groups).
        channels: Kept width of every group (``space.channels(genome)``).
        batch: Batch size recorded in every spec.
        input_hw: Input image size (default: the space's ``input_shape``).
    """
    if len(channels) != len(space.groups):
        raise ValueError(f"channels must hold {len(space.groups)} widths, got {len(channels)}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    for c, g in zip(channels, space.groups):
        if not 1 <= int(c) <= g.full_width:
            raise ValueError(f"width {c} of group '{g.name}' is outside [1, {g.full_width}]")
    hw = tuple(input_hw) if input_hw is not None else tuple(space.input_shape[1:])
    channels = tuple(int(c) for c in channels)
    return list(_cached_specs(space, channels, batch, hw))


@functools.lru_cache(maxsize=8192)
def _cached_specs(space: GenomeSpace, channels: tuple[int, ...], batch: int,
                  hw: tuple[int, int]) -> tuple[LayerSpec, ...]:
    # Searches revisit genomes (archive hits, local-search neighbours): building the ~200
    # frozen records of a ResNet-56 costs ~0.5 ms, a cache hit ~1 us. The space's family,
    # not its group kinds, decides how specs are written.
    from prunesearch.methods.families import family_entry

    return tuple(family_entry(space.family).layer_specs(space, channels, batch, hw))
