"""The final fine-tune with distillation from the dense teacher (digits CNN, seconds)."""

from __future__ import annotations

import copy

import pytest
import torch

from prunesearch.methods.distill import FeatureTaps, attention_loss, kd_loss, stage_names
from prunesearch.methods.finetune import FinetuneSettings, final_finetune


def test_distillation_losses_vanish_for_the_teacher_itself():
    torch.manual_seed(0)
    logits = torch.randn(8, 10)
    assert float(kd_loss(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_loss(torch.randn(8, 10), logits)) > 0.0
    feats = [torch.randn(4, 16, 8, 8), torch.randn(4, 32, 4, 4)]
    assert float(attention_loss(feats, feats)) == pytest.approx(0.0, abs=1e-9)
    # Channel counts may differ (a pruned student), spatial sizes may not.
    narrow = [f[:, : f.shape[1] // 2] for f in feats]
    assert float(attention_loss(narrow, feats)) > 0.0


@pytest.mark.parametrize("distill", ["kd", "attention"])
def test_distilled_finetune_trains_a_pruned_student(distill):
    from prunesearch.methods.data import ImageTensorDataset
    from prunesearch.methods.models import DigitsCNN
    from prunesearch.methods.pruning import apply_genome, genome_space

    torch.manual_seed(0)
    torch.set_num_threads(1)
    teacher = DigitsCNN().eval()
    space = genome_space(teacher, "digits-cnn", granularity=8)
    student = apply_genome(teacher, space, space.uniform_genome(0.5)).module
    before = copy.deepcopy(student.state_dict())
    images = torch.randint(0, 17, (128, 1, 8, 8), dtype=torch.uint8)
    data = ImageTensorDataset(images=images, labels=torch.randint(0, 10, (128,)), scale=1 / 16,
                              mean=[0.3], std=[0.4])
    with FeatureTaps(student, stage_names(student)) as taps:
        student(data.batch(slice(0, 2))[0])
    assert [f.shape[1] for f in taps.features] == space.channels(space.uniform_genome(0.5))
    settings = FinetuneSettings(epochs=2, batch_size=32, distill=distill, augmentation=False)
    result = final_finetune(student, data, settings, seed=0, teacher=teacher, augment=False)
    assert result.epochs == 2 and len(result.history) == 2
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    with pytest.raises(ValueError, match="needs the dense teacher"):
        final_finetune(student, data, settings, seed=0)
