"""Config keys soco_d2 adds to detectron2's config tree.

Everything new lives under ``MODEL.SOCO``, ``INPUT.SOCO``, ``DATASETS.SOCO`` and a few
``SOLVER`` keys. Every key has a one-line comment: meaning, then allowed values.
"""
from detectron2.config import CfgNode as CN


def add_soco_config(cfg: CN) -> CN:
    """Add soco_d2's keys (with defaults) to a detectron2 config, in place.

    Safe to call twice. Returns ``cfg`` for chaining.
    """
    if hasattr(cfg.MODEL, "SOCO"):
        return cfg
    _add_model_config(cfg)
    _add_input_config(cfg)
    _add_dataset_config(cfg)
    _add_solver_config(cfg)
    return cfg


def _add_model_config(cfg: CN) -> None:
    _C = cfg
    _C.MODEL.SOCO = CN()
    # Head layout: "FPN" (RoIAlign on P2-P5 + 4conv1fc box head) or "C4" (res4 RoIAlign + res5).
    _C.MODEL.SOCO.HEAD_TYPE = "FPN"
    # Feature maps boxes are pooled from (FPN: p2..p5; C4: res4).
    _C.MODEL.SOCO.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    # sqrt(w*h) thresholds (view pixels) for P2/P3/P4; larger boxes go to the last level.
    _C.MODEL.SOCO.LEVEL_RANGES = [48, 96, 192]
    # "level": pool each box only at its assigned level; "all_levels": the official
    # formulation (every box at every level, loss masked); same loss, slower.
    _C.MODEL.SOCO.ASSIGNMENT = "level"
    # RoIAlign output side (FPN: 7, C4: 14).
    _C.MODEL.SOCO.POOLER_RESOLUTION = 7
    # RoIAlign sampling ratio (0 = adaptive).
    _C.MODEL.SOCO.POOLER_SAMPLING_RATIO = 0
    # Pooler type (detectron2 ROIPooler name): ROIAlignV2 is RoIAlign with aligned=True.
    _C.MODEL.SOCO.POOLER_TYPE = "ROIAlignV2"
    # Hidden width of the projector and predictor MLPs.
    _C.MODEL.SOCO.MLP_HIDDEN_DIM = 4096
    # Output width of the projector and predictor MLPs.
    _C.MODEL.SOCO.MLP_OUT_DIM = 256
    # Base EMA momentum m0 of the target network; cosine-increased to 1 over the run.
    _C.MODEL.SOCO.MOMENTUM = 0.99
    # View-index pairs the loss is computed over (symmetric within each pair).
    # SoCo: [[0, 1], [0, 2]]; SoCo*: [[0, 1], [0, 2], [0, 3]]; C4: [[0, 1]].
    _C.MODEL.SOCO.PAIRS = [[0, 1], [0, 2]]
    # Store activations in channels_last memory format (faster convolutions on CUDA).
    _C.MODEL.SOCO.CHANNELS_LAST = False
    # Norm inside the projector/predictor MLPs: "SyncBN" (official), "BN" or "" (none).
    _C.MODEL.SOCO.MLP_NORM = "SyncBN"
    # Zero-init the last norm of each ResNet block (backbone, res5 head), as the official
    # SoCo ResNet does; True or False.
    _C.MODEL.SOCO.ZERO_INIT_RESIDUAL = True


def _add_input_config(cfg: CN) -> None:
    _C = cfg
    _C.INPUT.SOCO = CN()
    # Output side of each view, V1 first. V1 is the whole image resized (aspect not kept);
    # V2.. are RandomResizedCrops. SoCo: [224, 224, 112]; SoCo*: [224, 224, 192, 112].
    _C.INPUT.SOCO.VIEW_SIZES = [224, 224, 112]
    # RandomResizedCrop area-scale range of the cropped views.
    _C.INPUT.SOCO.CROP_SCALE = (0.5, 1.0)
    # RandomResizedCrop aspect-ratio range of the cropped views.
    _C.INPUT.SOCO.CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
    # How V3 is made: "crop" (independent crop, as the official code) or "downsample"
    # (V2 resized to VIEW_SIZES[2], as the paper text).
    _C.INPUT.SOCO.V3_MODE = "crop"
    # Index of a view that is V2 resized (SoCo*'s V4), or -1 for none.
    _C.INPUT.SOCO.DOWNSAMPLED_VIEW = -1
    # Proposals sampled per image (K).
    _C.INPUT.SOCO.NUM_PROPOSALS = 4
    # Crop redraws while fewer than K proposals overlap all views.
    _C.INPUT.SOCO.MAX_CROP_TRIES = 5
    # Probability of jittering each V1 box.
    _C.INPUT.SOCO.BOX_JITTER_PROB = 0.5
    # Jitter magnitude: shift by U(-a, a) * size, scale by 1 + U(-a, a).
    _C.INPUT.SOCO.BOX_JITTER = 0.1
    # Probability of a cutout square inside each box (0 disables).
    _C.INPUT.SOCO.CUTOUT_PROB = 0.0
    # Cutout area range as a fraction of the box area.
    _C.INPUT.SOCO.CUTOUT_SCALE = (0.1, 0.3)
    # Colour jitter (brightness, contrast, saturation, hue) and its probability.
    _C.INPUT.SOCO.COLOR_JITTER = (0.4, 0.4, 0.2, 0.1)
    _C.INPUT.SOCO.COLOR_JITTER_PROB = 0.8
    # Grayscale probability.
    _C.INPUT.SOCO.GRAYSCALE_PROB = 0.2
    # Gaussian blur probability per view (V1 first) and sigma range.
    _C.INPUT.SOCO.BLUR_PROB = [1.0, 0.1, 0.1]
    _C.INPUT.SOCO.BLUR_SIGMA = (0.1, 2.0)
    # Solarize probability per view (V1 first).
    _C.INPUT.SOCO.SOLARIZE_PROB = [0.0, 0.2, 0.2]
    # Horizontal flip probability (independent per view).
    _C.INPUT.SOCO.FLIP_PROB = 0.5


def _add_dataset_config(cfg: CN) -> None:
    _C = cfg
    _C.DATASETS.SOCO = CN()
    # Proposal cache per entry of DATASETS.TRAIN (empty: use the dataset metadata's
    # `proposal_cache`).
    _C.DATASETS.SOCO.PROPOSAL_CACHES = ()
    # Extra datasets to register from the command line without code, as strings
    # "name=coco:JSON:IMAGE_ROOT", "name=voc:DIR:SPLIT[:CLASS1,CLASS2,...]" (classes omitted:
    # collected from the XMLs, sorted) or "name=folder:IMAGE_DIR:PROPOSAL_CACHE"; details in
    # soco_d2/data/register.py and datasets/README.md.
    _C.DATASETS.SOCO.REGISTER = ()


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
    # Mixed-precision dtype when SOLVER.AMP.ENABLED: "float16" or "bfloat16".
    _C.SOLVER.AMP.DTYPE = "float16"
    # DDP find_unused_parameters: True when some parameters may get no gradient in a step
    # (e.g. an FPN level that received no box); costs a graph walk per iteration.
    _C.SOLVER.DDP_FIND_UNUSED_PARAMETERS = False
