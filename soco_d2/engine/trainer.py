"""One Trainer for self-supervised pretraining and detection fine-tuning.

It is detectron2's ``DefaultTrainer`` with these differences:
- the optimizer comes from ``soco_d2.solver.build_optimizer`` (SGD, LARS, AdamW);
- pretraining meta-architectures (registered classes with ``is_pretraining = True``, i.e.
  subclasses of ``soco_d2.modeling.SSLMetaArch``) read data through
  ``soco_d2.data.build.build_pretrain_loader`` (the mapper named by
  ``INPUT.DATASET_MAPPER_NAME``), have no evaluation, get the weight-drift diagnostic, and get
  the EMA target hook when the model has ``update_target`` (``EMATargetMetaArch``); detectors
  use detectron2's loaders and an evaluator chosen by the test set's ``evaluator_type``
  metadata, after a check that the config's class count matches the training set's;
- a non-finite loss stops the run on every rank before the optimizer step, naming the
  iteration and the last good checkpoint (see ``train_loop.py``);
- AMP in float16 or bfloat16 (SOLVER.AMP.DTYPE);
- RNGs re-seeded per iteration when cfg.SEED >= 0, so ``--resume`` continues exactly;
- a fine-tune whose MODEL.WEIGHTS leave backbone tensors at their initialisation stops before
  training, naming them (``soco_d2/checkpoint/coverage.py``; MODEL.SSL.ALLOW_PARTIAL_BACKBONE
  opts out).
"""
import logging
import os
import weakref
from collections import OrderedDict
from typing import List, Optional

import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.evaluation import CityscapesInstanceEvaluator, COCOEvaluator, DatasetEvaluator
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from soco_d2.checkpoint.coverage import LoadRecordingCheckpointer, check_loaded_weights
from soco_d2.solver import build_optimizer

# CPU-aware: no device_ids for CPU models, SyncBatchNorm synchronised over gloo.
from .distributed import create_ddp_model
from .setup import check_detector_data
from .hooks import IterationSeedHook, TargetEMAHook, WeightDriftHook, unwrap_model
from .train_loop import NonFiniteLossError, build_step_runner

__all__ = ["Trainer", "is_pretraining"]


def is_pretraining(cfg: CfgNode) -> bool:
    """True if cfg trains a self-supervised meta-architecture (no labels, no evaluation).

    A meta-architecture says so itself with a class attribute ``is_pretraining = True``
    (``soco_d2.modeling.SSLMetaArch`` sets it), so a new method needs no change here.
    """
    name = cfg.MODEL.META_ARCHITECTURE
    try:
        cls = META_ARCH_REGISTRY.get(name)
    except KeyError:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE {name!r} is not registered; known: "
            f"{sorted(k for k, _ in META_ARCH_REGISTRY)}"
        ) from None
    return bool(getattr(cls, "is_pretraining", False))


class Trainer(DefaultTrainer):
    """DefaultTrainer for soco_d2 pretraining and fine-tuning (see module docstring).

    Usage::

        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
    """

    def __init__(self, cfg: CfgNode):
        # DefaultTrainer.__init__ hard-codes the inner step runner; build the same parts here.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        if cfg.SEED >= 0:
            # As default_setup does; repeated here so a Trainer built twice with one config
            # (tests, notebooks) starts from the same initial weights.
            seed_all_rng(cfg.SEED + comm.get_rank())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(
            model,
            broadcast_buffers=False,
            find_unused_parameters=cfg.SOLVER.DDP_FIND_UNUSED_PARAMETERS,
        )
        self._trainer = build_step_runner(cfg, model, data_loader, optimizer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # Saves model (online and `target.*`), optimizer (via the step runner), scheduler (via
        # the LRScheduler hook), grad scaler and iteration.
        self.checkpointer = LoadRecordingCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        """detectron2's: the last checkpoint of OUTPUT_DIR when ``resume`` and there is one,
        else MODEL.WEIGHTS. A detector that loaded MODEL.WEIGHTS must have its whole backbone
        from them (``soco_d2.checkpoint.coverage.check_backbone_loaded``).

        Raises:
            soco_d2.checkpoint.coverage.BackboneNotLoadedError: naming the tensors left out,
                unless MODEL.SSL.ALLOW_PARTIAL_BACKBONE.
        """
        resuming = resume and self.checkpointer.has_checkpoint()
        super().resume_or_load(resume=resume)
        if resuming or not self.cfg.MODEL.WEIGHTS or is_pretraining(self.cfg):
            return
        check_loaded_weights(
            self.checkpointer, self.cfg.MODEL.WEIGHTS, self.cfg.MODEL.SSL.ALLOW_PARTIAL_BACKBONE
        )

    # ---------------------------------------------------------------- parts
    @classmethod
    def build_model(cls, cfg: CfgNode) -> torch.nn.Module:
        """detectron2's build_model; for detectors, channels_last weights if
        MODEL.SSL.CHANNELS_LAST (pretraining models apply it themselves)."""
        model = super().build_model(cfg)
        if cfg.MODEL.SSL.CHANNELS_LAST and not is_pretraining(cfg):
            # A conv runs channels_last when its weight is; activations follow.
            model = model.to(memory_format=torch.channels_last)
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        if is_pretraining(cfg):
            from soco_d2.data.build import build_pretrain_loader

            return build_pretrain_loader(cfg)
        from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts

        # Loaded here (as detectron2 would) so the data can be checked against the config.
        dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=(
                cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
                if cfg.MODEL.KEYPOINT_ON
                else 0
            ),
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
        check_detector_data(cfg, dicts)
        from soco_d2.data.lsj import build_detection_train_mapper

        # None (detectron2's default mapper) unless INPUT.LSJ.ENABLED (ViTDet's jitter)
        return build_detection_train_loader(
            cfg, dataset=dicts, mapper=build_detection_train_mapper(cfg)
        )

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
    ) -> DatasetEvaluator:
        """An evaluator for ``dataset_name`` from its ``evaluator_type`` metadata.

        Args:
            cfg: the config (OUTPUT_DIR for COCO's result files).
            dataset_name: a registered test dataset.
            output_folder: where COCOEvaluator writes; default OUTPUT_DIR/inference.

        Returns:
            COCOEvaluator ("coco"), VOCDetectionEvaluator ("pascal_voc") or
            CityscapesInstanceEvaluator ("cityscapes_instance").
        """
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if evaluator_type == "coco":
            return COCOEvaluator(dataset_name, output_dir=output_folder)
        if evaluator_type == "pascal_voc":
            # detectron2's evaluator subclassed: also reads XML without pose/truncated/difficult.
            from soco_d2.data.datasets import VOCDetectionEvaluator

            return VOCDetectionEvaluator(dataset_name)
        if evaluator_type == "cityscapes_instance":
            return CityscapesInstanceEvaluator(dataset_name)
        raise NotImplementedError(
            f"No evaluator for dataset {dataset_name!r} with evaluator_type={evaluator_type!r}; "
            "supported: coco, pascal_voc, cityscapes_instance"
        )

    @classmethod
    def test(cls, cfg: CfgNode, model: torch.nn.Module, evaluators=None) -> OrderedDict:
        """Evaluate a detector on DATASETS.TEST; a no-op for pretraining architectures."""
        if is_pretraining(cfg):
            return OrderedDict()
        return super().test(cfg, model, evaluators=evaluators)

    def build_hooks(self) -> List[hooks.HookBase]:
        """DefaultTrainer's hooks, plus per-iteration seeding first, and for pretraining the EMA
        target update (methods with a target) before the periodic checkpointer (so checkpoints
        hold the updated target) and the weight-drift measurement before the writers.
        SOLVER.CHECKPOINT_MAX_TO_KEEP > 0 bounds how many periodic checkpoints this run leaves
        (older ones it wrote are deleted)."""
        ret = [h for h in super().build_hooks() if h is not None]
        keep = self.cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP
        if keep < 0:
            raise ValueError(
                f"SOLVER.CHECKPOINT_MAX_TO_KEEP must be >= 0 (0 keeps all), got {keep}")
        if keep:
            for h in ret:
                if isinstance(h, hooks.PeriodicCheckpointer):
                    h.max_to_keep = keep  # fvcore's PeriodicCheckpointer deletes older files
        if self.cfg.SEED >= 0:
            ret.insert(0, IterationSeedHook(self.cfg.SEED))
        has_target = hasattr(unwrap_model(self.model), "update_target")
        if has_target or is_pretraining(self.cfg):
            # Right after LRScheduler, before PreciseBN / checkpointer / eval / writers.
            at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.LRScheduler)) + 1
            ret.insert(at, WeightDriftHook(period=20))
            if has_target:  # EMATargetMetaArch; a method without a target gets no EMA hook
                ret.insert(at, TargetEMAHook())
        return ret

    # ---------------------------------------------------------------- loop
    def run_step(self) -> None:
        self._trainer.iter = self.iter
        try:
            self._trainer.run_step()
        except NonFiniteLossError as e:
            last = (
                self.checkpointer.get_checkpoint_file()
                if self.checkpointer.has_checkpoint()
                else None
            )
            where = f"last good checkpoint: {last}" if last else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"{e} Weights were not updated for this iteration and no checkpoint was saved "
                f"for it; {where} (lower SOLVER.BASE_LR or enable gradient clipping, then "
                "restart with --resume)."
            ) from None
