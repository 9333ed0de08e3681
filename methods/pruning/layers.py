"""The layer types channel pruning works on, in one place.

Convolutions over images (``Conv2d``) and over sequences (``Conv1d``, e.g. a keyword-spotting
or time-series network) are pruned alike: a filter is an output channel, its weight one row of
``weight.flatten(1)``; batch norms over either carry a per-channel scale. Transposed
convolutions (a segmentation decoder's upsampling) are pruned by their output channels too,
whose weights sit in the weight's second axis (:func:`filter_weights`). ``Linear`` layers (an
MLP's hidden widths, a classifier's inputs) are pruned by their output features.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BATCH_NORMS", "CONVOLUTIONS", "CONVS", "PRUNABLE_LAYERS", "TRANSPOSED_CONVS",
           "example_inputs", "filter_weights", "token_vocabulary"]

#: Convolutions whose output channels a gene sets (weight ``(out, in / groups, *kernel)``).
CONVS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d)
#: Transposed convolutions (weight ``(in, out / groups, *kernel)``).
TRANSPOSED_CONVS: tuple[type[nn.Module], ...] = (nn.ConvTranspose1d, nn.ConvTranspose2d)
#: Batch norms whose per-channel scale and shift follow a group's channels.
BATCH_NORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d)
#: Both kinds of convolution (output channels are filters; groups and kernels alike).
CONVOLUTIONS: tuple[type[nn.Module], ...] = (*CONVS, *TRANSPOSED_CONVS)
#: Every layer whose output width a gene sets.
PRUNABLE_LAYERS: tuple[type[nn.Module], ...] = (*CONVOLUTIONS, nn.Linear)


def filter_weights(module: nn.Module) -> torch.Tensor:
    """The weights of each output channel of ``module``, one row per channel (detached).

    A transposed conv's output channel ``o`` of group ``g`` owns ``weight[g * in_g:(g + 1) *
    in_g, o % out_g]``; its rows are gathered so that row ``o`` holds them.
    """
    weight = module.weight.detach()
    if not isinstance(module, TRANSPOSED_CONVS):
        return weight.flatten(1)
    groups = int(module.groups)
    in_g = weight.shape[0] // groups
    rows = [weight[g * in_g:(g + 1) * in_g].transpose(0, 1).flatten(1) for g in range(groups)]
    return torch.cat(rows, dim=0) if groups > 1 else rows[0]


def token_vocabulary(model: nn.Module) -> int | None:
    """The vocabulary size when ``model`` reads token ids (its first layer with weights is an
    ``nn.Embedding``/``nn.EmbeddingBag``: a text or sequence-of-symbols network), else None
    (float inputs). Every example input made for the network follows this."""
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            return int(module.num_embeddings)
        if next(module.parameters(recurse=False), None) is not None:
            return None
    return None


def example_inputs(model: nn.Module, shape: tuple[int, ...], *, random: bool = False,
                   generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """A batch of inputs of ``shape`` (batch first) for ``model``: token ids (int64, uniform
    over the vocabulary, or zeros) for a network that reads them (:func:`token_vocabulary`),
    else ``dtype`` values (standard normal, or zeros)."""
    vocabulary = token_vocabulary(model)
    if vocabulary is not None:
        if random:
            return torch.randint(0, vocabulary, shape, generator=generator).to(device)
        return torch.zeros(shape, dtype=torch.int64, device=device)
    if random:
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    return torch.zeros(shape, dtype=dtype, device=device)
