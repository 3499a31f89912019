"""The codec axis: what each codec is (one `Codec` object per codec) and an operating point (`Point`),
a codec at one quality on its own scale.

This module describes codecs; `caisp.data.codec` encodes with them. Parameters, paths, stage names and
the report read these descriptions, so editing the encoder does not touch them (and DVC reruns only
the stages that encode or score with it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from caisp import CaispError

# Simulators trained on (y, c(y)) pairs of any codec; the analytic ones (DJS, kornia) are JPEG's alone.
LEARNED_SIMULATORS = ("unet", "acn")
# The baseline every codec has: a Gaussian blur of y, its one sigma fitted on the training pairs.
FITTED_SIMULATORS = ("blur",)


@dataclass(frozen=True)
class Codec:
    name: str                 # as in params (codec_points, codecs.<name>) and file names
    display: str              # as in the report
    pillow_format: str        # Pillow's format name
    ext: str                  # file extension of the encoded files
    quality: tuple[int, int]  # valid range of the quality, inclusive
    scale: str                # what the quality means
    feature: str | None       # PIL.features name that must be present (None: none)
    simulators: tuple[str, ...]  # CAS variants that can model it
    module: str | None = None     # a Python package its encoder needs beyond Pillow (import name)
    package: str | None = None    # and what `pip install` calls it
    point_name: str = "{codec}-{quality}"   # file and stage name of an operating point
    point_label: str = "{display} {quality}"
    quality_name: str = "quality"           # what its quality is called in messages
    quality_head: str = "quality"           # a table's column head for it
    # Codec settings that its analytic simulators are built from (with the quality as `qf`); None: it
    # has none, and its learned simulators take no codec arguments.
    simulator_settings: tuple[str, ...] | None = None

    @property
    def checkpoint_fields(self) -> dict[str, str]:
        """What a checkpoint config records of the codec. Checkpoints from before the codec axis are all
        JPEG and carry no `codec`; JPEG's still do not, so that a model file's bytes depend on its
        weights and settings only (version 1 of the format reads a missing codec as JPEG)."""
        return {} if self.name == "jpeg" else {"codec": self.name}

    def check_quality(self, quality: Any, key: str | None = None) -> int:
        """The quality as an int within range; the error names `key` (a parameter) if given."""
        lo, hi = self.quality
        if isinstance(quality, bool) or not _is_int(quality) or not lo <= quality <= hi:
            where = f"{key}: " if key else ""
            raise CaispError(f"{where}{self.display} {self.quality_name} must be an integer in {lo}..{hi} "
                             f"({self.scale}), got {quality!r}")
        return int(quality)


def _is_int(x: Any) -> bool:
    import numbers

    return isinstance(x, numbers.Integral)


_ANALYTIC_JPEG = ("djs", "djs_paper", "kornia")
_ANY = LEARNED_SIMULATORS + FITTED_SIMULATORS
CODECS: dict[str, Codec] = {c.name: c for c in (
    # JPEG's points keep the paper's names (qf80, "QF 80"), so `dvc metrics diff` pairs them across commits.
    Codec("jpeg", "JPEG", "JPEG", ".jpg", (1, 100), "IJG quality factor (libjpeg's scaled tables)", "jpg",
          _ANY + _ANALYTIC_JPEG, point_name="qf{quality}", point_label="QF {quality}",
          quality_name="quality factor", quality_head="QF",
          simulator_settings=("subsampling",)),
    Codec("webp", "WebP", "WEBP", ".webp", (1, 100), "libwebp lossy quality", "webp", _ANY),
    Codec("avif", "AVIF", "AVIF", ".avif", (1, 100), "libavif quality (AV1 intra, 100 = lossless)", "avif",
          _ANY),
    Codec("jpeg2000", "JPEG 2000", "JPEG2000", ".jp2", (20, 80),
          "OpenJPEG fixed-quality layer: target PSNR in dB (irreversible 9/7 wavelet)", "jpg_2000", _ANY),
    Codec("heic", "HEIC", "HEIF", ".heic", (1, 100), "x265 quality through libheif (HEVC intra)", None,
          _ANY, module="pillow_heif", package="pillow-heif"),
    # JPEG's encoder-side anchors (issue 22): the same format, tables and quality scale as `jpeg`, coded
    # with more effort; decoded by Pillow like any JPEG.
    Codec("jpegopt", "JPEG, optimised Huffman", "JPEG", ".jpg", (1, 100),
          "IJG quality factor; libjpeg-turbo with Huffman tables optimised per image", "jpg", _ANY,
          point_label="QF {quality}, optimised Huffman", quality_name="quality factor", quality_head="QF",
          simulator_settings=("subsampling",)),
    Codec("mozjpeg", "mozjpeg", "JPEG", ".jpg", (1, 100),
          "IJG quality factor (libjpeg's tables); mozjpeg 4.0.3 with trellis quantisation, optimised Huffman, "
          "progressive scans", "jpg", _ANY, module="jpeglib", package="jpeglib",
          point_label="mozjpeg QF {quality}", quality_name="quality factor", quality_head="QF",
          simulator_settings=("subsampling",)),
)}
# The codecs that code JPEG's format at JPEG's quality scale with another encoder.
JPEG_ANCHORS = ("jpegopt", "mozjpeg")
JPEG = CODECS["jpeg"]  # the paper's codec
SIMULATORS = tuple(dict.fromkeys(v for c in CODECS.values() for v in c.simulators))


def get(name: str, key: str = "codec") -> Codec:
    if name not in CODECS:
        raise CaispError(f"{key}: unknown codec {name!r} (known: {', '.join(CODECS)})")
    return CODECS[name]


def check_quality(codec: str, quality: Any, key: str | None = None) -> int:
    return get(codec).check_quality(quality, key)


@dataclass(frozen=True, order=True)
class Point:
    """An operating point: `codec` at `quality` (on that codec's own scale)."""
    codec: str
    quality: int

    @property
    def spec(self) -> Codec:
        return CODECS[self.codec]

    @property
    def name(self) -> str:
        """File and stage name: `qf80`, `webp-80`."""
        return self.spec.point_name.format(codec=self.codec, quality=self.quality)

    @property
    def label(self) -> str:
        """'QF 80', 'WebP 80'."""
        return self.spec.point_label.format(display=self.spec.display, quality=self.quality)

    @classmethod
    def parse(cls, text: str, key: str = "codec_points") -> "Point":
        """The inverse of `name` ('qf90', 'webp-80'; 'jpeg-90' too); errors name `key`. Only the canonical
        spelling is accepted: 'webp-080' or 'webp-80 ' would name files and stages that DVC cannot find."""
        m = re.fullmatch(r"(?:qf(\d+))|([a-z0-9]+)-(\d+)", str(text))
        if not m:
            raise CaispError(f"{key}: {text!r} is not an operating point <codec>-<quality>, e.g. webp-80")
        codec, q = ("jpeg", m.group(1)) if m.group(1) else (m.group(2), m.group(3))
        get(codec, key)
        pt = cls(codec, check_quality(codec, int(q), key))
        if str(text) not in (pt.name, f"{codec}-{pt.quality}"):
            raise CaispError(f"{key}: write {text!r} as {pt.name!r}")
        return pt
