"""View geometry and colour ops of soco_d2.data.views."""

import numpy as np
import pytest
from detectron2.data.transforms import CropTransform, HFlipTransform, ResizeTransform, TransformList
from PIL import Image

from soco_d2.data.views import (
    ColorAugmentation,
    ViewSpec,
    apply_image,
    make_view_specs,
    random_resized_crop_region,
    view_transform,
)


def _smooth_image(h=96, w=128):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=-1)
    return img.astype(np.uint8)


def test_view_specs_for_each_variant():
    soco = make_view_specs([224, 224, 112])
    assert [s.kind for s in soco] == ["whole", "crop", "crop"]
    paper = make_view_specs([224, 224, 112], v3_mode="downsample")
    assert paper[2] == ViewSpec(112, "downsample", 1)
    star = make_view_specs([224, 224, 192, 112], downsampled_view=3)
    assert [s.kind for s in star] == ["whole", "crop", "crop", "downsample"]
    assert star[3].source == 1 and star[2].size == 192
    c4 = make_view_specs([224, 224])
    assert [s.kind for s in c4] == ["whole", "crop"]
    with pytest.raises(ValueError):
        make_view_specs([224])
    with pytest.raises(ValueError):
        make_view_specs([224, 224], downsampled_view=1)  # V2 cannot be derived from itself


@pytest.mark.parametrize("hw", [(375, 500), (64, 300), (300, 40)])
def test_random_resized_crop_region_inside_and_scaled(hw):
    h, w = hw
    for _ in range(50):
        x0, y0, cw, ch = random_resized_crop_region(h, w, (0.5, 1.0), (3 / 4, 4 / 3))
        assert 0 <= x0 and 0 <= y0 and x0 + cw <= w and y0 + ch <= h and cw > 0 and ch > 0
        if (h, w) == (375, 500):  # the random branch always succeeds for this shape
            assert 0.49 <= cw * ch / (w * h) <= 1.0


def test_view_transform_maps_region_to_view():
    tfm, region = view_transform(ViewSpec(64, "crop"), 96, 128, (0.5, 1.0), (3 / 4, 4 / 3))
    out = tfm.apply_box(region[None].copy())[0]
    np.testing.assert_allclose(out, [0, 0, 64, 64], atol=1e-4)
    tfm1, region1 = view_transform(ViewSpec(32, "whole"), 96, 128, (0.5, 1.0), (3 / 4, 4 / 3))
    np.testing.assert_allclose(region1, [0, 0, 128, 96])
    np.testing.assert_allclose(tfm1.apply_box(np.array([[64, 48, 128, 96.0]]))[0], [16, 16, 32, 32])


def test_apply_image_matches_detectron2_geometry():
    img = _smooth_image()
    tfm = TransformList(
        [CropTransform(10, 5, 80, 60), ResizeTransform(60, 80, 32, 32), HFlipTransform(32)]
    )
    ours = apply_image(tfm, img)
    ref = tfm.apply_image(img)  # detectron2's PIL path
    assert ours.shape == ref.shape == (32, 32, 3) and ours.dtype == np.uint8
    # Same geometry: a smooth gradient differs only by interpolation rounding.
    assert np.abs(ours.astype(int) - ref.astype(int)).mean() < 3.0
    # The flip really happened: red (x gradient) decreases left to right.
    assert ours[16, 2, 0] > ours[16, 29, 0]


def test_apply_image_antialiased_shrink_close_to_pil():
    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, (96, 128, 3), dtype=np.uint8)
    ours = apply_image(ResizeTransform(96, 128, 24, 24), img).astype(float)
    pil = np.asarray(Image.fromarray(img).resize((24, 24), Image.BILINEAR)).astype(float)
    naive = img[::4, ::5][:24, :24].astype(float)  # no antialiasing: keeps the noise
    assert np.abs(ours - pil).mean() < 0.5 * np.abs(naive - pil).mean()


def _color(**kw):
    args = dict(
        channel_order="RGB",
        jitter=(0.4, 0.4, 0.2, 0.1),
        jitter_prob=0.0,
        grayscale_prob=0.0,
        blur_prob=[0.0],
        blur_sigma=(0.1, 2.0),
        solarize_prob=[0.0],
    )
    args.update(kw)
    return ColorAugmentation(**args)


def test_color_identity_when_all_probabilities_zero():
    img = _smooth_image(32, 32)
    out = _color()(img, 0)
    np.testing.assert_array_equal(out, img)


def test_grayscale_and_solarize():
    img = _smooth_image(32, 32)
    gray = _color(grayscale_prob=1.0)(img, 1)
    assert gray.dtype == np.uint8 and gray.shape == img.shape
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    sol = _color(solarize_prob=[0.0, 1.0])(img, 1)
    expected = np.where(img >= 128, 255 - img, img)
    np.testing.assert_array_equal(sol, expected)
    # V1 (probability 0) is untouched; views past the list reuse its last entry.
    np.testing.assert_array_equal(_color(solarize_prob=[0.0, 1.0])(img, 0), img)
    np.testing.assert_array_equal(_color(solarize_prob=[0.0, 1.0])(img, 3), expected)


def test_color_jitter_changes_image_but_keeps_range_and_channel_order():
    img = _smooth_image(32, 32)
    out = _color(jitter_prob=1.0)(img, 0)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    # Hue shift only: a pure red image must stay reddish-dominant for small shifts.
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    hue_only = _color(jitter=(0, 0, 0, 0.05), jitter_prob=1.0)(red, 0)
    assert hue_only[..., 0].mean() > hue_only[..., 1].mean() + 100
    bgr = _color(channel_order="BGR", jitter=(0, 0, 0, 0.05), jitter_prob=1.0)(red[..., ::-1], 0)
    assert bgr[..., 2].mean() > bgr[..., 1].mean() + 100


def test_blur_smooths():
    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, (32, 32, 3), dtype=np.uint8)
    out = _color(blur_prob=[1.0], blur_sigma=(2.0, 2.0))(img, 0)
    assert (
        np.abs(np.diff(out.astype(int), axis=1)).mean()
        < 0.3 * np.abs(np.diff(img.astype(int), axis=1)).mean()
    )
