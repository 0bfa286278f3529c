"""A corpus of hostile folders (runs, exports, caches, projects, settings files), each run through
the commands a user would point at it, each command a fresh installed `diycnn` process: the answer is
one line naming the file (exit 2), or the command works and says what it left out. Never a
traceback, never unbounded memory (peak RSS is measured per process), never a request to a hub,
never a write outside the project, never a raw control character on the terminal.

A case is a function below named `case_*`: it builds its hostile folder and returns what to run and
what must be said (a Case, or one per command). A new case is covered by adding the function.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import diycnn
from tests.conftest import TINY_SPEC, make_dataset, offline_env

DIYCNN = str(Path(sys.executable).with_name("diycnn"))
MAX_RSS_MB = 2500  # a diycnn command that refuses a file stays far below this (torch itself: ~500 MB)
# runs `diycnn ARGS` and reports its peak resident memory on stderr's last line
WRAPPER = ("import resource, subprocess, sys\n"
           "code = subprocess.run(sys.argv[1:]).returncode\n"
           "print(f'maxrss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr)\n"
           "sys.exit(code)\n")


@dataclass
class Case:
    args: list[str]
    says: list[str]  # each must appear in the output (stderr + stdout)
    code: int = 2
    never: list[str] = field(default_factory=list)  # each must not appear (work done before the refusal)
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 300


@dataclass
class Base:
    root: Path
    data: Path
    run: Path
    export: Path
    spec: Path

    def copy_run(self, name: str) -> Path:
        out = self.root / "cases" / name
        shutil.copytree(self.run, out, ignore=shutil.ignore_patterns("export-*"))
        return out

    def copy_export(self, name: str) -> Path:
        out = self.root / "cases" / name
        shutil.copytree(self.export, out)
        return out


def _edit_json(path: Path, edit) -> None:
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


# --- runs -----------------------------------------------------------------------------------------------
def case_activation_bomb(b: Base) -> Case:
    """62 KB of run: a 4096x4096 input into Conv2D(512) asks for 17 GB per photo."""
    from diycnn.models.layers import Conv2D, Dense, GlobalAveragePooling2D, Input
    from diycnn.models.sequential import Sequential

    run = b.copy_run("activation-bomb")
    spec = Sequential([Input(shape=(4096, 4096, 3)), Conv2D(512, (3, 3), activation="relu"),
                       GlobalAveragePooling2D(), Dense(2, activation="softmax")], name="bomb")

    def edit(info):
        info["model"]["spec"] = spec.get_config()
        info["model"]["preprocessing"]["size"] = [4096, 4096]
    _edit_json(run / "model.json", edit)
    return _every_command(b, run, ["model.json", "GB for one layer's output"])


def _every_command(b: Base, run: Path, says: list[str]) -> list[Case]:
    """The commands that load a run: predict, evaluate, explain, export."""
    photo = str(b.data / "red" / "red_000.png")
    return [Case(args, says) for args in (["predict", str(run), photo], ["evaluate", str(run), str(b.data)],
                                          ["explain", str(run), photo], ["export", str(run), "--format", "onnx"])]


def case_hub_backbone(b: Base) -> Case:
    """A backbone named 'hf-hub:attacker/beacon-model' would make loading the run call the hub."""
    run = b.copy_run("hub-backbone")
    _edit_json(run / "model.json", lambda info: info["model"].update(kind="backbone",
                                                                      backbone="hf-hub:attacker/beacon-model"))
    return _every_command(b, run, ["model.json", "hf-hub:attacker/beacon-model"])


def case_huge_integer_in_model_json(b: Base) -> Case:
    run = b.copy_run("huge-int")
    text = (run / "model.json").read_text()
    (run / "model.json").write_text(text[:text.rindex("}")] + ', "seed": ' + "9" * 5000 + "}")
    return Case(["evaluate", str(run), str(b.data)], ["model.json", "not valid JSON"])


def case_signature_zip_bomb(b: Base) -> Case:
    """training_signatures.npz whose thumbs member inflates to 2 GB: evaluate leaves the check out."""
    run = b.copy_run("zip-bomb")
    rows = 2_000_000
    with zipfile.ZipFile(run / "training_signatures.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        small = {"names": np.array(["red/a.png"]), "phash": np.zeros(1, np.uint64), "ok": np.ones(1, bool),
                 "version": np.array(2)}
        for key, arr in small.items():
            buf = io.BytesIO()
            np.save(buf, arr)
            zf.writestr(f"{key}.npy", buf.getvalue())
        with zf.open("thumbs.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (rows, 32, 32)})
            block = bytes(1 << 24)
            for _ in range(rows * 1024 // len(block)):
                fh.write(block)
    manifest = json.loads((run / "manifest.json").read_text())
    assert "training_signatures.npz" not in manifest["files"]  # not manifest-checked: bounded by its header
    return Case(["evaluate", str(run), str(b.data)], ["training_signatures.npz", "at most", "Near-duplicates"],
                code=0)


def case_control_characters_in_class_names(b: Base) -> Case:
    """Class names holding OSC and CSI sequences are printed as text, never sent raw to the terminal."""
    run = b.copy_run("escape-names")
    _edit_json(run / "model.json", lambda info: info.update(class_names=["blue\x1b]0;pwned\x07", "red\x1b[2J"]))
    return Case(["predict", str(run), str(b.data / "red")], ["red?[2J"], code=0)


def case_tampered_checkpoint(b: Base) -> Case:
    import torch

    from diycnn.io import atomic_save_tensors
    from diycnn.training.trainer import CHECKPOINT

    run = b.copy_run("bad-checkpoint")
    _edit_json(run / "model.json", lambda info: info.update(status="interrupted"))
    atomic_save_tensors(run / CHECKPOINT, {"model.nothing": torch.zeros(3)}, {"loop": "{}", "param_groups": "[]"})
    return Case(["train", "--resume", str(run)], [CHECKPOINT, "cannot be resumed from"])


def case_resume_with_a_damaged_model_json(b: Base) -> Case:
    import torch

    from diycnn.io import atomic_save_tensors
    from diycnn.training.trainer import CHECKPOINT

    run = b.copy_run("bad-resume-model-json")

    def edit(info):
        info.update(status="interrupted")
        info["training"] = {"epochs": "many"}
    _edit_json(run / "model.json", edit)
    atomic_save_tensors(run / CHECKPOINT, {"model.nothing": torch.zeros(3)}, {"loop": "{}", "param_groups": "[]"})
    return Case(["train", "--resume", str(run)], ["model.json", "does not describe a run diycnn can resume"])


# --- split and settings files ---------------------------------------------------------------------------
def _split_case(b: Base, name: str, edit) -> Case:
    path = b.root / "cases" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    split = json.loads((b.run / "split.json").read_text())
    edit(split)
    path.write_text(json.dumps(split))
    return Case(["train", str(b.data), "--model", str(b.spec), "--split", str(path), "--epochs", "1",
                 "--out", str(b.root / "cases" / f"{name}-run")], [path.name], never=["Decoding"])


def case_split_version_as_text(b: Base) -> Case:
    return _split_case(b, "split-version-text", lambda s: s.update(version="2"))


def case_split_with_dict_entries(b: Base) -> Case:
    return _split_case(b, "split-dict-entries", lambda s: s["splits"]["train"].update(red=[{"path": "red/a.png"}]))


def case_yaml_alias_bomb(b: Base) -> Case:
    """411 bytes of YAML aliases that expand to 9^7 strings."""
    path = b.root / "cases" / "bomb.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcde", "bcdef"):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    lines.append(f"epochs: [{','.join(['*f'] * 9)}]")
    path.write_text("\n".join(lines) + "\n")
    return Case(["train", str(b.data), "--model", str(b.spec), "--config", str(path)], ["bomb.yaml", "aliases"])


# --- exports --------------------------------------------------------------------------------------------
def _onnx_bomb(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [20000, 20000, 8])
    nodes = [helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ConstantOfShape", ["shape"], ["big"]),
             helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
             helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("Add", ["m", "total"], ["s"]),
             helper.make_node("Slice", ["s", "starts", "ends", "axes"], ["two"]),
             helper.make_node("Softmax", ["two"], ["probabilities"], axis=1)]
    inits = [shape, helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
             helper.make_tensor("ends", TensorProto.INT64, [1], [2]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "bomb", [helper.make_tensor_value_info("image", TensorProto.UINT8,
                                                                            ["N", 16, 16, 3])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def case_onnx_shape_bomb(b: Base) -> Case:
    out = b.copy_export("onnx-bomb")
    _onnx_bomb(out / "model.onnx")
    return Case(["predict", str(out), str(b.data / "red")], ["model.onnx", "ConstantOfShape"])


def case_export_size_differs_from_its_model(b: Base) -> Case:
    out = b.copy_export("onnx-size")
    _edit_json(out / "export.json", lambda info: info["preprocessing"].update(size=[64, 64]))
    return Case(["predict", str(out), str(b.data / "red")], ["model.onnx", "prepares photos as [1, 64, 64, 3]"])


def _aligning(out: Path) -> None:
    _edit_json(out / "export.json", lambda info: (info["preprocessing"].update(align=True),
                                                  info.update(landmarks={"file": "landmarks.onnx"})))


def case_garbage_landmarks(b: Base) -> Case:
    out = b.copy_export("landmarks-garbage")
    _aligning(out)
    (out / "landmarks.onnx").write_bytes(b"\x08\x07garbage" * 100)
    return Case(["predict", str(out), str(b.data / "red")], ["landmarks.onnx", "not a loadable ONNX model"])


def case_landmarks_linked_outside(b: Base) -> Case:
    out = b.copy_export("landmarks-link")
    _aligning(out)
    elsewhere = b.root / "elsewhere.onnx"
    shutil.copy(out / "model.onnx", elsewhere)
    (out / "landmarks.onnx").symlink_to(elsewhere)
    return Case(["predict", str(out), str(b.data / "red")], ["landmarks.onnx", "is a link"])


# --- the app's project, and the weights folder --------------------------------------------------------
def case_app_with_linked_runs(b: Base) -> Case:
    project = b.root / "cases" / "linked-project"
    shutil.copytree(b.data, project)
    (project / ".diycnn").mkdir()
    (b.root / "outside-runs").mkdir()
    (project / ".diycnn" / "runs").symlink_to(b.root / "outside-runs")
    return Case(["ui", "--project", str(project), "--port", "0"], [".diycnn/runs", "is a link"], timeout=60)


def case_altered_face_weights(b: Base) -> Case | None:
    from diycnn.models import face_weights

    found = face_weights.installed()
    if found is None:
        return None  # tests/conftest.face_model_dir fails CI where make install did not fetch them
    weights = b.root / "cases" / "weights"
    shutil.copytree(found.parent, weights, ignore=shutil.ignore_patterns("tfjs-*", "*.tgz", "*.onnx"))
    shard = weights / found.name / "face_recognition_model.bin"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))
    return Case(["weights"], ["face_recognition_model.bin", "changed since installed"], code=1,
                env={"DIYCNN_WEIGHTS": str(weights)})


def case_hostile_cache(b: Base) -> list[Case]:
    """A cache folder someone else filled (DIYCNN_CACHE): a feature folder linked out of the cache,
    a link loop, a damaged key.json, a decoded-photo file whose header claims 10^12 photos. Listing
    and clearing it says what it can; nothing outside the cache is touched."""
    victim = b.root / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "keep.txt").write_text("keep")
    cases = []
    for i, args in enumerate((["cache"], ["cache", "clear"])):  # each on its own copy: they run side by side
        cache = b.root / "cases" / f"cache-{i}"
        (cache / "features" / "abc").mkdir(parents=True)
        (cache / "features" / "abc" / "key.json").write_text('{"backbone": ' * 50)
        (cache / "features" / "abc" / "loop").symlink_to(cache / "features")
        (cache / "features" / "linked").symlink_to(victim)
        (cache / "decoded").mkdir()
        with open(cache / "decoded" / "bomb.npy", "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (10 ** 12, 224, 224, 3)})
        cases.append(Case(args, ["features" if len(args) == 1 else "Removed"], code=0,
                          env={"DIYCNN_CACHE": str(cache)}))
    return cases


CASES = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    root = tmp_path_factory.mktemp("hostile")
    data = make_dataset(root / "photos", {"red": 8, "blue": 8})
    spec = root / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    with offline_env(root / "cache"):
        run = diycnn.train(data, model=str(spec), out=root / "run", epochs=1).dir
        export = diycnn.export(run, "onnx", out=root / "export-onnx")
    return Base(root, data, run, export, spec)


class _Beacon:
    """A stand-in hub (HF_ENDPOINT): counts the connections a command makes to it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.hits = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            conn.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"


def _run(case: Case, base: Base, beacon: _Beacon) -> str | None:
    """Run one case in a fresh process; None when it behaved, else what went wrong."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIYCNN_", "HF_"))}
    env.update({"DIYCNN_CACHE": str(base.root / "user-cache"), "HF_ENDPOINT": beacon.url, "COLUMNS": "120",
                **case.env})
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, DIYCNN, *case.args], cwd=base.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=case.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its wrapper
        proc.communicate()
        return f"diycnn {' '.join(case.args)}: still running after {case.timeout:.0f} s"
    out, err = stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")
    err, _, rss = err.rstrip().rpartition("\n")
    rss_mb = int(rss.split("=")[1]) / 1024 if rss.startswith("maxrss_kb=") else float("inf")
    text = err + out
    problems = []
    if proc.returncode != case.code:
        problems.append(f"exit {proc.returncode}, expected {case.code}")
    if "Traceback" in text:
        problems.append("a traceback")
    if case.code == 2 and len([line for line in err.splitlines() if line.startswith("error: ")]) != 1:
        problems.append("not one 'error: ' line")
    problems += [f"does not say {s!r}" for s in case.says if s not in text]
    problems += [f"says {s!r}: it worked before refusing" for s in case.never if s in text]
    if "\x1b" in out or "\x1b" in err or "\x07" in out:
        problems.append("a control character reached the terminal")
    if rss_mb > MAX_RSS_MB:
        problems.append(f"peak memory {rss_mb:.0f} MB")
    if not problems:
        return None
    return f"diycnn {' '.join(case.args)}: {'; '.join(problems)}\n--- stderr\n{err[-2000:]}\n--- stdout\n{out[-1000:]}"


def test_every_hostile_folder_gets_one_line_in_a_fresh_process(base):
    cases: dict[str, Case] = {}
    for name, fn in CASES.items():
        made = fn(base)
        for i, case in enumerate(made if isinstance(made, list) else [made] if made is not None else []):
            cases[f"{name}:{i}:{case.args[0]}" if isinstance(made, list) else name] = case
    beacon = _Beacon()
    with ThreadPoolExecutor(2) as pool:  # two cores: two processes at a time
        results = dict(zip(cases, pool.map(lambda c: _run(c, base, beacon), cases.values())))
    failed = {name: why for name, why in results.items() if why is not None}
    assert not failed, "\n\n".join(f"[{name}] {why}" for name, why in failed.items())
    assert beacon.hits == 0, "a command asked the hub for a backbone named in a run folder"
    assert list((base.root / "outside-runs").iterdir()) == []  # the app wrote nothing through the link
    assert sorted(p.name for p in (base.root / "victim").iterdir()) == ["keep.txt", "sub"]  # nor the cache


def test_the_corpus_covers_runs_exports_settings_projects_and_weights():
    assert {"activation_bomb", "hub_backbone", "signature_zip_bomb", "onnx_shape_bomb", "garbage_landmarks",
            "yaml_alias_bomb", "split_version_as_text", "app_with_linked_runs", "altered_face_weights",
            "tampered_checkpoint"} <= set(CASES)

