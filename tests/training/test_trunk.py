"""Fine-tuning on the frozen trunk's activations (training/trunk.py) is fine-tuning the network:
the cut network computes what the whole one does, and without augmentation a fit on the
activations ends with the weights of a fit on the photos; views are reproducible per seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diycnn.data.augment import image_input_fn
from diycnn.data.loader import ArrayBatches
from diycnn.models.face_net import FaceRecognitionNet
from diycnn.models.recipes import get_recipe
from diycnn.training import trunk
from diycnn.training.trainer import FitConfig, Trainer

CPU = torch.device("cpu")
SIZE = (150, 150)


def _classifier(start: dict | None = None):
    """face-finetune's network with random weights (what is compared is the arithmetic, not the
    faces), or with the weights `start`."""
    recipe = get_recipe("face-finetune", 2)
    module = recipe.build(seed=0)
    if start is not None:
        module.load_state_dict(start)
    module.freeze(0.6)
    return recipe, module


def _photos(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *SIZE, 3), dtype=np.uint8), np.arange(n) % 2


@pytest.mark.parametrize("stages", [1, 4, 10, 14])
def test_the_top_of_any_cut_computes_the_descriptor(stages):
    torch.manual_seed(0)
    net = FaceRecognitionNet(mirror=False).eval()
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(net.top(net.trunk(x, stages), stages), net.descriptor(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="1 to 15 stages"):
        net.trunk(x, 16)


def test_the_cut_classifier_predicts_what_the_whole_one_does():
    recipe, module = _classifier()
    stages = trunk.frozen_trunk(module)
    assert stages == 10 and module.backbone.mirror  # face-finetune: 60% of 16 stages, mirrored faces
    x, _ = _photos(3, 1)
    to_input = image_input_fn(recipe.preprocessing)
    h = trunk.activations(module, stages, x, to_input, 0, SIZE, CPU, "fp32", seed=0)
    assert h.shape == (3, 1, 2, 128, 8, 8)  # one view, the face and its mirror image
    module.eval()
    with torch.no_grad():
        whole = module(to_input(torch.from_numpy(x), False))
        cut = trunk.TopOfTrunk(module, stages).eval()(trunk.view_input(torch.from_numpy(h), False))
    torch.testing.assert_close(cut, whole, atol=1e-5, rtol=1e-5)
    assert set(trunk.TopOfTrunk(module, stages).state_dict()) == set(module.state_dict())  # one checkpoint format


def test_without_augmentation_training_on_activations_is_training_the_network():
    x, y = _photos(12, 2)
    xv, yv = _photos(4, 3)
    config = FitConfig(epochs=2, lr=1e-3, patience=None, seed=0, optimizer="adamw", weight_decay=1e-2)
    recipe, plain = _classifier()
    start = {k: v.clone() for k, v in plain.state_dict().items()}
    to_input = image_input_fn(recipe.preprocessing)
    Trainer(plain, ArrayBatches(x, y, 4, shuffle=True), ArrayBatches(xv, yv, 4), to_input, config, CPU,
            "fp32").fit()

    _, module = _classifier(start)
    stages = trunk.frozen_trunk(module)
    h = trunk.activations(module, stages, x, to_input, 0, SIZE, CPU, "fp32", seed=0)
    hv = trunk.activations(module, stages, xv, to_input, 0, SIZE, CPU, "fp32", seed=0)
    state, _ = Trainer(trunk.TopOfTrunk(module, stages), ArrayBatches(h, y, 4, shuffle=True),
                       ArrayBatches(hv, yv, 4), trunk.view_input, config, CPU, "fp32").fit()
    assert len(state.history) == 2
    want, got = plain.state_dict(), module.state_dict()
    moved = [k for k in want if not torch.equal(want[k], start[k])]
    assert any(k.startswith("backbone.conv256") for k in moved) and not any(k.startswith("backbone.conv32") for k in moved)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-4, rtol=1e-4, msg=key)


def test_augmented_views_differ_and_repeat_with_the_seed():
    recipe, module = _classifier()
    stages = trunk.frozen_trunk(module)
    x, _ = _photos(2, 4)
    to_input = image_input_fn(recipe.preprocessing, recipe.defaults["augment"])
    a = trunk.activations(module, stages, x, to_input, 3, SIZE, CPU, "fp32", seed=0)
    b = trunk.activations(module, stages, x, to_input, 3, SIZE, CPU, "fp32", seed=0)
    c = trunk.activations(module, stages, x, to_input, 3, SIZE, CPU, "fp32", seed=1)
    assert a.shape[1] == 3 and not np.allclose(a[:, 0], a[:, 1])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    torch.manual_seed(5)
    first = trunk.view_input(torch.from_numpy(a), True)
    torch.manual_seed(5)
    np.testing.assert_array_equal(first.numpy(), trunk.view_input(torch.from_numpy(a), True).numpy())


def test_networks_that_cannot_be_cut_take_the_plain_path():
    _, module = _classifier()
    for p in module.parameters():
        p.requires_grad_(True)
    assert trunk.frozen_trunk(module) == 0  # nothing frozen
    assert trunk.frozen_trunk(get_recipe("finetune", 2).build(seed=0)) == 0  # a timm network
    assert trunk.views_that_fit(_classifier()[1], 10, SIZE, 10 ** 9, 0, 8) == 0  # would not fit in memory
    assert trunk.views_that_fit(_classifier()[1], 10, SIZE, 300, 60, 8) == 8  # 300 photos' 8 views: 157 MB
