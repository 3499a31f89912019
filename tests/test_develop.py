"""caisp develop: CFA patterns, orientation, white-balance fallback, the CLI's error handling."""
from __future__ import annotations

import argparse
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rawpy
import torch

from caisp.checkpoint import save_model
from caisp.data.synthetic import write_dng
from caisp.data.raw import GENERIC_WB
from caisp.develop import add_develop_parser, choose_wb, develop_raw, run_develop
from caisp.models import build

# residual=True zero-initialises the head: the ISP-Net starts as the exact identity, so the output is
# the white-balanced bilinear demosaic ("oracle" for colour and geometry checks).
IDENTITY = {"type": "isp_net", "kwargs": {"base_width": 4, "residual": True}, "qf": 90,
            "input_norm": "wb", "cfa": "RGGB"}


def identity_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build("isp_net", **IDENTITY["kwargs"]).eval()


def colour_image(h: int = 64, w: int = 96) -> np.ndarray:
    """Smooth, strongly coloured (red rises left to right, blue top to bottom), no symmetry."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    y, x = y / (h - 1), x / (w - 1)
    rgb = np.stack([30 + 200 * x, 70 + 80 * x * y, 40 + 180 * y], -1)
    return np.rint(rgb).astype(np.uint8)


def marked_image(h: int = 64, w: int = 96) -> np.ndarray:
    """Grey with a white block top-left and a red block top-right: its orientation is unambiguous."""
    img = np.full((h, w, 3), 50, np.uint8)
    img[:16, :20] = 240
    img[:12, -12:] = (240, 40, 40)
    return img


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "isp.pt"
    save_model(path, identity_net(), IDENTITY)
    return path


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="caisp")
    add_develop_parser(parser.add_subparsers(dest="command"))
    return run_develop(parser.parse_args(["develop", *argv]))


@pytest.mark.parametrize("model_cfa", ["RGGB", "GBRG"])
def test_all_cfa_patterns_give_same_colours(tmp_path, model_cfa):
    img, net = colour_image(), identity_net()
    config = {**IDENTITY, "cfa": model_cfa}
    outs = {}
    for cfa in ("RGGB", "BGGR", "GRBG", "GBRG"):
        path = write_dng(tmp_path / f"{cfa}.dng", img, cfa=cfa, noise=False, seed=3)
        outs[cfa] = develop_raw(path, net, config, tile=64, overlap=16)
        assert outs[cfa].shape == (64, 96, 3) and outs[cfa].dtype == np.float32
    ref = outs["RGGB"]
    # red grows to the right, blue downwards: a swapped R/B would fail this at once
    assert ref[:, -4:, 0].mean() > ref[:, :4, 0].mean() + 0.2
    assert ref[-4:, :, 2].mean() > ref[:4, :, 2].mean() + 0.2
    for cfa, out in outs.items():
        diff = np.abs(out - ref)
        assert diff[2:-2, 2:-2].max() < 0.01, cfa  # bilinear samples differ by phase only (~0.003)
        assert diff.max() < 0.05, cfa  # replicated border rows/columns (~0.018)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_orientation_matches_rawpy(tmp_path, orientation):
    path = write_dng(tmp_path / f"o{orientation}.dng", marked_image(), orientation=orientation,
                     noise=False)
    out = develop_raw(path, identity_net(), IDENTITY, tile=64, overlap=16)
    with rawpy.imread(str(path)) as raw:
        ref = raw.postprocess(use_camera_wb=True).astype(np.float64) / 255
    assert out.shape == ref.shape
    # Tone curve and colour matrix differ (linear camera RGB here); the layout must not.
    corr = np.corrcoef(out.mean(2).ravel(), ref.mean(2).ravel())[0, 1]
    assert corr > 0.95
    red = out[..., 0] - out[..., 1]
    red_ref = ref[..., 0] - ref[..., 1]
    assert np.unravel_index(red.argmax(), red.shape) == pytest.approx(
        np.unravel_index(red_ref.argmax(), red_ref.shape), abs=12)


@pytest.mark.parametrize("neutral,source,note", [((1, 1, 1), "unity", "unity gains"),
                                                  ((0, 0, 0), "auto", "automatic white balance")])
def test_non_camera_wb_is_libraws_and_warns_once(tmp_path, capfd, neutral, source, note):
    """develop uses read_raw's WB (the one LibRaw's use_camera_wb rendering applies, see
    test_white_balance.py) and says so in one line when it is not the camera's own."""
    from caisp.data.raw import read_raw

    img, net = colour_image(), identity_net()
    path = write_dng(tmp_path / "odd.dng", img, noise=False, as_shot_neutral=neutral)
    raw = read_raw(path)
    assert raw.wb_source == source
    out = develop_raw(path, net, IDENTITY, tile=64, overlap=16)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "odd.dng" in err[0] and note in err[0]
    # identity ISP-Net with input_norm "wb": the picture is the demosaiced mosaic times raw.wb
    plain = develop_raw(path, net, {**IDENTITY, "input_norm": "none"}, tile=64, overlap=16)
    ratio = out.reshape(-1, 3).mean(0) / plain.reshape(-1, 3).mean(0)
    np.testing.assert_allclose(ratio / ratio[1], raw.wb, rtol=0.01)
    good = write_dng(tmp_path / "good.dng", img, noise=False)
    develop_raw(good, net, IDENTITY, tile=64, overlap=16)
    assert capfd.readouterr().err == ""  # the camera's own WB: no warning


def test_choose_wb_generic_warns(capsys):
    raw = SimpleNamespace(wb=GENERIC_WB.copy(), wb_source="generic", path="x.kdc")
    np.testing.assert_array_equal(choose_wb(raw), GENERIC_WB)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.kdc" in err[0] and "generic" in err[0]


def test_cli_reports_bad_inputs_and_goes_on(tmp_path, checkpoint, capfd):
    good = write_dng(tmp_path / "good.dng", marked_image(), noise=False)
    text = tmp_path / "not_a_raw.txt"
    text.write_text("hello\n")
    truncated = tmp_path / "truncated.dng"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out = tmp_path / "out"
    rc = run_cli([str(good), str(text), str(truncated), "-o", str(out), "--model", str(checkpoint),
                  "--tile", "64", "--overlap", "16", "--device", "cpu"])
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["good.jpg"]
    assert len(err) == 2, err
    assert sum("not_a_raw.txt" in line for line in err) == 1
    assert sum("truncated.dng" in line and "truncated" in line.split("truncated.dng", 1)[1]
               for line in err) == 1
    from PIL import Image

    with Image.open(out / "good.jpg") as im:
        assert im.size == (96, 64)


def png_header(path: Path) -> tuple[int, int, int]:
    """(width, height, bit depth) from a PNG's IHDR."""
    head = path.read_bytes()[:26]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    w, h, depth = struct.unpack(">IIB", head[16:25])
    return w, h, depth


def test_png16_single_output_file(tmp_path, checkpoint):
    src = write_dng(tmp_path / "portrait.dng", marked_image(), orientation=6, noise=False)
    dst = tmp_path / "pic.png"
    assert run_cli([str(src), "-o", str(dst), "--model", str(checkpoint), "--tile", "64",
                    "--overlap", "16"]) == 0
    assert png_header(dst) == (64, 96, 16)  # rotated: 64 wide, 96 high


class NotAModel:
    """A pickled custom object: safe loading must refuse it."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


@pytest.mark.parametrize("kind", ["pickle", "text", "cas"])
def test_bad_model_exit_2(tmp_path, capfd, kind):
    src = write_dng(tmp_path / "a.dng", marked_image(), noise=False)
    model = tmp_path / "model.pt"
    if kind == "pickle":
        torch.save(NotAModel(), model)
    elif kind == "text":
        model.write_text("not a checkpoint")
    else:  # a CAS-Net checkpoint is a valid file but no ISP
        save_model(model, build("unet", base_width=4), {"type": "unet", "kwargs": {"base_width": 4}})
    rc = run_cli([str(src), "-o", str(tmp_path / "out"), "--model", str(model)])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "model.pt" in err[0] and "error" in err[0]
    assert not (tmp_path / "out").exists()


def test_real_samples(tmp_path, raw_samples, capfd):
    """Canon DNG and Kodak DC50 (GRBG, no WB) develop with a small random ISP-Net; the Kodak C330
    (not a Bayer sensor) fails with one clear line."""
    torch.manual_seed(0)
    ckpt = tmp_path / "rand.pt"
    config = {"type": "isp_net", "kwargs": {"base_width": 4}, "qf": 85, "input_norm": "wb", "cfa": "RGGB"}
    save_model(ckpt, build("isp_net", **config["kwargs"]), config)
    names = ["canon550d_magiclantern_colorchart.dng", "kodak_dc50_RAW_KODAK_DC50.KDC",
             "kodak_c330_RAW_KODAK_C330_FORMAT_NONE_YRGB.raw"]
    out = tmp_path / "out"
    rc = run_cli([str(raw_samples / n) for n in names]
                 + ["-o", str(out), "--model", str(ckpt), "--tile", "1024", "--device", "cpu"])
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "canon550d_magiclantern_colorchart.jpg", "kodak_dc50_RAW_KODAK_DC50.jpg"]
    c330 = [line for line in err if "kodak_c330" in line]
    assert len(c330) == 1 and "not a Bayer sensor" in c330[0]
    # the DC50 records no white balance at all: one warning line for it
    assert sum("kodak_dc50" in line for line in err) == 1
    from PIL import Image

    for name in names[:2]:
        with rawpy.imread(str(raw_samples / name)) as raw:
            size = (raw.sizes.width, raw.sizes.height) if raw.sizes.flip not in (5, 6) else (
                raw.sizes.height, raw.sizes.width)
        with Image.open(out / (Path(name).stem + ".jpg")) as im:
            # read_raw crops the mosaic to even sides; rawpy keeps an odd last row/column
            assert abs(im.size[0] - size[0]) <= 1 and abs(im.size[1] - size[1]) <= 1


def test_input_norm_none_skips_white_balance(tmp_path):
    path = write_dng(tmp_path / "a.dng", colour_image(), noise=False)
    net = identity_net()
    balanced = develop_raw(path, net, IDENTITY, tile=64, overlap=16)
    plain = develop_raw(path, net, {**IDENTITY, "input_norm": "none"}, tile=64, overlap=16)
    # the camera's red gain is ~2 (synthetic D700): without WB the red channel is about half
    ratio = plain[..., 0].mean() / balanced[..., 0].mean()
    assert 0.3 < ratio < 0.75
    with pytest.raises(Exception, match="input_norm"):
        develop_raw(path, net, {**IDENTITY, "input_norm": "gamma"}, tile=64, overlap=16)


def test_cli_file_output_needs_single_input_and_stems_must_differ(tmp_path, checkpoint, capfd):
    a = write_dng(tmp_path / "a" / "x.dng", marked_image(), noise=False)
    b = write_dng(tmp_path / "b" / "x.dng", marked_image(), noise=False)
    common = ["--model", str(checkpoint), "--tile", "64", "--overlap", "16"]
    assert run_cli([str(a), str(b), "-o", str(tmp_path / "one.jpg"), *common]) == 2
    assert "names a file" in capfd.readouterr().err
    out = tmp_path / "out"
    assert run_cli([str(a), str(b), "-o", str(out), *common]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "overwrite" in err[0] and str(b) in err[0]
    assert [p.name for p in out.iterdir()] == ["x.jpg"]


@pytest.mark.parametrize("cfa", ["RGGB", "GBRG"])
def test_strip_demosaic_equals_whole_frame(cfa):
    from caisp.data.bayer import demosaic_bilinear
    from caisp.develop import _demosaic_in_strips

    mosaic = torch.rand(301 * 2, 90)
    assert torch.equal(_demosaic_in_strips(mosaic, cfa, strip=64), demosaic_bilinear(mosaic, cfa))


# ------------------------------------------------------------------ never lose a user's file

def develop_args(checkpoint: Path) -> list[str]:
    return ["--model", str(checkpoint), "--tile", "64", "--overlap", "16", "--device", "cpu"]


def stderr_lines(capfd) -> list[str]:
    return [line for line in capfd.readouterr().err.splitlines() if line.strip()]


def test_existing_output_refused_without_overwrite(tmp_path, checkpoint, capfd):
    a = write_dng(tmp_path / "a.dng", marked_image(), noise=False)
    b = write_dng(tmp_path / "b.dng", marked_image(), noise=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.jpg").write_bytes(b"the user's own picture")
    assert run_cli([str(a), str(b), "-o", str(out), *develop_args(checkpoint)]) == 1
    err = stderr_lines(capfd)
    assert len(err) == 1 and str(out / "a.jpg") in err[0] and "--overwrite" in err[0]
    assert (out / "a.jpg").read_bytes() == b"the user's own picture"
    assert (out / "b.jpg").read_bytes()[:2] == b"\xff\xd8"  # the other input went on
    # a single named file likewise
    assert run_cli([str(a), "-o", str(out / "a.jpg"), *develop_args(checkpoint)]) == 1
    assert len(stderr_lines(capfd)) == 1
    assert (out / "a.jpg").read_bytes() == b"the user's own picture"
    assert run_cli([str(a), str(b), "-o", str(out), "--overwrite", *develop_args(checkpoint)]) == 0
    assert stderr_lines(capfd) == []
    assert (out / "a.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_output_folder_must_be_writable(tmp_path, checkpoint, capfd, monkeypatch):
    src = write_dng(tmp_path / "a.dng", marked_image(), noise=False)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder is wanted\n")
    assert run_cli([str(src), "-o", str(blocker / "out"), *develop_args(checkpoint)]) == 2
    err = stderr_lines(capfd)
    assert len(err) == 1 and str(blocker / "out") in err[0] and "not a folder" in err[0]

    import tempfile

    def refuse(*args, dir=None, **kwargs):  # what an unwritable folder does (root passes chmod)
        raise PermissionError(13, "Permission denied", f"{dir}/tmpab12cd")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    developed = []
    monkeypatch.setattr("caisp.develop.develop_raw", lambda *a, **k: developed.append(a))
    out = tmp_path / "locked"
    out.mkdir()
    assert run_cli([str(src), "-o", str(out), *develop_args(checkpoint)]) == 2
    err = stderr_lines(capfd)
    assert len(err) == 1 and f"output folder {out} is not writable" in err[0]
    assert "tmpab12cd" not in err[0] and "Permission denied" in err[0]
    assert developed == []  # refused before developing anything


def test_unwritable_folder_for_real(tmp_path, checkpoint, capfd):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    src = write_dng(tmp_path / "a.dng", marked_image(), noise=False)
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert run_cli([str(src), "-o", str(out), *develop_args(checkpoint)]) == 2
    finally:
        out.chmod(0o755)
    err = stderr_lines(capfd)
    assert len(err) == 1 and str(out) in err[0] and ".part" not in err[0]


@pytest.mark.parametrize("output,fmt,n,expect", [
    ("pic.png", "jpeg", 1, "--format jpeg writes .jpg"),
    ("pic.jpg", "png16", 1, "--format png16 writes .png"),
    ("pic.tif", None, 1, "not .tif"),
    ("pic.jpg", None, 2, "names a file"),
    ("existing", None, 2, "existing file, not a folder"),
    ("existing", None, 1, "existing file, not a folder"),
])
def test_output_name_refused_clearly(tmp_path, checkpoint, capfd, output, fmt, n, expect):
    srcs = [write_dng(tmp_path / f"{i}.dng", marked_image(), noise=False) for i in range(n)]
    (tmp_path / "existing").write_bytes(b"keep me")
    argv = [*map(str, srcs), "-o", str(tmp_path / output), *develop_args(checkpoint)]
    assert run_cli(argv + (["--format", fmt] if fmt else [])) == 2
    err = stderr_lines(capfd)
    assert len(err) == 1 and output in err[0] and expect in err[0], err
    assert (tmp_path / "existing").read_bytes() == b"keep me"
    assert not list(tmp_path.glob("pic*"))


def test_format_agreeing_with_suffix_is_fine(tmp_path, checkpoint):
    src = write_dng(tmp_path / "a.dng", marked_image(), noise=False)
    assert run_cli([str(src), "-o", str(tmp_path / "pic.PNG"), "--format", "png16",
                    *develop_args(checkpoint)]) == 0
    assert png_header(tmp_path / "pic.PNG")[2] == 16


# ------------------------------------------------------------------ never a silently wrong picture

def save_isp(path: Path, fill: float | None = None, **config) -> Path:
    net = identity_net()
    if fill is not None:
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(fill)
    save_model(path, net, {**IDENTITY, **config})
    return path


def test_non_finite_weights_refused_at_load(tmp_path, capfd):
    src = write_dng(tmp_path / "a.dng", marked_image(), noise=False)
    model = save_isp(tmp_path / "diverged.pt", fill=float("nan"))
    assert run_cli([str(src), "-o", str(tmp_path / "out"), "--model", str(model)]) == 2
    err = stderr_lines(capfd)
    assert len(err) == 1 and "diverged.pt" in err[0] and "non-finite" in err[0]
    assert not (tmp_path / "out").exists()


def test_non_finite_output_is_an_error_not_a_black_picture(tmp_path, capfd):
    """Finite but absurd weights (1e30) overflow to inf and NaN inside the network."""
    src = write_dng(tmp_path / "a.dng", marked_image(), noise=False)
    model = save_isp(tmp_path / "huge.pt", fill=1e30)
    out = tmp_path / "out"
    assert run_cli([str(src), "-o", str(out), *develop_args(model)]) == 1
    err = stderr_lines(capfd)
    assert len(err) == 1 and "a.dng" in err[0] and "non-finite" in err[0]
    assert not list(out.glob("*.jpg"))


@pytest.mark.parametrize("key,value", [("cfa", "RGBW"), ("cfa", "XTRANS"), ("qf", 0), ("qf", 101),
                                       ("qf", "90"), ("input_norm", "gamma")])
def test_bad_model_config_refused_at_load(tmp_path, capfd, key, value):
    src = write_dng(tmp_path / "a.dng", marked_image(), noise=False)
    model = save_isp(tmp_path / "odd.pt", **{key: value})
    assert run_cli([str(src), "-o", str(tmp_path / "out"), "--model", str(model)]) == 2
    err = stderr_lines(capfd)
    assert len(err) == 1 and "odd.pt" in err[0] and f"{key}=" in err[0]


class MakesFolder:
    """A pickle payload: unpickling it calls os.mkdir (what a hostile .pt would do with worse)."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        import os

        return os.mkdir, (self.target,)


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickle_payload_refused_as_code(tmp_path, capfd, writer):
    import pickle

    src = write_dng(tmp_path / "a.dng", marked_image(), noise=False)
    marker, model = tmp_path / "pwned", tmp_path / "payload.pt"
    if writer == "torch":
        torch.save({"format": "caisp", "config": MakesFolder(marker)}, model)
    else:  # a plain pickle (protocol 5), not torch's zip container
        model.write_bytes(pickle.dumps(MakesFolder(marker), protocol=5))
    assert run_cli([str(src), "-o", str(tmp_path / "out"), "--model", str(model)]) == 2
    err = stderr_lines(capfd)
    assert len(err) == 1 and "payload.pt" in err[0], err
    assert "refused: not a caisp checkpoint (it would run code)" in err[0]
    assert "truncated" not in err[0]
    assert not marker.exists()


def test_develop_prints_the_bytes_it_wrote_and_offers_the_anchor_encoders(tmp_path, checkpoint, capsys):
    """Issue 22: each picture's size is printed (stdout), and --encoder writes the same picture with
    fewer bytes (jpegopt: identical pixels; mozjpeg: trellis quantisation)."""
    from PIL import Image

    src = write_dng(tmp_path / "a.dng", colour_image(128, 192), noise=True, seed=1)
    sizes, pixels = {}, {}
    for enc in ("jpeg", "jpegopt", "mozjpeg"):
        dst = tmp_path / f"{enc}.jpg"
        assert run_cli([str(src), "-o", str(dst), "--model", str(checkpoint), "--encoder", enc]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        sizes[enc] = dst.stat().st_size
        assert out == [f"{dst}: {sizes[enc]} bytes, {8 * sizes[enc] / (128 * 192):.3f} bpp"]
        pixels[enc] = np.asarray(Image.open(dst))
    assert sizes["jpegopt"] < sizes["jpeg"] and sizes["mozjpeg"] < sizes["jpeg"]
    assert np.array_equal(pixels["jpegopt"], pixels["jpeg"])
    assert run_cli([str(src), str(src), "-o", str(tmp_path / "two"), "--model", str(checkpoint)]) == 1  # same name
    two = tmp_path / "both"
    src2 = write_dng(tmp_path / "b.dng", colour_image(128, 192), noise=True, seed=2)
    capsys.readouterr()
    assert run_cli([str(src), str(src2), "-o", str(two), "--model", str(checkpoint)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"2 files, {sum(f.stat().st_size for f in two.iterdir())} bytes"


def _probes(monkeypatch, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


def test_precision_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch):
    """Issue 19: auto takes bf16 on a CPU with AVX512-BF16 or AMX (2x faster there), fp32 elsewhere
    (where oneDNN emulates bf16, 9x slower); explicit values stay; a bad value names the option."""
    from caisp import CaispError
    from caisp.develop import resolve_precision

    cpu = torch.device("cpu")
    for avx512_bf16, amx, expect in ((False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16")):
        _probes(monkeypatch, avx512_bf16, amx)
        assert resolve_precision("auto", cpu) == expect
        assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    if not torch.cuda.is_available():
        assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    # a GPU: native bf16 only, not torch's emulated kind (pre-Ampere GPUs), which would be slower
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for native in (False, True):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
        assert resolve_precision("auto", torch.device("cuda")) == ("bf16" if native else "fp32")
    with pytest.raises(CaispError, match="--precision must be one of auto, fp32, bf16, got 'fp16'"):
        resolve_precision("fp16", cpu)


def test_cli_develops_with_the_precision_auto_resolves_to(tmp_path, checkpoint, monkeypatch):
    import caisp.develop as dev

    seen = []
    real = dev.develop_raw
    monkeypatch.setattr(dev, "develop_raw", lambda *a, **k: seen.append(k["precision"]) or real(*a, **k))
    src = write_dng(tmp_path / "a.dng", colour_image(), seed=1)
    for native, argv, expect in ((False, [], "fp32"), (True, [], "bf16"), (True, ["--precision", "fp32"], "fp32")):
        _probes(monkeypatch, native, False)
        dst = tmp_path / f"{expect}-{len(argv)}.jpg"
        assert run_cli([str(src), "-o", str(dst), "--model", str(checkpoint), *argv]) == 0
        assert dst.stat().st_size > 0 and seen[-1] == expect


def test_bf16_develop_stays_within_half_a_level_of_fp32(tmp_path):
    """bf16 autocast really runs (the pictures differ) and moves no pixel by 0.5/255 or more, tiled too:
    the bound the tiling keeps (on the trained models: mean 0.02-0.04/255, at most 0.42/255)."""
    torch.manual_seed(0)
    config = {**IDENTITY, "kwargs": {"base_width": 8, "residual": False}}
    net = build("isp_net", **config["kwargs"]).eval()
    src = write_dng(tmp_path / "a.dng", colour_image(160, 224), noise=True, seed=3)
    fp32 = develop_raw(src, net, config, precision="fp32")
    for tile in (1024, 96):
        bf16 = develop_raw(src, net, config, tile=tile, overlap=16, precision="bf16")
        d = np.abs(bf16 - fp32) * 255
        assert 0 < d.max() < 0.5, (tile, d.max())
