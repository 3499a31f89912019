"""The one place that defines and validates every parameter of params.yaml.

Each section is a dataclass; `load_params()` builds them from the YAML, rejects unknown keys and
checks types and ranges, and every error names the offending key (e.g. ``render.workers``).
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from ruamel.yaml.error import YAMLError

from caisp import CaispError
from caisp.codecs import (CODECS, FITTED_SIMULATORS, JPEG, JPEG_ANCHORS, LEARNED_SIMULATORS, SIMULATORS, Point,
                          check_quality)

CFA = Literal["RGGB", "BGGR", "GRBG", "GBRG"]
X265_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def _range(lo: float | None = None, hi: float | None = None) -> dict:
    return {"range": (lo, hi)}


def _all_cameras() -> list[str]:
    from caisp.data.cameras import CAMERAS

    return list(CAMERAS)


@dataclass
class SyntheticParams:
    cfa: CFA = "RGGB"
    noise: bool = True
    noise_scale: float = field(default=0.3, metadata=_range(0, 10))
    blur: float = field(default=2.0, metadata=_range(0, 20))
    scale: float = field(default=1.0, metadata=_range(0.1, 8))
    cameras: list[str] = field(default_factory=_all_cameras)
    kodak: bool = True
    bits: int = field(default=14, metadata=_range(10, 16))
    tile: int = field(default=0, metadata=_range(0))
    extra_photos: Optional[Path] = field(default=None, metadata={"exists": True})


@dataclass
class FivekParams:
    list_url: str = "https://raw.githubusercontent.com/yzxing87/Invertible-ISP/main/data/NIKON_D700.txt"
    limit: Optional[int] = field(default=None, metadata=_range(1))
    workers: int = field(default=8, metadata=_range(1, 64))
    retries: int = field(default=4, metadata=_range(0, 20))


@dataclass
class FolderParams:
    path: Optional[Path] = field(default=None, metadata={"exists": True})


@dataclass
class DataParams:
    source: Literal["synthetic", "fivek", "folder"] = "synthetic"
    synthetic: SyntheticParams = field(default_factory=SyntheticParams)
    fivek: FivekParams = field(default_factory=FivekParams)
    folder: FolderParams = field(default_factory=FolderParams)


@dataclass
class RenderParams:
    use_camera_wb: bool = True
    no_auto_bright: bool = True
    demosaic: Optional[str] = None
    adjust_maximum_thr: float = field(default=0.0, metadata=_range(0, 1))
    on_error: Literal["skip", "fail"] = "skip"
    workers: int = field(default=2, metadata=_range(1, 256))


@dataclass
class EncodeParams:
    subsampling: Literal["4:2:0", "4:2:2", "4:4:4"] = "4:2:0"
    workers: int = field(default=2, metadata=_range(1, 256))


@dataclass
class SplitParams:
    ratios: list[float] = field(default_factory=lambda: [0.8, 0.05, 0.15])


@dataclass
class ModelParams:
    base_width: int = field(default=12, metadata=_range(1, 256))
    input_norm: Literal["camera", "wb", "none"] = "camera"
    tone_prior: bool = True


@dataclass
class TrainParams:
    patch: int = field(default=96, metadata=_range(16, 4096))
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = field(default=0, metadata=_range(0, 64))
    ckpt_every: int = field(default=100, metadata=_range(1))
    amp: bool = True
    lr_decay: Literal["cosine", "none"] = "cosine"
    grad_clip: Optional[float] = field(default=1.0, metadata=_range(1e-6))
    warmup_steps: int = field(default=200, metadata=_range(0))
    threads: int = field(default=2, metadata=_range(1, 1024))
    parallel_runs: int = field(default=3, metadata=_range(1, 64))
    deterministic: bool = True
    crops_per_image: Optional[int] = field(default=None, metadata=_range(1))


@dataclass
class CasParams:
    variants: list[str] = field(default_factory=lambda: ["unet", "acn", "djs"])
    unfrozen: list[str] = field(default_factory=lambda: ["unet"])
    codec_variants: list[str] = field(default_factory=lambda: ["unet", "acn"])
    baselines: list[str] = field(default_factory=lambda: ["blur", "djs_paper", "kornia"])
    codec_baselines: list[str] = field(default_factory=lambda: ["blur"])
    residual: bool = True
    domain: Literal["dct", "pixel"] = "dct"
    djs_terms: int = field(default=9, metadata=_range(0, 100))
    steps: int = field(default=300, metadata=_range(1))
    acn_steps: int = field(default=2000, metadata=_range(1))
    batch_size: int = field(default=8, metadata=_range(1))
    lr: float = field(default=1e-3, metadata=_range(0, 1))
    gate_db: float = field(default=0.1, metadata=_range(0, 100))


@dataclass
class IspParams:
    steps: int = field(default=800, metadata=_range(1))
    batch_size: int = field(default=8, metadata=_range(1))
    lr: float = field(default=2e-3, metadata=_range(0, 1))


@dataclass
class RegimeParams:
    """One ISP regime of the operating-point axis: what the pretrained (compression-agnostic) ISP sees
    and how long it trains, as overrides of `model` and `isp` (null: theirs)."""
    input_norm: Optional[Literal["camera", "wb", "none"]] = None
    tone_prior: Optional[bool] = None
    steps: Optional[int] = field(default=None, metadata=_range(1))
    # true: fine-tuning seed s starts from its own pretrained ISP (pretrained with seed s), so that the
    # intervals over seeds also cover the pretraining; false: every seed starts from one (seed `seed`)
    pretrain_per_seed: bool = False


@dataclass
class FinetuneParams:
    steps: int = field(default=100, metadata=_range(1))
    batch_size: int = field(default=8, metadata=_range(1))
    lr_scale: float = field(default=0.1, metadata=_range(0, 1))
    grad_clip: Optional[float] = field(default=None, metadata=_range(1e-6))


@dataclass
class EvaluateParams:
    sweep_qfs: list[int] = field(default_factory=lambda: [80, 84, 88, 92, 96])
    tile: int = field(default=1024, metadata=_range(64))
    overlap: int = field(default=64, metadata=_range(0))
    bootstrap: int = field(default=4000, metadata=_range(100, 1_000_000))
    bd_min_overlap: float = field(default=0.5, metadata=_range(0))
    workers: int = field(default=2, metadata=_range(1, 256))


@dataclass
class WebpParams:
    sweep: list[int] = field(default_factory=lambda: [70, 75, 80, 85, 90])
    method: int = field(default=4, metadata=_range(0, 6))   # libwebp effort: 0 fast .. 6 small


@dataclass
class AvifParams:
    sweep: list[int] = field(default_factory=lambda: [50, 55, 60, 65, 70])
    speed: int = field(default=6, metadata=_range(0, 10))   # libavif: 0 slow/small .. 10 fast
    subsampling: Literal["4:2:0", "4:2:2", "4:4:4"] = "4:2:0"


@dataclass
class Jpeg2000Params:
    sweep: list[int] = field(default_factory=lambda: [31, 34, 37, 40, 43])


@dataclass
class HeicParams:
    sweep: list[int] = field(default_factory=lambda: [40, 45, 50, 55, 60])
    preset: Literal[X265_PRESETS] = "fast"  # x265 speed preset (its default, medium, is ~3x slower here)


@dataclass
class CodecsParams:
    """Codecs besides JPEG (JPEG's settings are encode.subsampling and evaluate.sweep_qfs): each one's
    settings and its quality sweep for the rate-distortion curve (on its own quality scale)."""
    webp: WebpParams = field(default_factory=WebpParams)
    avif: AvifParams = field(default_factory=AvifParams)
    jpeg2000: Jpeg2000Params = field(default_factory=Jpeg2000Params)
    heic: HeicParams = field(default_factory=HeicParams)


@dataclass
class RateParams:
    """The rate axis (issue 22): L_total = lambda_isp * L_isp + lambda_rate * R(f(x)) / pixels, R the
    differentiable JPEG size estimate of `caisp.rate`, fitted per QF on the training photos. Each
    lambda_rate is fine-tuned like the agnostic control (lambda_comp = 0, the same seeds, crops and
    steps), so that it differs from that control in R alone, and scored with the real encoders."""
    lambdas: list[float] = field(default_factory=list, metadata=_range(0))
    anchors: list[str] = field(default_factory=lambda: list(JPEG_ANCHORS))
    # the QFs of its rate-distortion curves (the training QFs are added): wider than evaluate.sweep_qfs,
    # because where the ISP's own error dominates PSNR(c(f(x)), y) moves little with the QF
    sweep_qfs: list[int] = field(default_factory=lambda: [50, 60, 70, 80, 90, 95], metadata=_range(1, 100))


@dataclass
class Params:
    lambda_isp: float = field(default=0.1, metadata=_range(0))
    lambda_comp: float = field(default=1.0, metadata=_range(0))
    qfs: list[int] = field(default_factory=lambda: [80, 90])
    codec_points: list[str] = field(default_factory=list)
    seed: int = field(default=0, metadata=_range(0, 2**32 - 1))  # numpy's legacy seeding limit
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata=_range(0, 2**32 - 1))
    data: DataParams = field(default_factory=DataParams)
    render: RenderParams = field(default_factory=RenderParams)
    encode: EncodeParams = field(default_factory=EncodeParams)
    split: SplitParams = field(default_factory=SplitParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    cas: CasParams = field(default_factory=CasParams)
    isp: IspParams = field(default_factory=IspParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    codecs: CodecsParams = field(default_factory=CodecsParams)
    rate: RateParams = field(default_factory=RateParams)
    regimes: dict[str, RegimeParams] = field(default_factory=lambda: {
        "paper": RegimeParams(input_norm="wb", steps=200, pretrain_per_seed=True),
        "mid": RegimeParams(steps=100), "today": RegimeParams()})
    isp_regimes: list[str] = field(default_factory=lambda: ["paper", "today"])
    aware_regimes: list[str] = field(default_factory=lambda: ["paper"])

    def __post_init__(self) -> None:
        _check_cross_field(self)
        _check_experiment(self)
        _check_regimes(self)
        _check_rate(self)
        try:
            _check_codecs(self)
        except CaispError as e:  # codec checks name the key; say it is a parameter, as the others do
            raise e if str(e).startswith("params:") else CaispError(f"params: {e}") from None

    # The schema keeps the paper's JPEG keys where the paper has them (qfs, cas.variants,
    # encode.subsampling, evaluate.sweep_qfs); these methods are the one place that maps them and the
    # other codecs' sections onto operating points, so no caller asks which codec it has.

    @property
    def points(self) -> list[Point]:
        """Every training operating point: JPEG at each of `qfs`, then `codec_points`."""
        return [Point(JPEG.name, q) for q in self.qfs] + [Point.parse(t) for t in self.codec_points]

    def variants(self, point: Point) -> list[str]:
        """The CAS variants trained (and ISPs fine-tuned) at a training point."""
        return list(self.cas.variants if point.codec == JPEG.name else self.cas.codec_variants)

    def baselines(self, point: Point) -> list[str]:
        """The simulators scored at a training point beside `variants` (Table 1), never fine-tuned with."""
        return list(self.cas.baselines if point.codec == JPEG.name else self.cas.codec_baselines)

    def codec_settings(self, codec: str) -> dict:
        """Encoder settings of `codec` (everything in its section but the sweep)."""
        if codec == JPEG.name or codec in JPEG_ANCHORS:  # JPEG's anchors code what JPEG codes
            return {"subsampling": self.encode.subsampling}
        return {k: v for k, v in to_dict(getattr(self.codecs, codec)).items() if k != "sweep"}

    def sweep(self, codec: str) -> list[int]:
        """Qualities of `codec`'s rate-distortion sweep, its training points included."""
        # JPEG's anchors sweep JPEG's qualities, its training points included, so that their curves pair
        same = (codec, JPEG.name) if codec in JPEG_ANCHORS else (codec,)
        base = self.evaluate.sweep_qfs if same[-1] == JPEG.name else getattr(self.codecs, codec).sweep
        return sorted(set(base) | {pt.quality for pt in self.points if pt.codec in same})

    def regime(self, name: str) -> "Params":
        """These params as regime `name` sees them: its overrides of `model` and `isp` applied."""
        if name not in self.regimes:
            _fail("regimes", f"no regime {name!r} (defined: {', '.join(self.regimes)})")
        r = self.regimes[name]
        model = dataclasses.replace(self.model, **{k: v for k, v in (("input_norm", r.input_norm),
                                                                     ("tone_prior", r.tone_prior)) if v is not None})
        isp = dataclasses.replace(self.isp, steps=r.steps if r.steps is not None else self.isp.steps)
        return dataclasses.replace(self, model=model, isp=isp)

    def pretrain_seeds(self, regime: str) -> list[int]:
        """The seeds regime `regime`'s ISP is pretrained with (one model each)."""
        return list(self.seeds) if self.regimes[regime].pretrain_per_seed else [self.seed]

    def pretrain_seed(self, regime: str, seed: int) -> int:
        """The pretrained ISP fine-tuning seed `seed` starts from in `regime`."""
        return seed if self.regimes[regime].pretrain_per_seed else self.seed

    @property
    def eval_points(self) -> list[Point]:
        """Where every ISP is evaluated: the sweep of each codec that has a training point."""
        codecs = dict.fromkeys(pt.codec for pt in self.points)
        return [Point(c, q) for c in codecs for q in self.sweep(c)]


def _fail(key: str, msg: str) -> typing.NoReturn:
    raise CaispError(f"params: {key}: {msg}")


def _convert(key: str, tp: Any, value: Any, meta: dict, base: Path) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            _fail(key, "must not be null")
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(key, inner, value, meta, base)
    if origin is Literal:
        if value not in args:
            _fail(key, f"{value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is dict:
        if not isinstance(value, dict) or not value:
            _fail(key, f"must be a non-empty mapping, got {value!r}")
        out = {}
        for name, v in value.items():
            if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                _fail(f"{key}.{name}", "a name must be lower-case letters, digits and _ (it names stages "
                      "and folders), starting with a letter")
            out[name] = _convert(f"{key}.{name}", args[1], v, meta, base)
        return out
    if origin is list:
        if not isinstance(value, list):
            _fail(key, f"must be a list, got {value!r}")
        return [_convert(f"{key}[{i}]", args[0], v, meta, base) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, base)
    if tp is bool:
        if not isinstance(value, bool):
            _fail(key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, f"must be an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, f"must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            _fail(key, f"must be finite, got {value!r}")
    elif tp is str:
        if not isinstance(value, str) or not value:
            _fail(key, f"must be a non-empty string, got {value!r}")
    elif tp is Path:
        if not isinstance(value, str) or not value:
            _fail(key, f"must be a path, got {value!r}")
        value = Path(value).expanduser()
        if not value.is_absolute():
            value = base / value
        if meta.get("exists") and not value.exists():
            _fail(key, f"path {value} does not exist")
    lo, hi = meta.get("range", (None, None))
    if lo is not None and value < lo:
        _fail(key, f"{value!r} is below the minimum {lo}")
    if hi is not None and value > hi:
        _fail(key, f"{value!r} is above the maximum {hi}")
    return value


def _build(cls: type, raw: Any, prefix: str, base: Path) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(prefix or "<top level>", f"must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = ".".join(filter(None, [prefix, str(unknown[0])]))
        _fail(key, f"unknown key (known here: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in raw:
            key = ".".join(filter(None, [prefix, name]))
            kwargs[name] = _convert(key, hints[name], raw[name], dict(f.metadata), base)
    return cls(**kwargs)


def _check_cross_field(p: Params) -> None:
    for key, qfs in (("qfs", p.qfs), ("evaluate.sweep_qfs", p.evaluate.sweep_qfs)):
        if not qfs:
            _fail(key, "must list at least one quality factor")
        for qf in qfs:
            if not 1 <= qf <= 100:
                _fail(key, f"quality factor {qf} is outside 1..100")
        if len(set(qfs)) != len(qfs):
            _fail(key, f"repeats a quality factor: {qfs}")
    if not p.cas.variants:  # the finetune/evaluate matrices would be empty: nothing to compare
        _fail("cas.variants", "must list at least one CAS variant")
    for key, names in (("cas.variants", p.cas.variants), ("cas.unfrozen", p.cas.unfrozen)):
        for name in names:
            if name not in SIMULATORS:
                _fail(key, f"unknown CAS variant {name!r} (known: {', '.join(SIMULATORS)})")
        if len(set(names)) != len(names):  # DVC would build two stages of one name
            _fail(key, f"repeats a CAS variant: {names}")
    for key, names, used in (("cas.baselines", p.cas.baselines, p.cas.variants),
                             ("cas.codec_baselines", p.cas.codec_baselines, p.cas.codec_variants)):
        for name in names:
            if name not in SIMULATORS:
                _fail(key, f"unknown CAS variant {name!r} (known: {', '.join(SIMULATORS)})")
            if name in used:  # two stages would write its model
                _fail(key, f"{name!r} is already a fine-tuning simulator in {used}: list it once")
        if len(set(names)) != len(names):
            _fail(key, f"repeats a CAS variant: {names}")
    for name in p.cas.codec_baselines:
        if name not in FITTED_SIMULATORS:
            _fail("cas.codec_baselines", f"{name!r} models JPEG only (every codec has: {', '.join(FITTED_SIMULATORS)})")
    for name in p.cas.unfrozen:
        if name not in LEARNED_SIMULATORS:
            _fail("cas.unfrozen", f"{name!r} has no parameters to update")
        if name not in p.cas.variants:  # its CAS is only trained for a variant in cas.variants
            _fail("cas.unfrozen", f"{name!r} is not in cas.variants {p.cas.variants}")
    r = p.split.ratios
    if len(r) != 3 or any((not math.isfinite(x)) or x < 0 for x in r) or abs(sum(r) - 1) > 1e-6:
        _fail("split.ratios", f"must be three non-negative numbers summing to 1, got {r}")
    if p.train.patch % 16:
        _fail("train.patch", f"{p.train.patch} is not a multiple of 16 (crops sit on the JPEG grid)")
    if p.evaluate.tile % 16 or p.evaluate.tile < 2 * p.evaluate.overlap + 16:
        _fail("evaluate.tile", f"{p.evaluate.tile} must be a multiple of 16 and >= 2*overlap+16")
    if p.lambda_isp == 0 and p.lambda_comp == 0:
        _fail("lambda_comp", "lambda_isp and lambda_comp are both 0: nothing to train")
    if p.data.source == "folder" and p.data.folder.path is None:
        _fail("data.folder.path", "must name a folder of raw files when data.source is 'folder'")


def _check_experiment(p: Params) -> None:
    """The synthetic camera and the seeds of the evidence (split by source, seeded fine-tuning)."""
    from caisp.data.cameras import CAMERAS

    cams = p.data.synthetic.cameras
    if not cams:
        _fail("data.synthetic.cameras", "must name at least one camera")
    for i, c in enumerate(cams):
        if c not in CAMERAS:
            _fail(f"data.synthetic.cameras[{i}]", f"unknown camera {c!r} (known: {', '.join(CAMERAS)})")
    if not p.seeds:
        _fail("seeds", "must list at least one fine-tuning seed")
    if len(set(p.seeds)) != len(p.seeds):
        _fail("seeds", f"repeats a seed: {p.seeds}")


def _check_regimes(p: Params) -> None:
    """The operating-point axis: every regime named is defined; fine-tuned regimes are pretrained."""
    for key, names in (("isp_regimes", p.isp_regimes), ("aware_regimes", p.aware_regimes)):
        if not names:
            _fail(key, "must name at least one regime")
        for i, name in enumerate(names):
            if name not in p.regimes:
                _fail(f"{key}[{i}]", f"{name!r} is not a regime (defined in regimes: {', '.join(p.regimes)})")
        if len(set(names)) != len(names):  # DVC would build two stages of one name
            _fail(key, f"repeats a regime: {names}")
    for name in p.aware_regimes:
        if name not in p.isp_regimes:
            _fail("aware_regimes", f"{name!r} is fine-tuned but not pretrained: add it to isp_regimes {p.isp_regimes}")


def _check_codecs(p: Params) -> None:
    """The codec axis: operating points besides JPEG, their simulators and every codec's sweep."""
    seen = set()
    for i, text in enumerate(p.codec_points):
        pt = Point.parse(text, key=f"codec_points[{i}]")
        if pt.codec == JPEG.name:
            _fail(f"codec_points[{i}]", f"{text!r} is JPEG: JPEG's quality factors are `qfs`")
        if pt in seen:  # DVC would build two stages of one name
            _fail("codec_points", f"repeats the operating point {text!r}")
        seen.add(pt)
    for codec in (c for c in CODECS if c != JPEG.name and c not in JPEG_ANCHORS):  # theirs: evaluate.sweep_qfs
        sweep = getattr(p.codecs, codec).sweep
        key = f"codecs.{codec}.sweep"
        if not sweep:
            _fail(key, "must list at least one quality")
        for j, q in enumerate(sweep):
            check_quality(codec, q, key=f"{key}[{j}]")
        if len(set(sweep)) != len(sweep):
            _fail(key, f"repeats a quality: {sweep}")
    names = p.cas.codec_variants
    for name in names:
        if name not in LEARNED_SIMULATORS:
            _fail("cas.codec_variants", f"{name!r} cannot be trained for another codec (learned simulators: "
                  f"{', '.join(LEARNED_SIMULATORS)}; DJS and kornia model JPEG only)")
    if len(set(names)) != len(names):
        _fail("cas.codec_variants", f"repeats a CAS variant: {names}")
    if p.codec_points:
        if not names:
            _fail("cas.codec_variants", "must list at least one learned simulator when codec_points is set")
        for name in p.cas.unfrozen:  # the unfrozen matrix of the codec stages uses cas.unfrozen too
            if name not in names:
                _fail("cas.unfrozen", f"{name!r} is not in cas.codec_variants {names}, which codec_points use")


def _check_rate(p: Params) -> None:
    lams = p.rate.lambdas
    for i, lam in enumerate(lams):
        if not lam > 0:  # lambda_rate 0 is the agnostic control, which every regime already has
            _fail(f"rate.lambdas[{i}]", f"must be > 0 (0 is control-agnostic), got {lam}")
    if len(set(lams)) != len(lams):  # DVC would build two stages of one name
        _fail("rate.lambdas", f"repeats a value: {lams}")
    if len(p.rate.sweep_qfs) < 2 or len(set(p.rate.sweep_qfs)) != len(p.rate.sweep_qfs):
        _fail("rate.sweep_qfs", f"must list at least two distinct quality factors, got {p.rate.sweep_qfs}")
    for i, name in enumerate(p.rate.anchors):
        if name not in JPEG_ANCHORS:
            _fail(f"rate.anchors[{i}]", f"{name!r} is not an encoder anchor of JPEG (known: {', '.join(JPEG_ANCHORS)})")
    if len(set(p.rate.anchors)) != len(p.rate.anchors):
        _fail("rate.anchors", f"repeats an anchor: {p.rate.anchors}")


def _yaml12():
    """A YAML 1.2 reader, as DVC uses: `dvc exp run -S` rewrites params.yaml with ruamel, which leaves
    `4:2:0` unquoted, and a YAML 1.1 reader (PyYAML) would read that as the base-60 integer 14520."""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (relative paths in it are relative to its folder)."""
    path = Path(path)
    try:
        raw = _yaml12().load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaispError(f"params: {path} not found") from None
    except IsADirectoryError:
        raise CaispError(f"params: {path} is a folder, not a params file") from None
    except UnicodeDecodeError as e:
        raise CaispError(f"params: {path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise CaispError(f"params: {path}: cannot read it ({e.strerror or e})") from None
    except YAMLError as e:
        raise CaispError(f"params: {path} is not valid YAML: {e}") from None
    return from_dict(raw, base=path.resolve().parent)


# The download stage's output: it is emptied before each run, so no source may live in it.
RAW_OUTPUT = Path("data/raw")


def from_dict(raw: dict, base: Path = Path(".")) -> Params:
    """Params from a parsed params.yaml; relative paths (and the pipeline's data/raw) are under `base`."""
    p = _build(Params, raw, "", base)
    out = (base / RAW_OUTPUT).resolve()
    for key, path in (("data.folder.path", p.data.folder.path if p.data.source == "folder" else None),
                      ("data.synthetic.extra_photos",
                       p.data.synthetic.extra_photos if p.data.source == "synthetic" else None)):
        if path is not None and (path.resolve() == out or out in path.resolve().parents):
            _fail(key, f"{path} is inside {RAW_OUTPUT}, the download stage's output, which it empties before "
                       "each run; keep your files in another folder")
    return p


def to_dict(p: Any) -> Any:
    """Plain JSON-able dict of a params (sub)tree, e.g. to store beside a checkpoint."""
    if dataclasses.is_dataclass(p):
        return {f.name: to_dict(getattr(p, f.name)) for f in dataclasses.fields(p)}
    if isinstance(p, list):
        return [to_dict(v) for v in p]
    if isinstance(p, dict):
        return {k: to_dict(v) for k, v in p.items()}
    if isinstance(p, Path):
        return str(p)
    return p
