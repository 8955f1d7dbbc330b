"""LLaVA-1.6 image preprocessing (anyres), reproducing the original LLaVA PIL path bit for bit.

Sizes are (width, height) throughout, PIL's and LLaVA's order (transformers' LlavaNext uses
(height, width)).

anyres: choose the pinpoint resolution keeping the most effective pixels (ties: least waste),
resize aspect-preserving (ceil rounding, PIL bicubic), paste centred on black, cut into
tile x tile crops row-major; prepend the whole image squashed to tile x tile; CLIP-normalise
each (rescale 1/255 in float64 -> float32, then (x - mean) / std in float32, as CLIPImageProcessor).

Public API (stable):
    select_best_resolution(image_size, pinpoints) -> (w, h)
    resize_and_pad_image(image, (w, h)) -> PIL.Image
    divide_to_patches(image, tile) -> list[PIL.Image]
    anyres_grid_shape(image_size, pinpoints, tile) -> (cols, rows)
    unpadded_feature_shape(grid_h, grid_w, image_size) -> (rows, cols)   spatial_unpad helper
    num_image_tokens(image_size, config=None, merge_type=None, ...) -> int
    ImageProcessor(config).preprocess(image) -> ProcessedImage(pixel_values [1+tiles,3,T,T], image_size)
    load_image(path_or_image) -> PIL RGB image (raises ImageLoadError)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from pulse_models.configuration import PulseConfig

from pulse_models.configuration import CLIP_MEAN, CLIP_STD  # noqa: F401  (re-exported: the CLIP defaults)

# CLIPImageProcessor's rescale factor.
RESCALE = 1 / 255


class ImageLoadError(RuntimeError):
    """An image that cannot be opened or decoded."""


def load_image(image: Any) -> Image.Image:
    """PIL RGB image from a PIL image, path or bytes-like; ImageLoadError on failure."""
    try:
        if isinstance(image, Image.Image):
            return image.convert("RGB")
        if isinstance(image, dict) and ("bytes" in image or "path" in image):  # datasets.Image raw
            import io

            src = io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]
            img = Image.open(src)
        elif isinstance(image, (bytes, bytearray)):
            import io

            img = Image.open(io.BytesIO(image))
        else:
            img = Image.open(image)
        img.load()
        return img.convert("RGB")
    except Exception as exc:  # PIL raises many types; callers want one
        raise ImageLoadError(f"cannot read image ({type(exc).__name__}: {exc})") from exc


def select_best_resolution(image_size: tuple[int, int], pinpoints: Sequence[Sequence[int]]) -> tuple[int, int]:
    """LLaVA's select_best_resolution on (width, height)."""
    original_width, original_height = image_size
    best_fit: tuple[int, int] | None = None
    max_effective = 0
    min_wasted = float("inf")
    for width, height in pinpoints:
        scale = min(width / original_width, height / original_height)
        down_w, down_h = int(original_width * scale), int(original_height * scale)
        effective = min(down_w * down_h, original_width * original_height)
        wasted = width * height - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            max_effective, min_wasted, best_fit = effective, wasted, (int(width), int(height))
    if best_fit is None:
        raise ValueError(f"no grid pinpoint fits image size {image_size}")
    return best_fit


def resize_and_pad_image(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Aspect-preserving resize to fit ``target`` (ceil rounding), centred on a black canvas."""
    original_width, original_height = image.size
    target_width, target_height = target
    scale_w = target_width / original_width
    scale_h = target_height / original_height
    if scale_w < scale_h:
        new_width = target_width
        new_height = min(math.ceil(original_height * scale_w), target_height)
    else:
        new_height = target_height
        new_width = min(math.ceil(original_width * scale_h), target_width)
    resized = image.resize((new_width, new_height))  # PIL default: bicubic, as LLaVA
    canvas = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    canvas.paste(resized, ((target_width - new_width) // 2, (target_height - new_height) // 2))
    return canvas


def divide_to_patches(image: Image.Image, tile: int) -> list[Image.Image]:
    """Row-major tile x tile crops."""
    width, height = image.size
    return [image.crop((j, i, j + tile, i + tile)) for i in range(0, height, tile) for j in range(0, width, tile)]


def anyres_grid_shape(image_size: tuple[int, int], pinpoints: Sequence[Sequence[int]], tile: int) -> tuple[int, int]:
    """(columns, rows) of tiles for an image of (width, height)."""
    width, height = select_best_resolution(image_size, pinpoints)
    return width // tile, height // tile


def unpadded_feature_shape(grid_h: int, grid_w: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """LLaVA's unpad_image on a (grid_h, grid_w) feature map: kept (rows, cols)."""
    original_width, original_height = image_size
    if original_width / original_height > grid_w / grid_h:
        new_height = int(original_height * (grid_w / original_width))
        padding = (grid_h - new_height) // 2
        return grid_h - 2 * padding, grid_w
    new_width = int(original_width * (grid_h / original_height))
    padding = (grid_w - new_width) // 2
    return grid_h, grid_w - 2 * padding


def num_image_tokens(
    image_size: tuple[int, int],
    config: "PulseConfig | None" = None,
    merge_type: str | None = None,
    *,
    pinpoints: Sequence[Sequence[int]] | None = None,
    tile: int | None = None,
    patches_per_side: int | None = None,
    aspect_ratio: str | None = None,
) -> int:
    """Image tokens the model splices in for an image of (width, height).

    flat: tokens_per_tile * (1 + tiles) (2880 for a 2x2 grid at 336/14);
    spatial_unpad: base 576 + unpadded rows * (unpadded cols + 1 newline).
    Without ``config`` the PULSE defaults apply (336 px tiles, 24 patches per side, default pinpoints).
    """
    from pulse_models.configuration import DEFAULT_GRID_PINPOINTS

    merge_type = merge_type or (config.mm_patch_merge_type if config else "flat")
    pinpoints = pinpoints or (config.image_grid_pinpoints if config else DEFAULT_GRID_PINPOINTS)
    tile = tile or (config.tile_size if config else 336)
    pps = patches_per_side or (config.patches_per_side if config else 24)
    per_tile = config.tokens_per_tile if config else pps * pps
    aspect_ratio = aspect_ratio or (config.image_aspect_ratio if config else "anyres")
    if aspect_ratio != "anyres":
        return per_tile + (1 if merge_type == "spatial_unpad" else 0)
    cols, rows = anyres_grid_shape(image_size, pinpoints, tile)
    if merge_type == "flat":
        return per_tile * (1 + cols * rows)
    if merge_type == "spatial_unpad":
        kept_h, kept_w = unpadded_feature_shape(rows * pps, cols * pps, image_size)
        return per_tile + kept_h * (kept_w + 1)
    raise ValueError(f"unknown merge type {merge_type!r}")


def _clip_normalise(image: Image.Image, mean: Sequence[float] = CLIP_MEAN,
                    std: Sequence[float] = CLIP_STD) -> np.ndarray:
    """[3, H, W] float32, as CLIPImageProcessor(do_resize=no-op) would produce."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    arr = (arr.astype(np.float64) * RESCALE).astype(np.float32)
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _clip_resize_crop(image: Image.Image, size: int, crop: int | None = None) -> Image.Image:
    """CLIPImageProcessor's resize (shortest edge -> size, bicubic) and centre crop to crop x crop
    (``crop`` defaults to ``size``)."""
    crop = size if crop is None else crop
    w, h = image.size
    if min(w, h) != size:
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = size, int(size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        image = image.resize((new_w, new_h), Image.BICUBIC)
    w, h = image.size
    if (w, h) != (crop, crop):
        left, top = (w - crop) // 2, (h - crop) // 2
        image = image.crop((left, top, left + crop, top + crop))
    return image


def _expand_to_square(image: Image.Image, mean: Sequence[float] = CLIP_MEAN) -> Image.Image:
    """LLaVA's expand2square with the processor's mean colour (image_aspect_ratio 'pad')."""
    w, h = image.size
    background = tuple(int(x * 255) for x in mean)
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


@dataclass
class ProcessedImage:
    pixel_values: "torch.Tensor"  # [1 + tiles, 3, tile, tile] float32 (one entry for pad/square)
    image_size: tuple[int, int]  # original (width, height), needed by spatial_unpad


class ImageProcessor:
    """Config-driven preprocessing; ``preprocess`` accepts a PIL image, path or bytes."""

    def __init__(self, config: "PulseConfig") -> None:
        self.config = config
        pre = config.preprocess  # the tower's preprocessor_config.json values (clip_encoder.py's processor)
        self.tile = int(pre["crop_size"])  # == the tower's image_size (PulseConfig.validate)
        self.resize = int(pre["shortest_edge"])
        self.mean, self.std = tuple(pre["image_mean"]), tuple(pre["image_std"])

    def tiles(self, image: Image.Image) -> list[Image.Image]:
        """The PIL images handed to CLIP's preprocessing (resize, crop, normalise), base image
        first (LLaVA: tiles of crop_size, the base image squashed to the processor's resize side;
        pad: the image expanded to a square; square: the image itself)."""
        aspect = self.config.image_aspect_ratio
        if aspect == "anyres":
            best = select_best_resolution(image.size, self.config.grid_pinpoints_wh)
            patches = divide_to_patches(resize_and_pad_image(image, best), self.tile)
            base = image.resize((self.resize, self.resize))  # squashed, PIL default bicubic
            return [base, *patches]
        if aspect == "pad":
            return [_expand_to_square(image, self.mean)]
        return [image]

    def preprocess(self, image: Any) -> ProcessedImage:
        import torch

        img = load_image(image)
        arrays = [_clip_normalise(_clip_resize_crop(t, self.resize, self.tile), self.mean, self.std)
                  for t in self.tiles(img)]
        return ProcessedImage(torch.from_numpy(np.stack(arrays, axis=0)), img.size)

    def num_image_tokens(self, image_size: tuple[int, int]) -> int:
        return num_image_tokens(image_size, self.config)
