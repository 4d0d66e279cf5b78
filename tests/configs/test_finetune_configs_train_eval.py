"""A 2-iteration fine-tune + COCO evaluation on a tiny generated dataset, through the SSL base."""
import math
import os

from detectron2.config import get_cfg
from detectron2.evaluation import COCOEvaluator

import soco_d2.finetune  # noqa: F401
from soco_d2.config import add_ssl_config
from soco_d2.data.demo import generate_demo_dataset
from soco_d2.data.datasets import register_dataset_spec

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def _trainer_class():
    try:
        from soco_d2.engine import Trainer
    except ImportError:  # engine not importable: detectron2's trainer is enough here
        from detectron2.engine import DefaultTrainer as Trainer
    return Trainer


def test_two_iteration_finetune_returns_coco_ap(tmp_path):
    root = str(tmp_path / "demo")
    generate_demo_dataset(root, num_unlabeled=0, num_train=4, num_val=3, image_size=96, seed=1)
    ann = os.path.join(root, "annotations")
    train = register_dataset_spec(
        f"ft_test_train=coco:{ann}/instances_train.json:{root}/train"
    )
    val = register_dataset_spec(f"ft_test_val=coco:{ann}/instances_val.json:{root}/val")

    cfg = add_ssl_config(get_cfg())
    cfg.merge_from_file(os.path.join(CONFIG_DIR, "coco", "Base-RCNN-FPN-SSL.yaml"))
    # Shrink the protocol to a 2-iteration CPU run; everything else comes from the SSL base.
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.RESNETS.DEPTH", 18,
            "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
            "MODEL.FPN.OUT_CHANNELS", 64,
            "MODEL.ROI_BOX_HEAD.CONV_DIM", 64,
            "MODEL.ROI_BOX_HEAD.FC_DIM", 128,
            "MODEL.ROI_MASK_HEAD.CONV_DIM", 64,
            "MODEL.ROI_HEADS.NUM_CLASSES", 6,
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
            "MODEL.RPN.POST_NMS_TOPK_TEST", 32,
            "INPUT.MIN_SIZE_TRAIN", (96,),
            "INPUT.MAX_SIZE_TRAIN", 128,
            "INPUT.MIN_SIZE_TEST", 96,
            "INPUT.MAX_SIZE_TEST", 128,
            "DATASETS.TRAIN", (train,),
            "DATASETS.TEST", (val,),
            "DATALOADER.NUM_WORKERS", 0,
            "SOLVER.IMS_PER_BATCH", 2,
            "SOLVER.BASE_LR", 0.001,
            "SOLVER.MAX_ITER", 2,
            "SOLVER.STEPS", (),
            "SOLVER.WARMUP_ITERS", 1,
            "SOLVER.CHECKPOINT_PERIOD", 1000,
            "TEST.PRECISE_BN.NUM_ITER", 1,
            "OUTPUT_DIR", str(tmp_path / "out"),
        ]
    )
    Trainer = _trainer_class()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 2  # detectron2 leaves iter at MAX_ITER after the last step
    evaluator = COCOEvaluator(val, output_dir=str(tmp_path / "eval"))
    results = Trainer.test(cfg, trainer.model, evaluators=[evaluator])
    for task in ("bbox", "segm"):
        assert {"AP", "AP50", "AP75"} <= set(results[task])
        # Size/class breakdowns may be NaN when a size or class is absent from the tiny val set.
        for k in ("AP", "AP50", "AP75"):
            assert math.isfinite(results[task][k]) and 0.0 <= results[task][k] <= 100.0
