"""Table 3 rows come from `dvc exp show --json`: workspace, baseline commit and queued experiments."""
from caisp.ablation import collect


def _run(name, lam_isp, lam_comp, psnr, bpp, qf=90, variant="unet"):
    return {"rev": name, "name": name, "data": {
        "params": {"params.yaml": {"data": {"lambda_isp": lam_isp, "lambda_comp": lam_comp, "qfs": [qf]}}},
        "metrics": {
            f"reports/eval/aware-qf{qf}-{variant}/summary.json": {"data": {
                "models": {"aware": {"psnr": psnr, "bpp": bpp}, "agnostic": {"psnr": 1.0, "bpp": 1.0}}}},
            # the unfrozen ablation and other metrics files are not Table 3 rows
            f"reports/eval/aware-unfrozen-qf{qf}-{variant}/summary.json": {"data": {
                "models": {"aware": {"psnr": 0.0, "bpp": 0.0}}}},
            "reports/data/encode_qf90.json": {"data": {"bpp_mean": 2.0}},
        }}}


def test_collect_walks_workspace_commits_and_experiments():
    exp_show = [
        {**_run("workspace", 0.1, 1, 30.0, 0.5), "experiments": None},
        {**_run("main", 0.1, 1, 30.0, 0.5), "experiments": [
            {"revs": [{**_run("exp-a", 1, 1, 29.5, 0.6), "experiments": None}], "executor": None},
            {"revs": [{**_run("exp-b", 1, 0.1, 29.0, 0.7, qf=80, variant="djs")}]},
            # still running: dvc shows the workspace's metrics under its params, which are not its own
            {"revs": [_run("exp-c", 1, 0.5, 30.0, 0.5)], "executor": {"state": "running"}},
            {"revs": [_run("exp-d", 0.5, 0.5, 30.0, 0.5)], "executor": {"state": "queued"}},
        ]},
    ]
    df = collect(exp_show)
    assert len(df) == 3  # the workspace and its base commit are one run
    rows = {(r.qf, r.variant, r.lambda_isp, r.lambda_comp): (r.psnr, r.bpp) for r in df.itertuples()}
    assert rows == {(90, "unet", 0.1, 1.0): (30.0, 0.5), (90, "unet", 1.0, 1.0): (29.5, 0.6),
                    (80, "djs", 1.0, 0.1): (29.0, 0.7)}


def test_collect_ignores_runs_without_evaluation():
    assert collect([{"rev": "x", "data": {"params": {}, "metrics": {}}}]).empty
