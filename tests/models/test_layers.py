import numpy as np
import pytest
import torch

import diycnn
from diycnn.models.layers import (
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    Input,
    MaxPooling2D,
    Rescaling,
)
from diycnn.models.recipes import get_recipe
from diycnn.models.sequential import Sequential, read_spec_file

# Keras 3's summary for the blog's model with 2 classes.
KERAS_SEED_CNN = [
    ("conv2d", "Conv2D", (None, 98, 98, 512), 14_336),
    ("max_pooling2d", "MaxPooling2D", (None, 49, 49, 512), 0),
    ("conv2d_1", "Conv2D", (None, 47, 47, 256), 1_179_904),
    ("max_pooling2d_1", "MaxPooling2D", (None, 23, 23, 256), 0),
    ("flatten", "Flatten", (None, 135_424), 0),
    ("dense", "Dense", (None, 256), 34_668_800),
    ("dropout", "Dropout", (None, 256), 0),
    ("dense_1", "Dense", (None, 128), 32_896),
    ("dropout_1", "Dropout", (None, 128), 0),
    ("dense_2", "Dense", (None, 32), 4_128),
    ("dropout_2", "Dropout", (None, 32), 0),
    ("dense_3", "Dense", (None, 2), 66),
]


def test_seed_cnn_summary_equals_keras():
    lines = []
    result = diycnn.summary("seed-cnn", print_fn=lines.append)
    got = [(r["name"], r["type"], r["output_shape"], r["params"]) for r in result["rows"]]
    assert got == KERAS_SEED_CNN
    assert result["total_params"] == 35_900_130 and result["non_trainable_params"] == 0
    text = "\n".join(lines)
    assert "│ conv2d (Conv2D)" in text and "(None, 98, 98, 512)" in text and "34,668,800" in text
    assert "Total params: 35,900,130 (136.95 MB)" in text


def test_seed_cnn_torch_module_matches_summary():
    spec = get_recipe("seed-cnn", 2).spec
    module = spec.build(seed=0)
    assert sum(p.numel() for p in module.parameters()) == 35_900_130
    assert module(torch.zeros(1, 3, 100, 100)).shape == (1, 2)
    # Keras initialisers: zero biases, glorot-uniform kernels within their limit
    w = module.body["dense"].weight.detach()
    limit = np.sqrt(6 / (135_424 + 256))
    assert 0.99 * limit <= float(w.abs().max()) <= limit * (1 + 1e-6)  # torch's default would be ~0.41x
    assert float(module.body["dense"].bias.detach().abs().max()) == 0.0


def test_batchnorm_gap_same_padding_shapes_and_counts():
    m = Sequential([Input((15, 15, 3)), Conv2D(4, 3, strides=2, padding="same"), BatchNormalization(),
                    AveragePooling2D(2, padding="same"), MaxPooling2D(3, strides=1, padding="same"),
                    GlobalAveragePooling2D(), Dense(3, activation="softmax")])
    rows = m.rows()
    assert [r["output_shape"] for r in rows] == [(None, 8, 8, 4), (None, 8, 8, 4), (None, 4, 4, 4),
                                                (None, 4, 4, 4), (None, 4), (None, 3)]
    assert rows[1]["trainable"] == 8 and rows[1]["non_trainable"] == 8
    module = m.build(seed=0).eval()
    assert module(torch.rand(2, 3, 15, 15)).shape == (2, 3)
    # the module's real parameter + buffer count equals the summary's
    real = sum(p.numel() for p in module.parameters())
    real += sum(b.numel() for n, b in module.named_buffers() if "running" in n)
    assert real == m.count_params()
    # every layer's torch output shape matches the summary's (channels-last) shape
    x = torch.rand(1, 3, 15, 15)
    for layer, row in zip(module.body.values(), rows):
        x = layer(x)
        shape = tuple(x.shape[1:]) if x.dim() == 2 else (x.shape[2], x.shape[3], x.shape[1])
        assert (None,) + shape == row["output_shape"]


def test_same_padding_average_excludes_padding():
    m = Sequential([Input((3, 3, 3)), AveragePooling2D(2, padding="same"), Flatten(), Dense(2)])
    pool = m.build().body["average_pooling2d"]
    out = pool(torch.ones(1, 3, 3, 3))
    assert torch.allclose(out, torch.ones_like(out))  # padding does not dilute the average


def test_flatten_uses_keras_channels_last_order():
    m = Sequential([Input((2, 2, 3)), Flatten(), Dense(1)])
    x = torch.arange(12, dtype=torch.float32).view(1, 3, 2, 2)  # (B, C, H, W)
    flat = m.build().body["flatten"](x)
    expected = x.permute(0, 2, 3, 1).reshape(1, -1)  # (B, H, W, C) order
    assert torch.equal(flat, expected)


def test_config_round_trip_is_exact():
    spec = get_recipe("seed-cnn", 3).spec
    config = spec.get_config()
    again = Sequential.from_config(config)
    assert again.get_config() == config
    assert again.rows() == spec.rows()


def test_keras_2_style_input_shape_and_add():
    m = Sequential(name="blog")
    m.add(Conv2D(8, (3, 3), activation="relu", input_shape=(10, 10, 3)))
    m.add(Flatten())
    m.add(Dense(2, activation="softmax"))
    assert m.input_shape == (10, 10, 3) and m.output_shape == (2,)


def test_bad_specs_get_keras_style_errors():
    with pytest.raises(ValueError, match="Unknown layer 'Conv2d'.*Did you mean 'Conv2D'"):
        Sequential.from_config({"layers": [{"Input": {"shape": [8, 8, 3]}}, {"Conv2d": {"filters": 2, "kernel_size": 3}}]})
    with pytest.raises(TypeError, match="missing the required argument 'filters'"):
        Conv2D(kernel_size=3)
    with pytest.raises(TypeError, match="unexpected argument 'filter'.*Did you mean 'filters'"):
        Conv2D(filter=3, kernel_size=3)
    with pytest.raises(ValueError, match="unknown activation 'rellu'.*Did you mean 'relu'"):
        Dense(2, activation="rellu")
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        Conv2D(2, "3")
    m = Sequential([Input((4, 4, 3)), Conv2D(2, 3)])
    with pytest.raises(ValueError, match=r"max_pooling2d \(MaxPooling2D\).*\(None, 2, 2, 2\).*\(None, 0, 0, 2\)"):
        m.add(MaxPooling2D(3))
    with pytest.raises(ValueError, match="needs an input shape"):
        Sequential([Dense(2)])
    with pytest.raises(ValueError, match="expects a flat input"):
        Sequential([Input((8, 8, 3)), Dense(2)])
    with pytest.raises(ValueError, match="Dropout: rate"):
        Dropout(1.5)


def test_spec_file_with_num_classes_placeholder(tiny_spec):
    spec = read_spec_file(tiny_spec, num_classes=5)
    assert spec.name == "tiny" and spec.output_shape == (5,)
    recipe = get_recipe(str(tiny_spec), 5)
    assert recipe.preprocessing.size == (16, 16) and recipe.preprocessing.input_scale == pytest.approx(1 / 255)


def test_spec_starting_with_rescaling_takes_raw_pixels(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"layers": [{"Input": {"shape": [8, 8, 3]}}, {"Rescaling": [0.00392156862745098]},'
                    ' "Flatten", {"Dense": {"units": 2, "activation": "softmax"}}]}')
    assert get_recipe(str(path), 2).preprocessing.input_scale == 1.0


def test_spec_class_count_mismatch(tiny_spec, tmp_path):
    path = tmp_path / "fixed.yaml"
    path.write_text(tiny_spec.read_text().replace("num_classes", "3"))
    with pytest.raises(ValueError, match="outputs shape \\(None, 3\\) but the data has 2 classes"):
        get_recipe(str(path), 2)


def test_unknown_model_name_suggests():
    with pytest.raises(ValueError, match="Unknown model 'seed-cn'.*Did you mean 'seed-cnn'"):
        get_recipe("seed-cn")


def test_rescaling_layer():
    m = Sequential([Input((2, 2, 3)), Rescaling(2.0, offset=1.0), Flatten(), Dense(2)])
    out = m.build().body["rescaling"](torch.ones(1, 3, 2, 2))
    assert torch.allclose(out, torch.full_like(out, 3.0))


def test_relu_moved_after_max_pool_gives_identical_outputs_and_gradients():
    import torch

    from diycnn.models.sequential import Sequential

    spec = Sequential.from_config({"layers": [
        {"Input": {"shape": [12, 12, 3]}}, {"Conv2D": {"filters": 6, "kernel_size": 3, "activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 2}}, {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu",
                                                        "padding": "same"}},
        {"MaxPooling2D": {"pool_size": 2, "padding": "same"}}, "Flatten", {"Dense": {"units": 2}}]})
    fused = spec.build(seed=0)
    plain = spec.build(seed=0)
    mods = list(plain.body.values())
    assert mods[1].post_act is not None and mods[0].act is None  # the move happened
    for conv, pool in ((mods[0], mods[1]), (mods[2], mods[3])):  # undo it: ReLU before the pool
        conv.act, pool.post_act = pool.post_act, None
    x = torch.randn(5, 3, 12, 12)
    a, b = fused(x), plain(x)
    assert torch.equal(a, b)
    a.sum().backward()
    b.sum().backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_huge_pages_are_asked_for_by_training_commands_never_at_import():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "DIYCNN_MALLOC")}

    def asked(code, extra=None):
        out = subprocess.run([sys.executable, "-c", code], env={**env, **(extra or {})}, capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1]
        return out

    assert asked("import os, diycnn; diycnn.summary; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))") == "None"
    via_cli = ("import os\nfrom diycnn.cli import main\nmain({argv!r})\n"
               "print(os.environ.get('THP_MEM_ALLOC_ENABLE'))")
    assert asked(via_cli.format(argv=["train", "/nonexistent"])) == "1"  # set before PyTorch's first tensor
    assert asked(via_cli.format(argv=["cache"])) == "None"  # listing the cache trains nothing
    assert asked(via_cli.format(argv=["train", "/nonexistent"]), {"DIYCNN_MALLOC": "system"}) == "None"


def test_reuse_freed_memory_nests_and_always_restores(monkeypatch):
    from diycnn.training import device

    calls = []

    class FakeLibc:
        def mallopt(self, option, value):
            calls.append((option, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("trim", pad))
            return 1

    monkeypatch.setattr(device, "_glibc", lambda: FakeLibc())
    with pytest.raises(KeyboardInterrupt):
        with device.reuse_freed_memory():
            with device.reuse_freed_memory():
                assert calls == [(device.M_MMAP_MAX, 0), (device.M_TRIM_THRESHOLD, 1 << 30)]  # set once
            assert len(calls) == 2  # the inner exit restores nothing
            raise KeyboardInterrupt
    assert calls[2:] == [(device.M_MMAP_MAX, device.GLIBC_MMAP_MAX),
                         (device.M_TRIM_THRESHOLD, device.GLIBC_TRIM_THRESHOLD), ("trim", 0)]
    assert device._reuse_depth == 0
