"""The low-label protocol: every fine-tune trains on one seeded subset of the labelled set.

``PipelineSpec.train_subset`` (``--train-subset``) asks for N images (an integer >= 1) or a
fraction in (0, 1] of the fine-tune train set (``--train``, else the fine-tune configs'
``DATASETS.TRAIN``, which must then name one set for every init). The draw ranks every image id
by ``sha256("<subset seed>:<image id>")`` and keeps the first N: the subset seed
(``--subset-seed``) alone decides it, not the fine-tune seed or a library's random generator,
so every init and every fine-tune seed trains on the same images, another subset seed draws
other images, and for one subset seed a smaller subset lies inside every larger one.

Written once to ``DIR/data`` (atomically) and reused by every rerun in ``DIR``:

- ``train_subset.json``: the train set, N of how many images, the subset seed, the image ids
  and file names;
- ``<subset name>.json``: a COCO json of those images and their annotations (the train set's own
  json filtered when it is a COCO json, detectron2's ``convert_to_coco_dict`` otherwise),
  registered as ``<train>_subset<N>_s<S>`` through ``DATASETS.SSL.REGISTER``, so the training
  subprocesses register it as they register any spec.

A rerun in ``DIR`` asking for another train set, size or subset seed, or for none, is an error
before any stage, never a silent mix of fine-tunes trained on different images.
"""
import glob
import hashlib
import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

__all__ = [
    "MANIFEST",
    "draw_subset",
    "labelled_note",
    "parse_subset",
    "subset_size",
    "train_subset_opts",
]

MANIFEST = os.path.join("data", "train_subset.json")

Request = Union[int, float]


def parse_subset(value: Union[str, int, float]) -> Request:
    """``"12"`` / ``12`` -> 12 images; ``"0.1"`` / ``0.1`` -> a tenth of the train set.

    Raises:
        ValueError: not a number, an integer below 1, or a fraction outside (0, 1].
    """
    what = f"--train-subset {value!r}"
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a number of images or a fraction")
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        value = int(value)
    elif isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{what}: expected N images (an integer >= 1) or a fraction in "
                             "(0, 1]") from None
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"{what}: a number of images must be at least 1")
        return value
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{what}: a fraction must be in (0, 1]; N images is an integer")
    return float(value)


def subset_size(request: Request, total: int) -> int:
    """Images a :func:`parse_subset` request keeps of ``total`` (a fraction: rounded, at least
    one).

    Raises:
        ValueError: more images asked for than the train set holds.
    """
    if isinstance(request, int):
        if request > total:
            raise ValueError(
                f"--train-subset {request}: the train set holds only {total} images"
            )
        return request
    return max(1, int(request * total + 0.5))


def draw_subset(image_ids: Sequence, size: int, seed: int) -> List[str]:
    """The ``size`` ids ranked first by ``sha256("<seed>:<id>")``, as strings.

    Args:
        image_ids: every image id of the train set (compared as strings; their order decides
            only the order of the answer).
        size: how many to keep.
        seed: the subset seed.

    Returns:
        the kept ids in the order of ``image_ids``.
    """
    keys = list(dict.fromkeys(str(i) for i in image_ids))
    ranked = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    kept = set(ranked[:size])
    return [k for k in keys if k in kept]


def _load_config(config: str, opts: Sequence[str]):
    from soco_d2.checkpoint import load_detector_cfg

    return load_detector_cfg(config, opts)


def _train_name(ft_opts: Dict[str, List[str]]) -> str:
    """The one train set every fine-tune config reads, registered in this process."""
    from soco_d2.data.datasets import register_from_cfg

    names = set()
    for config, opts in ft_opts.items():
        cfg = _load_config(config, opts)
        register_from_cfg(cfg)
        names.add(tuple(cfg.DATASETS.TRAIN))
    if len(names) != 1 or len(next(iter(names))) != 1:
        shown = ", ".join(sorted(str(n) for n in names))
        raise ValueError(
            f"--train-subset: the fine-tune configs train on {shown}; a subset is drawn from "
            "one set: give --train"
        )
    return next(iter(names))[0]


def _image_root(train: str, chosen: List[Dict]) -> str:
    """The folder the subset json's file names are relative to: a COCO json's image root, else
    the chosen images' common folder."""
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(train)
    if meta.get("json_file", None) and os.path.isfile(meta.json_file):
        return os.path.abspath(meta.image_root)
    return os.path.abspath(os.path.commonpath([os.path.dirname(r["file_name"]) for r in chosen]))


def _coco_dict(train: str, chosen: List[Dict]) -> Dict:
    """The ``chosen`` records of ``train`` as a COCO dict with file names relative to
    :func:`_image_root`."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets.coco import convert_to_coco_dict

    meta = MetadataCatalog.get(train)
    keep = {str(r["image_id"]) for r in chosen}
    if meta.get("json_file", None) and os.path.isfile(meta.json_file):
        with open(meta.json_file) as f:
            data = json.load(f)
        data["images"] = [im for im in data["images"] if str(im["id"]) in keep]
        ids = {im["id"] for im in data["images"]}
        data["annotations"] = [a for a in data.get("annotations", []) if a["image_id"] in ids]
        return data
    tmp = f"{train}__subset_to_coco"
    DatasetCatalog.register(tmp, lambda: list(chosen))
    MetadataCatalog.get(tmp).set(thing_classes=list(meta.thing_classes))
    try:
        data = convert_to_coco_dict(tmp)
    finally:
        DatasetCatalog.remove(tmp)
        MetadataCatalog.remove(tmp)
    root = _image_root(train, chosen)
    for im in data["images"]:
        im["file_name"] = os.path.relpath(im["file_name"], root)
    return data


def _check_manifest(out: str, manifest: Optional[Dict], wanted: Optional[Dict]) -> None:
    """A DIR whose fine-tunes trained on other images than this run asks for is an error."""
    path = os.path.join(out, MANIFEST)
    if manifest is None:
        if wanted is not None and glob.glob(os.path.join(out, ".done", "finetune__*.json")):
            raise ValueError(
                f"{out}: its fine-tunes trained on the whole train set; a --train-subset run "
                "needs another --output"
            )
        return
    if wanted is None:
        raise ValueError(
            f"{out}: its fine-tunes trained on the labelled subset of {path} ({manifest['size']} "
            f"of {manifest['total']} images of {manifest['dataset']}, subset seed "
            f"{manifest['seed']}); give --train-subset {manifest['size']} --subset-seed "
            f"{manifest['seed']}, or another --output"
        )
    fields = ("dataset", "size", "total", "seed")
    if any(manifest[k] != wanted[k] for k in fields):
        had = ", ".join(f"{k} {manifest[k]!r}" for k in fields)
        asks = ", ".join(f"{k} {wanted[k]!r}" for k in fields)
        raise ValueError(
            f"{out}: the labelled subset was drawn with {had}; this run asks for {asks}; use "
            "another --output"
        )


def train_subset_opts(
    spec, out: str, ft_opts: Dict[str, List[str]]
) -> Tuple[Dict[str, List[str]], Optional[Dict]]:
    """Point every fine-tune at the run's labelled subset (drawn now, or read back).

    Args:
        spec: the run's ``PipelineSpec`` (``train_subset``, ``subset_seed``).
        out: the output folder DIR (absolute).
        ft_opts: fine-tune config -> its overrides (the data flags' and the user's).

    Returns:
        ``(ft_opts with the subset's DATASETS.SSL.REGISTER and DATASETS.TRAIN appended, the
        manifest)``; ``(ft_opts, None)`` without ``spec.train_subset``.

    Raises:
        ValueError: a bad request, several train sets, or a DIR whose fine-tunes trained on
            other images (see the module docstring).
    """
    from detectron2.data import DatasetCatalog

    from soco_d2.utils.io import write_json_atomic

    from .data import _register_opt

    path = os.path.join(out, MANIFEST)
    manifest = None
    if os.path.isfile(path):
        with open(path) as f:
            manifest = json.load(f)
    if spec.train_subset is None:
        _check_manifest(out, manifest, None)
        return ft_opts, None
    request = parse_subset(spec.train_subset)
    train = _train_name(ft_opts)
    by_id = {str(r["image_id"]): r for r in DatasetCatalog.get(train)}
    size = subset_size(request, len(by_id))
    wanted = {"dataset": train, "size": size, "total": len(by_id), "seed": spec.subset_seed}
    _check_manifest(out, manifest, wanted)
    name = f"{train}_subset{size}_s{spec.subset_seed}"
    coco = os.path.join(out, "data", f"{name}.json")
    if manifest is None:
        keep = draw_subset(list(by_id), size, spec.subset_seed)
    else:
        keep = [im["image_id"] for im in manifest["images"]]
        missing = [k for k in keep if k not in by_id]
        if missing:
            raise ValueError(f"{path}: images {missing[:5]} are no longer in {train}; use "
                             "another --output")
    chosen = [by_id[k] for k in keep]
    root = _image_root(train, chosen)
    if not os.path.isfile(coco):  # written before the manifest: a manifest implies its json
        write_json_atomic(_coco_dict(train, chosen), coco)
    if manifest is None:
        images = [{"image_id": k, "file_name": os.path.relpath(r["file_name"], root)}
                  for k, r in zip(keep, chosen)]
        manifest = {**wanted, "name": name, "requested": str(spec.train_subset),
                    "draw": 'the first N image ids ranked by sha256("<seed>:<image id>")',
                    "json": os.path.relpath(coco, out), "images": images}
        write_json_atomic(manifest, path)
    entry = f"{name}=coco:{coco}:{root}"
    new = {}
    for config, opts in ft_opts.items():
        cfg = _load_config(config, opts)
        new[config] = [*opts, *_register_opt(cfg, [entry]), "DATASETS.TRAIN", repr((name,))]
    return new, manifest


def labelled_note(manifest: Optional[Dict]) -> str:
    """The results.md line naming the labelled set the fine-tunes trained on."""
    if manifest is None:
        return "Labelled set: every image of the fine-tune train set (full-label protocol)."
    return (
        f"Labelled set (low-label protocol): `{manifest['name']}`, {manifest['size']} of the "
        f"{manifest['total']} images of `{manifest['dataset']}`, drawn with subset seed "
        f"{manifest['seed']} ({manifest['draw']}); every init and every fine-tune seed trains on "
        f"it (list: `{MANIFEST}`)."
    )
