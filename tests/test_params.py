"""params.yaml is the single source; every bad value is refused with the key named."""
import copy

import pytest
import yaml

from caisp import CaispError
from caisp.params import Params, from_dict, load_params, to_dict
from conftest import ROOT


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_repo_params_are_valid_and_complete(raw):
    p = load_params(ROOT / "params.yaml")
    assert p.lambda_isp == 0.1 and p.lambda_comp == 1.0  # the paper's weights
    assert p.qfs == [80, 90]
    # every key of the dataclasses is spelled out in params.yaml: nothing hides in code defaults
    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and prefix + k != "regimes":  # a regime sets only what it overrides
                out |= keys(v, prefix + k + ".")
        return out
    assert keys(to_dict(Params())) == keys(raw)
    assert p.regimes == Params().regimes and list(p.regimes) == ["paper", "mid", "today"]


def test_paper_params_file_is_valid():
    p = load_params(ROOT / "params-paper.yaml")
    assert p.model.base_width == 32 and p.train.patch == 448


@pytest.mark.parametrize("key,value,message", [
    ("render.wokers", 2, "render.wokers: unknown key"),
    ("qfs", [80, 101], "qfs: quality factor 101"),
    ("qfs", [0], "qfs: quality factor 0"),
    ("evaluate.sweep_qfs", [80, 80], "evaluate.sweep_qfs: repeats"),
    ("split.ratios", [0.5, 0.5, 0.5], "split.ratios"),
    ("split.ratios", [1.2, -0.2, 0.0], "split.ratios"),
    ("split.ratios", [0.8, 0.2], "split.ratios"),
    ("train.patch", 100, "train.patch: 100 is not a multiple of 16"),
    ("train.patch", 0, "train.patch"),
    ("data.source", "flickr", "data.source: 'flickr' is not one of"),
    ("data.synthetic.cfa", "RGBG", "data.synthetic.cfa"),
    ("data.synthetic.extra_photos", "/no/such/folder", "data.synthetic.extra_photos: path"),
    ("render.workers", "two", "render.workers: must be an integer"),
    ("render.workers", 0, "render.workers: 0 is below the minimum 1"),
    ("render.on_error", "ignore", "render.on_error"),
    ("encode.subsampling", "4:1:1", "encode.subsampling"),
    ("lambda_comp", -1, "lambda_comp: -1.0 is below the minimum 0"),
    ("lambda_comp", "much", "lambda_comp: must be a number"),
    ("cas.variants", ["unet", "bpg"], "cas.variants: unknown CAS variant 'bpg'"),
    ("cas.unfrozen", ["djs"], "cas.unfrozen: 'djs' has no parameters"),
    ("model.input_norm", "gray", "model.input_norm"),
    ("isp.lr", True, "isp.lr: must be a number"),
    ("data.source", "folder", "data.folder.path: must name a folder"),
    ("seed", 2**32, "seed: 4294967296 is above the maximum 4294967295"),
    ("seed", -1, "seed: -1 is below the minimum 0"),
    ("cas.variants", [], "cas.variants: must list at least one CAS variant"),
    ("cas.variants", ["unet", "unet"], "cas.variants: repeats a CAS variant"),
    ("cas.unfrozen", ["acn"], "cas.unfrozen: 'acn' is not in cas.variants"),
    ("cas.baselines", ["unet"], "cas.baselines: 'unet' is already a fine-tuning simulator"),
    # the operating-point axis (issue 21)
    ("aware_regimes", ["mid"], "aware_regimes: 'mid' is fine-tuned but not pretrained"),
    ("isp_regimes", ["paper", "nope"], r"isp_regimes\[1\]: 'nope' is not a regime"),
    ("aware_regimes", [], "aware_regimes: must name at least one regime"),
    ("isp_regimes", ["paper", "today", "paper"], "isp_regimes: repeats a regime"),
    ("regimes.paper.steps", 0, "regimes.paper.steps: 0 is below the minimum 1"),
    ("regimes.paper.input_norm", "gray", "regimes.paper.input_norm"),
    ("regimes.paper.warmup", 3, "regimes.paper.warmup: unknown key"),
    ("regimes", {"Paper-1": {}}, "regimes.Paper-1: a name must be lower-case"),
    ("regimes", {}, "regimes: must be a non-empty mapping"),
    ("cas.unfrozen", ["unet", "unet"], "cas.unfrozen: repeats a CAS variant"),
    # the rate axis (issue 22)
    ("rate.lambdas", [0.01, 0], r"rate.lambdas\[1\]: must be > 0"),
    ("rate.lambdas", [0.01, 0.01], "rate.lambdas: repeats a value"),
    ("rate.lambdas", [-1], r"rate.lambdas\[0\]: -1.0 is below the minimum 0"),
    ("rate.anchors", ["webp"], r"rate.anchors\[0\]: 'webp' is not an encoder anchor of JPEG"),
    ("rate.anchors", ["mozjpeg", "mozjpeg"], "rate.anchors: repeats an anchor"),
    # Issue 19.6: spellings that would name files and stages DVC cannot find
    ("codec_points", ["webp-080"], "codec_points\\[0\\]: write 'webp-080' as 'webp-80'"),
    ("codec_points", ["webp-80 "], "codec_points\\[0\\]: 'webp-80 ' is not an operating point"),
])
def test_bad_values_name_the_key(raw, key, value, message):
    bad = copy.deepcopy(raw)
    node = bad
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(CaispError, match="params: " + message.replace("(", r"\(")):
        from_dict(bad)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(CaispError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "p.yaml").write_text("qfs: [80, 90\n")
    with pytest.raises(CaispError, match="not valid YAML"):
        load_params(tmp_path / "p.yaml")
    (tmp_path / "q.yaml").write_text("render: 3\n")
    with pytest.raises(CaispError, match="render: must be a mapping"):
        load_params(tmp_path / "q.yaml")
    # Issue 19.6: one line, not a traceback
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(CaispError, match="dir.yaml is a folder, not a params file"):
        load_params(tmp_path / "dir.yaml")
    (tmp_path / "latin1.yaml").write_bytes("seed: 0  # Caf\xe9\n".encode("latin-1"))
    with pytest.raises(CaispError, match="latin1.yaml is not UTF-8 text"):
        load_params(tmp_path / "latin1.yaml")


def test_params_rewritten_by_dvc_exp_run_still_load(tmp_path):
    # `dvc exp run -S` dumps params.yaml with ruamel (YAML 1.2): subsampling comes back unquoted.
    text = (ROOT / "params.yaml").read_text().replace('subsampling: "4:2:0"', "subsampling: 4:2:0")
    assert "subsampling: 4:2:0" in text
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").encode.subsampling == "4:2:0"


def test_relative_paths_resolve_against_the_params_file(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "p.yaml").write_text("data:\n  synthetic:\n    extra_photos: photos\n")
    assert load_params(tmp_path / "p.yaml").data.synthetic.extra_photos == tmp_path / "photos"


def test_params_show_refuses_what_a_stage_would_fail_on(tmp_path, raw, capsys):
    """`caisp params --show` exits 2 with one line naming the key, before any stage runs."""
    from caisp.cli import main

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**raw, "seed": 2**32 - 1}))
    assert main(["params", str(good), "--show"]) == 0
    assert "seed: 4294967295" in capsys.readouterr().out
    for key, change in (("seed", {"seed": 2**32}), ("cas.variants", {"cas": {**raw["cas"], "variants": []}}),
                        ("cas.unfrozen", {"cas": {**raw["cas"], "unfrozen": ["acn"]}})):
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({**raw, **change}))
        assert main(["params", str(bad), "--show"]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert captured.out == "" and len(err) == 1 and f"params: {key}:" in err[0]
