"""Config keys soco_d2 adds to detectron2's config tree.

Built from parts, like DensePose's config: :func:`add_ssl_config` adds the keys every
pretraining method shares, then every method registered with :func:`register_method_config`
adds its own namespace (``MODEL.SOCO`` / ``INPUT.SOCO`` in ``modeling/meta_arch/soco.py``,
``MODEL.MOCO`` in ``modeling/meta_arch/moco.py``, ...). Where detectron2 already has a key it is
read, not copied (ROI pooler resolution / type / sampling ratio in ``MODEL.ROI_BOX_HEAD``, pooled
features in ``MODEL.ROI_HEADS.IN_FEATURES``).

This module imports nothing else of soco_d2: the methods import it to register, and
``import soco_d2`` (which imports ``soco_d2.modeling``) has registered all of them before any
caller can reach :func:`add_ssl_config`.

Every key has a one-line comment: meaning, then allowed values.
"""
from typing import Callable, List

from detectron2.config import CfgNode as CN

__all__ = ["add_ssl_config", "get_ssl_cfg", "register_method_config"]

_METHOD_CONFIGS: List[Callable[[CN], None]] = []


def register_method_config(fn: Callable[[CN], None]) -> Callable[[CN], None]:
    """Decorator: ``fn(cfg)`` adds one method's namespace; :func:`add_ssl_config` calls it."""
    if fn not in _METHOD_CONFIGS:
        _METHOD_CONFIGS.append(fn)
    return fn


def add_ssl_config(cfg: CN) -> CN:
    """Add soco_d2's keys (shared, then every registered method's) to ``cfg``, in place.

    Safe to call twice. Returns ``cfg`` for chaining.
    """
    if not hasattr(cfg.MODEL, "SSL"):
        _add_model_config(cfg)
        _add_input_config(cfg)
        _add_dataset_config(cfg)
        _add_solver_config(cfg)
    for fn in _METHOD_CONFIGS:
        fn(cfg)
    return cfg


def get_ssl_cfg() -> CN:
    """detectron2's default config with every soco_d2 key (a fresh copy)."""
    from detectron2.config import get_cfg

    return add_ssl_config(get_cfg())


def _add_model_config(cfg: CN) -> None:
    _C = cfg
    _C.MODEL.SSL = CN()
    # Base EMA momentum m0 of the target network.
    _C.MODEL.SSL.MOMENTUM = 0.99
    # Momentum schedule: "cosine" (m0 rising to 1 over the run: BYOL, SoCo, SIM) or "constant"
    # (m0 throughout: MoCo, DenseCL, DetCo).
    _C.MODEL.SSL.MOMENTUM_SCHEDULE = "cosine"
    # Hidden width of the projector / predictor MLPs.
    _C.MODEL.SSL.MLP_HIDDEN_DIM = 4096
    # Output width of the projector / predictor MLPs.
    _C.MODEL.SSL.MLP_OUT_DIM = 256
    # Norm inside the projector/predictor MLPs: "SyncBN", "BN" or "" (none).
    _C.MODEL.SSL.MLP_NORM = "SyncBN"
    # Keep images and weights in channels_last memory format (faster convolutions on CUDA).
    _C.MODEL.SSL.CHANNELS_LAST = False
    # Zero-init the last norm of each ResNet block (backbone and res5 head); True or False.
    _C.MODEL.SSL.ZERO_INIT_RESIDUAL = False
    # Fine-tuning: allow MODEL.WEIGHTS to leave backbone tensors at their initialisation (a
    # partial transfer on purpose); False stops before training, naming them. True or False.
    _C.MODEL.SSL.ALLOW_PARTIAL_BACKBONE = False


def _add_input_config(cfg: CN) -> None:
    _C = cfg
    # Registered name of the pretraining dataset mapper (soco_d2.data.dataset_mappers):
    # "multi_view", "soco", or a method's own. Detector fine-tuning ignores it.
    _C.INPUT.DATASET_MAPPER_NAME = "multi_view"
    _C.INPUT.SSL = CN()
    # Output side of each view, V1 first. Which views are whole images, crops or resized copies
    # of another view is the mapper's choice (see its docstring).
    _C.INPUT.SSL.VIEW_SIZES = [224, 224, 112]
    # RandomResizedCrop area-scale range of the cropped views.
    _C.INPUT.SSL.CROP_SCALE = (0.5, 1.0)
    # RandomResizedCrop aspect-ratio range of the cropped views.
    _C.INPUT.SSL.CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
    # Colour jitter strengths (brightness, contrast, saturation, hue) as in torchvision.
    _C.INPUT.SSL.COLOR_JITTER = (0.4, 0.4, 0.2, 0.1)
    # Probability of applying the colour jitter to a view.
    _C.INPUT.SSL.COLOR_JITTER_PROB = 0.8
    # Grayscale probability.
    _C.INPUT.SSL.GRAYSCALE_PROB = 0.2
    # Gaussian blur probability per view (V1 first; the last entry repeats for later views).
    _C.INPUT.SSL.BLUR_PROB = [1.0, 0.1, 0.1]
    # Gaussian blur sigma range.
    _C.INPUT.SSL.BLUR_SIGMA = (0.1, 2.0)
    # Solarize probability per view (V1 first; the last entry repeats).
    _C.INPUT.SSL.SOLARIZE_PROB = [0.0, 0.2, 0.2]
    # Horizontal flip probability (independent per view).
    _C.INPUT.SSL.FLIP_PROB = 0.5
    # Decode a JPEG much larger than the views at 1/2, 1/4 or 1/8 size when every view's source
    # region stays at least view-sized (soco_d2/data/decode.py); only the resampling changes.
    _C.INPUT.SSL.DRAFT_DECODE = True


def _add_dataset_config(cfg: CN) -> None:
    _C = cfg
    _C.DATASETS.SSL = CN()
    # Proposal cache per entry of DATASETS.TRAIN, for mappers that use proposals (empty: the
    # dataset metadata's `proposal_cache`).
    _C.DATASETS.SSL.PROPOSAL_CACHES = ()
    # Extra datasets to register without code, as strings "name=coco:JSON:IMAGE_ROOT",
    # "name=voc:DIR:SPLIT[:CLASS1,CLASS2,...]" or "name=folder:IMAGE_DIR[:PROPOSAL_CACHE]";
    # details in soco_d2/data/datasets and datasets/README.md.
    _C.DATASETS.SSL.REGISTER = ()


def _add_solver_config(cfg: CN) -> None:
    _C = cfg
    # Optimizer: "SGD" (detectron2's), "LARS" (SGD + layer-wise trust ratio) or "AdamW".
    _C.SOLVER.OPTIMIZER = "SGD"
    # LARS trust coefficient.
    _C.SOLVER.LARS_TRUST = 0.001
    # Exclude biases and norm parameters from LARS adaptation and weight decay.
    _C.SOLVER.LARS_EXCLUDE_BIAS_AND_NORM = True
    # If > 0, BASE_LR is the lr at this batch size and scales linearly with IMS_PER_BATCH.
    _C.SOLVER.BASE_LR_BATCH = 0
    # If > 0, MAX_ITER is set from this many epochs of the training set.
    _C.SOLVER.EPOCHS = 0
    # If > 0 (and EPOCHS > 0), WARMUP_ITERS is set from this many epochs.
    _C.SOLVER.WARMUP_EPOCHS = 0
    # If > 0 (and EPOCHS > 0), CHECKPOINT_PERIOD is set from this many epochs.
    _C.SOLVER.CHECKPOINT_EPOCHS = 0
    # If > 0, the periodic checkpointer keeps only this many of the newest model_XXXXXXX.pth
    # files it wrote in this run, deleting older ones as it writes (model_final.pth is always
    # kept); 0 keeps all, as detectron2 does. Resuming reads the newest, so 1 is enough.
    _C.SOLVER.CHECKPOINT_MAX_TO_KEEP = 0
    # Mixed-precision dtype when SOLVER.AMP.ENABLED: "float16" or "bfloat16".
    _C.SOLVER.AMP.DTYPE = "float16"
    # DDP find_unused_parameters: True when some parameters may get no gradient in a step
    # (e.g. an FPN level that received no box); costs a graph walk per iteration.
    _C.SOLVER.DDP_FIND_UNUSED_PARAMETERS = False
