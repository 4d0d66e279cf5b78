"""Register datasets from config strings, without code.

``cfg.DATASETS.SSL.REGISTER`` holds one string per dataset (from a YAML file or the command
line)::

    DATASETS.SSL.REGISTER "('mine_train=coco:/data/mine/train.json:/data/mine/images',)"

Fields are separated by ``:``:

- ``NAME=coco:JSON:IMAGE_ROOT``: a COCO instances json (boxes, optional masks); COCO AP.
- ``NAME=voc:DIR:SPLIT[:CLASS1,CLASS2,...]``: a Pascal-VOC tree; without class names they are
  collected (sorted) from the split's XML files; VOC AP (11-point when DIR's name contains
  "2007").
- ``NAME=folder:IMAGE_DIR[:PROPOSAL_CACHE]``: unlabeled images for pretraining; the cache is
  needed only by methods that use proposals.

``~`` and ``$VARS`` in paths are expanded; relative paths are taken from the working directory.
Registering again follows ``catalog.claim_name``: the same string is a no-op, a changed string
replaces the name, a name registered by other code (a detectron2 builtin) is an error.
"""
import os
from typing import Iterable, List, NamedTuple

from .builtin import register_builtin
from .coco import register_coco_json
from .folder import register_image_folder
from .voc import register_voc_folder

__all__ = ["DatasetSpec", "parse_register_spec", "register_dataset_spec", "register_from_cfg"]

_KINDS = ("coco", "voc", "folder")
_USAGE = (
    "expected 'NAME=coco:JSON:IMAGE_ROOT', 'NAME=voc:DIR:SPLIT[:CLASS1,CLASS2,...]' or "
    "'NAME=folder:IMAGE_DIR[:PROPOSAL_CACHE]'"
)


class DatasetSpec(NamedTuple):
    """A parsed ``NAME=KIND:ARG1:ARG2...`` registration string.

    ``args`` by kind: coco ``(json, image_root)``; voc ``(dir, split, class names tuple)``;
    folder ``(image_dir, proposal_cache or None)``.
    """

    name: str
    kind: str
    args: tuple


def _bad(spec) -> ValueError:
    return ValueError(f"Bad DATASETS.SSL.REGISTER entry {spec!r}: {_USAGE}")


def parse_register_spec(spec: str) -> DatasetSpec:
    """Parse one registration string (formats in this module's docstring).

    Args:
        spec: e.g. ``"mine=coco:/data/a.json:/data/imgs"``.

    Returns:
        the parsed spec; ``~`` is expanded in paths (``$VARS`` are expanded at registration).

    Raises:
        ValueError: on any malformed string, with the expected formats in the message.
    """
    if not isinstance(spec, str) or "=" not in spec:
        raise _bad(spec)
    name, rest = spec.split("=", 1)
    name = name.strip()
    fields = rest.split(":")
    kind = fields[0].strip().lower()
    args = [f.strip() for f in fields[1:]]
    if not name or kind not in _KINDS:
        raise _bad(spec)

    def expand(path: str) -> str:
        return os.path.expandvars(os.path.expanduser(path))

    if kind == "coco":
        if len(args) != 2 or not all(args):
            raise _bad(spec)
        return DatasetSpec(name, kind, (expand(args[0]), expand(args[1])))
    if kind == "folder":
        if len(args) not in (1, 2) or not args[0]:
            raise _bad(spec)
        cache = expand(args[1]) if len(args) == 2 and args[1] else None
        return DatasetSpec(name, kind, (expand(args[0]), cache))
    if len(args) not in (2, 3) or not args[0] or not args[1]:
        raise _bad(spec)
    classes = tuple(c.strip() for c in args[2].split(",") if c.strip()) if len(args) == 3 else ()
    return DatasetSpec(name, kind, (expand(args[0]), args[1], classes))


def register_dataset_spec(spec: str) -> str:
    """Register one ``NAME=KIND:...`` string.

    Args:
        spec: a registration string.

    Returns:
        the dataset name.
    """
    name, kind, args = parse_register_spec(spec)
    if kind == "coco":
        register_coco_json(name, *args)
    elif kind == "voc":
        register_voc_folder(name, *args)
    else:
        register_image_folder(name, *args)
    return name


def _flatten(entries: Iterable) -> List[str]:
    out = []
    for e in entries:
        out.extend(_flatten(e) if isinstance(e, (list, tuple)) else [e])
    return out


def register_from_cfg(cfg) -> List[str]:
    """Register soco_d2's builtins (under the current root) and ``cfg.DATASETS.SSL.REGISTER``.

    Args:
        cfg: a detectron2 config with soco_d2's keys.

    Returns:
        the names the REGISTER strings define, in order.
    """
    register_builtin()
    entries = cfg.DATASETS.SSL.REGISTER
    if isinstance(entries, str):  # a single string given without tuple syntax
        entries = (entries,)
    return [register_dataset_spec(s) for s in _flatten(entries)]
