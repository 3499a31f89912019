"""FiveK rehearsal: the whole pipeline with params-paper.yaml at FiveK's size, on a local mirror.

    python benchmarks/fivek_rehearsal.py [--images 40] [--width 4256 --height 2848] [--steps 2]
        [--set key=value ...] [--workers N] [--workdir DIR] [--keep] [--results DIR]

A fresh clone of the repository (a copy + `git init` where the source is no git repository) gets N
synthetic Nikon D700 DNGs, served over HTTP on 127.0.0.1 with a list in FiveK's format, and a
params.yaml = params-paper.yaml with only data.fivek.list_url, the step counts and `--set` changed.
One `dvc repro` then runs; its "Running stage" lines time the stages, a thread samples the summed
RSS of its process tree (and GPU memory, with nvidia-smi), dvc.lock gives each stage's disk.
Writes <results>/fivek_rehearsal.json and .md (default benchmarks/results/).

A rehearsal longer than one sitting (a GPU machine that runs a command for at most 10 minutes) runs in
parts: `--workdir W --timeout T` stops `dvc repro` after T seconds and keeps W; `--workdir W --resume`
serves the same mirror on the same port, runs `dvc repro` again in W's clone (DVC skips the finished
stages) and writes results that add both parts' stages.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
STEP_KEYS = ("cas.steps", "cas.acn_steps", "isp.steps", "finetune.steps")
# Generated at the repository root only (caisp/data is source code), or anywhere (caches).
SKIP_ROOT = {".venv", "data", "models", "checkpoints", ".whl", ".git", "dvclive"}
SKIP = {"__pycache__", ".pytest_cache"}
RUNNING = re.compile(r"Running stage '([^']+)'")
UNCHANGED = re.compile(r"Stage '([^']+)' (didn't change|is cached)")
FAILED = re.compile(r"failed to reproduce '([^']+)'")


def make_clone(repo: Path, dest: Path, working_tree: bool = False) -> str:
    """A fresh clone of HEAD, or a committed copy of the working tree (no git repository there, or
    `working_tree`: uncommitted changes rehearsed too; DVC needs an SCM); returns the commit."""
    git = ["git", "-c", "user.name=rehearsal", "-c", "user.email=rehearsal@localhost"]
    if (repo / ".git").exists() and not working_tree:
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(repo), str(dest)], check=True)
    else:
        def ignore(folder: str, names: list[str]) -> set[str]:
            rel = Path(folder).relative_to(repo)
            return {n for n in names if n in SKIP or n.endswith(".egg-info") or (rel == Path(".") and n in SKIP_ROOT)
                    or (rel == Path(".dvc") and n in ("cache", "tmp"))}
        shutil.copytree(repo, dest, ignore=ignore)
        subprocess.run(["git", "init", "-q", str(dest)], check=True)
        subprocess.run(git + ["-C", str(dest), "add", "-A"], check=True)
        subprocess.run(git + ["-C", str(dest), "commit", "-qm", "rehearsal copy"], check=True)
    return subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def _synth_one(job: tuple) -> dict:
    """Resize one photo to exactly the sensor size (landscape, as FiveK's D700 files are stored) and
    unprocess it into a DNG; returns its list entry."""
    import numpy as np
    from PIL import Image

    from caisp.data.synthetic import write_dng

    path, rgb, width, height, seed = job
    if rgb.shape[0] > rgb.shape[1]:
        rgb = np.rot90(rgb)
    rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((width, height), Image.Resampling.LANCZOS))
    write_dng(path, rgb, seed=seed, noise=True, camera="Nikon D700", blur=2.0, scale=1.0)
    data = Path(path).read_bytes()
    return {"name": Path(path).name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def synthesize(out: Path, n: int, width: int, height: int, workers: int) -> list[dict]:
    """N DNGs named like FiveK (aXXXX-name.dng) from the photos caisp ships, cycled with new seeds."""
    from caisp.data.synthetic import image_seed, load_photos

    photos = load_photos()
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for i in range(n):
        name, _, rgb = photos[i % len(photos)]
        jobs.append((out / f"a{i + 1:04d}-{name}.dng", rgb, width, height, image_seed(i, name)))
    with ProcessPoolExecutor(max_workers=max(1, min(workers, n))) as pool:
        return list(pool.map(_synth_one, jobs))


def serve(folder: Path, port: int = 0) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A quiet static file server on 127.0.0.1 (a free port unless `port`), in a daemon thread."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def write_list(path: Path, base_url: str, files: list[dict]) -> None:
    """FiveK's list format: one URL a line, here with its sha256 after it."""
    path.write_text("".join(f"{base_url}/{f['name']} {f['sha256']}\n" for f in files))


def write_params(src: Path, dst: Path, list_url: str, steps: int, overrides: list[str]) -> dict:
    """dst = src with only the list URL, the step counts and `overrides` changed; returns the changes."""
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments and layout of params-paper.yaml stay
    doc = yaml.load(src.read_text())
    changes: dict = {"data.fivek.list_url": list_url, **{k: steps for k in STEP_KEYS}}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        changes[key] = YAML(typ="safe", pure=True).load(value)  # "2" -> 2, "[0]" -> [0], "null" -> None
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = doc
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise SystemExit(f"--set {key}: {src.name} has no section {part!r}")
            node = node[part]
        node[leaf] = value  # a new leaf is allowed (a key the paper file leaves at its default); see check_params
    with open(dst, "w") as f:
        yaml.dump(doc, f)
    return changes


def pythonpath(clone: Path) -> str:
    """The clone first, then any PYTHONPATH already set (packages installed with pip --target)."""
    return os.pathsep.join(filter(None, [str(clone), os.environ.get("PYTHONPATH")]))


def check_params(clone: Path) -> None:
    """Refuse params that the clone's caisp refuses (a typo in --set), before minutes of synthesis."""
    code = "from caisp.params import load_params; load_params('params.yaml')"
    res = subprocess.run([sys.executable, "-c", code], cwd=clone, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": pythonpath(clone)})
    if res.returncode:
        raise SystemExit(f"params.yaml of the rehearsal is invalid:\n{res.stderr.strip().splitlines()[-1]}")


class StageClock:
    """Stage wall times from dvc repro's output: each "Running stage" line ends the previous stage."""

    def __init__(self, t0: float) -> None:
        self.t0, self.stages, self.current, self.failed, self.stopped = t0, [], None, None, False

    def feed(self, line: str, now: float) -> None:
        if m := RUNNING.search(line):
            self._close(now)
            self.current = {"name": m.group(1), "start_s": now - self.t0, "status": "ran"}
        elif m := UNCHANGED.search(line):
            # unchanged, or restored from DVC's run cache: its (short) time goes to the running stage
            status = "skipped" if m.group(2).startswith("didn") else "run cache"
            self.stages.append({"name": m.group(1), "start_s": now - self.t0, "wall_s": 0.0, "status": status})
        elif m := FAILED.search(line):
            self.failed = m.group(1)

    def finish(self, now: float, rc: int) -> list[dict]:
        if rc and self.failed is None and self.current:
            self.failed = self.current["name"]
        self._close(now)
        self.stages.sort(key=lambda s: s["start_s"])  # a stage is appended when it ends
        for s in self.stages:
            if s["name"] == self.failed:
                s["status"] = "stopped" if self.stopped else "failed"
        return self.stages

    def _close(self, now: float) -> None:
        if self.current:
            self.current["wall_s"] = now - self.t0 - self.current["start_s"]
            self.stages.append(self.current)
            self.current = None


class Monitor(threading.Thread):
    """Samples the process tree under `pid` every 0.2 s (GPU memory every 1 s), peak per stage: summed
    RSS, and summed PSS, which counts pages that DataLoader workers share with their parent only once."""

    def __init__(self, pid: int, clock: StageClock) -> None:
        super().__init__(daemon=True)
        self.pid, self.clock, self.stop = pid, clock, threading.Event()
        self.rss: dict[str, int] = {}
        self.pss: dict[str, int] = {}
        self.gpu: dict[str, int] = {}
        self.smi = shutil.which("nvidia-smi")

    def run(self) -> None:
        import psutil

        root, last_gpu = psutil.Process(self.pid), 0.0
        while not self.stop.wait(0.2):
            stage = (self.clock.current or {}).get("name", "(dvc)")
            rss = pss = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for p in procs:
                try:
                    mem = p.memory_full_info()
                    rss, pss = rss + mem.rss, pss + getattr(mem, "pss", mem.rss)
                except psutil.Error:
                    pass  # exited between listing and sampling
            for key in (stage, "overall"):
                self.rss[key] = max(self.rss.get(key, 0), rss)
                self.pss[key] = max(self.pss.get(key, 0), pss)
            if self.smi and time.monotonic() - last_gpu >= 1:
                last_gpu = time.monotonic()
                out = subprocess.run([self.smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True).stdout.split()
                used = sum(int(x) for x in out if x.isdigit()) * 2**20
                for key in (stage, "overall"):
                    self.gpu[key] = max(self.gpu.get(key, 0), used)


def lock_disk(lock: Path) -> dict[str, int]:
    """Bytes of every stage's outs, from dvc.lock (entries without `size` count 0)."""
    from ruamel.yaml import YAML

    stages = (YAML(typ="safe", pure=True).load(lock.read_text()) or {}).get("stages", {})
    return {name: sum(int(o.get("size", 0)) for o in st.get("outs", [])) for name, st in stages.items()}


def du(path: Path) -> int:
    """Allocated bytes under `path`, every inode once (DVC may hard-link cache and workspace)."""
    seen, total = set(), 0
    for folder, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(folder, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def kind(stage: str) -> str:
    base = stage.split("@")[0]
    return base.split("_")[0] + "*" if base.startswith(("finetune", "evaluate")) else base


def machine() -> dict:
    """CPU, RAM, torch and GPU, the GPU queried in a child so that this process holds no CUDA context."""
    import psutil

    code = ("import json, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
            "'gpu': torch.cuda.get_device_name() if c else None, 'cuda': torch.version.cuda}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    info = json.loads(res.stdout) if res.returncode == 0 else {"torch": None, "gpu": None}
    return {"cpus": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": sys.version.split()[0], **info}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=ROOT)
    ap.add_argument("--working-tree", action="store_true", help="copy the working tree instead of cloning HEAD")
    ap.add_argument("--images", type=int, default=40,
                    help="DNGs (40: 32 training images; a CAS batch of 64 needs 64 //n * n >= 64)")
    ap.add_argument("--width", type=int, default=4256)
    ap.add_argument("--height", type=int, default=2848)
    ap.add_argument("--steps", type=int, default=2, help="sets " + ", ".join(STEP_KEYS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more params overrides")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--commit", default=None,
                    help="the commit the copied working tree was taken from, recorded in the results (a copy "
                         "without .git, e.g. on another machine, knows only its own rehearsal commit)")
    ap.add_argument("--timeout", type=float, default=None, help="stop dvc repro after this many seconds")
    ap.add_argument("--resume", action="store_true",
                    help="continue the stopped rehearsal in --workdir (same clone, mirror and URL)")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--train-step", type=Path, default=ROOT / "benchmarks" / "results" / "train_step.json",
                    help="bench_train_step.py's results, for the extrapolation to 487 raws (if present)")
    args = ap.parse_args(argv)
    if args.resume and args.workdir is None:
        raise SystemExit("--resume needs the --workdir of the stopped rehearsal")
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="fivek_rehearsal_"))).resolve()
    clone, mirror, state = work / "clone", work / "mirror", work / "rehearsal.json"
    work.mkdir(parents=True, exist_ok=True)
    rc, prev = 1, None
    try:
        if args.resume:
            if not state.is_file():
                raise SystemExit(f"--resume: {state} not found: no rehearsal was stopped in {work}")
            prev = json.loads(state.read_text())
            if prev["returncode"] == 0:
                raise SystemExit(f"--resume: the rehearsal in {work} already finished")
            server, base = serve(mirror, int(prev["base_url"].rsplit(":", 1)[1]))  # params hold the URL
            info = {k: prev[k] for k in ("commit", "working_tree", "synthesis_s", "settings")}
        else:
            for old in (clone, mirror, state, work / "repro.log"):  # an earlier rehearsal's --workdir: start afresh
                if old.is_dir():
                    shutil.rmtree(old)
                else:
                    old.unlink(missing_ok=True)
            commit = make_clone(args.repo.resolve(), clone, args.working_tree)
            mirror.mkdir()
            server, base = serve(mirror)
            changes = write_params(clone / "params-paper.yaml", clone / "params.yaml", f"{base}/NIKON_D700.txt",
                                   args.steps, args.set)
            check_params(clone)
            t = time.perf_counter()
            files = synthesize(mirror, args.images, args.width, args.height, args.workers)
            synth_s = time.perf_counter() - t
            print(f"{len(files)} DNGs of {args.width}x{args.height} in {synth_s:.0f} s", flush=True)
            write_list(mirror / "NIKON_D700.txt", base, files)
            info = {"commit": args.commit or commit, "working_tree": args.working_tree, "synthesis_s": synth_s,
                    "settings": {"images": args.images, "width": args.width, "height": args.height,
                                 "steps": args.steps, "params": changes}}
        rc, total_s, clock, monitor = repro(clone, work, args.timeout)
        server.shutdown()
        result = collect(clone, clock, monitor, rc, prev)
        result.update(info, base_url=base, repro_s=total_s + (prev["repro_s"] if prev else 0.0),
                      parts=(prev.get("parts", 1) if prev else 0) + 1,
                      workdir=str(work) if args.keep or rc else None, report=str(clone / "reports" / "report.md"))
        state.write_text(json.dumps(result, indent=1, default=str) + "\n")
        result["extrapolation"] = extrapolate(result, clone / "params.yaml", clone / "params-paper.yaml", args.train_step)
        write_results(result, args.results)
        if rc:  # the log goes beside the results; the work folder stays for a look at the clone
            shutil.copy(work / "repro.log", args.results / "fivek_rehearsal.log")
            print(f"dvc repro failed (exit {rc}) in stage {clock.failed}; work folder: {work}", file=sys.stderr)
        return 1 if rc else 0
    finally:
        if not args.keep and rc == 0:
            shutil.rmtree(work, ignore_errors=True)


def collect(clone: Path, clock: StageClock, monitor: Monitor, rc: int, prev: dict | None = None) -> dict:
    """The measurements: one row per stage (wall, memory peaks, disk of its outs), sums, totals;
    with `prev` (the results of the stopped part), its finished stages first, then this part's."""
    disk = lock_disk(clone / "dvc.lock") if (clone / "dvc.lock").is_file() else {}
    for st in clock.stages:
        st.update(peak_rss_mib=monitor.rss.get(st["name"], 0) / 2**20,
                  peak_pss_mib=monitor.pss.get(st["name"], 0) / 2**20)
        if monitor.smi:
            st["peak_gpu_mib"] = monitor.gpu.get(st["name"], 0) / 2**20
    stages = merge_parts(prev["stages"], prev["repro_s"], clock.stages) if prev else clock.stages
    kinds: dict[str, float] = {}
    for st in stages:
        # a stage that failed or was stopped has the clone's committed dvc.lock entry, not this run's
        size = disk.get(st["name"]) if st["status"] in ("ran", "skipped", "run cache") else None
        st["disk_mib"] = size and size / 2**20
        kinds[kind(st["name"])] = kinds.get(kind(st["name"]), 0.0) + st["wall_s"]

    def peak(key: str, now: float | None) -> float | None:
        both = [v for v in (now, prev and prev[key]) if v is not None]
        return max(both) if both else None
    split = clone / "data" / "split.json"
    return {"date": str(datetime.date.today()), "machine": machine(), "returncode": rc,
            "failed_stage": clock.failed, "stopped": clock.stopped,
            "split": {k: len(v) for k, v in json.loads(split.read_text()).items() if k in ("train", "val", "test")}
            if split.is_file() else None,
            "stage_sum_s": sum(st["wall_s"] for st in stages),
            "peak_rss_mib": peak("peak_rss_mib", monitor.rss.get("overall", 0) / 2**20),
            "peak_pss_mib": peak("peak_pss_mib", monitor.pss.get("overall", 0) / 2**20),
            "peak_gpu_mib": peak("peak_gpu_mib", monitor.gpu["overall"] / 2**20 if monitor.gpu else None),
            "stages": stages, "kinds_s": kinds,
            "disk_mib": {d: du(clone / d) / 2**20 for d in ("data", "models", ".dvc/cache")}}


def merge_parts(before: list[dict], offset: float, now: list[dict]) -> list[dict]:
    """The stages of a resumed rehearsal: those the stopped part finished, then this part's, except
    its skips of stages the first part ran; this part's start times follow the first part's."""
    done = [st for st in before if st["status"] in ("ran", "run cache")]
    names = {st["name"] for st in done}
    return done + [{**st, "start_s": st["start_s"] + offset} for st in now
                   if not (st["status"] == "skipped" and st["name"] in names)]


def repro(clone: Path, work: Path, timeout: float | None) -> tuple[int, float, StageClock, Monitor]:
    """One `dvc repro` in `clone`, its output teed to work/repro.log, timed and sampled."""
    # `python` in the stages' commands must be this interpreter, whatever the machine calls its own.
    # A script, not a symlink: a symlinked venv python would not find its venv's pyvenv.cfg.
    shim = work / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (shim / "python").chmod(0o755)
    no_proxy = ",".join(filter(None, [os.environ.get("no_proxy"), "127.0.0.1", "localhost"]))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": pythonpath(clone), "no_proxy": no_proxy, "NO_PROXY": no_proxy, "DVC_NO_ANALYTICS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=clone, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    clock = StageClock(t0)
    monitor = Monitor(proc.pid, clock)
    monitor.start()

    def stop(*_) -> None:
        """--timeout or SIGTERM (a machine's time limit): end dvc and its stages, keep what was measured."""
        import psutil

        clock.stopped = True
        try:
            tree = psutil.Process(proc.pid)
            for p in [*tree.children(recursive=True), tree]:
                p.terminate()
        except psutil.Error:
            pass
    signal.signal(signal.SIGTERM, stop)
    timer = threading.Timer(timeout, stop) if timeout else None
    if timer:
        timer.start()
    with open(work / "repro.log", "a") as log:  # a resumed rehearsal's parts follow each other
        for line in proc.stdout:
            clock.feed(line, time.perf_counter())
            sys.stdout.write(line)
            log.write(line)
    rc = proc.wait()
    end = time.perf_counter()
    if timer:
        timer.cancel()
    monitor.stop.set()
    monitor.join()
    clock.finish(end, rc)
    return rc, end - t0, clock, monitor


def matrix_factor(stage: str, paper: dict, rehearsal: dict) -> float:
    """How many times params-paper.yaml's graph does `stage`'s work, for a rehearsal with fewer QFs or
    seeds: stages templated by a QF repeat per QF; fine-tuning and evaluation loop over the seeds."""
    base, _, item = stage.partition("@")
    factor = 1.0
    if item and item.split("-")[0].isdigit():
        factor *= len(paper["qfs"]) / len(rehearsal["qfs"])
    if base.startswith(("finetune", "evaluate")):
        factor *= len(paper["seeds"]) / len(rehearsal["seeds"])
    return factor


def extrapolate(r: dict, params: Path, paper_params: Path, train_step: Path) -> dict | None:
    """A rough time for 487 raws: the paper's training compute (params-paper.yaml's whole graph) at
    train_step.json's rates + every stage's rehearsal wall time x 487 / images x matrix_factor (data,
    evaluation and validation scale with the images; a stage's fixed start-up cost makes it an upper bound)."""
    if not train_step.is_file() or r["returncode"]:
        return None
    from ruamel.yaml import YAML

    from bench_train_step import load_results, paper_schedule, training_time

    load = YAML(typ="safe", pure=True).load
    p, paper = load(params.read_text()), load(paper_params.read_text())
    schedule = paper_schedule(390, len(paper["qfs"]), len(paper["seeds"]), tuple(paper["cas"]["variants"]),
                              tuple(paper["cas"]["unfrozen"]))
    ts = load_results(train_step)
    train = training_time(ts["flops_per_crop"], ts["rate"], schedule)
    other = sum(st["wall_s"] * matrix_factor(st["name"], paper, p) for st in r["stages"]) * 487 / r["settings"]["images"]
    return {"rates_from": ts["device"], "training_compute_s": train["total_s"], "other_scaled_s": other,
            "total_s": train["total_s"] + other}


def write_results(r: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fivek_rehearsal.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
    m, s = r["machine"], r["settings"]
    gpu = "peak_gpu_mib" in (r["stages"][0] if r["stages"] else {})
    lines = ["# FiveK rehearsal: `dvc repro` of params-paper.yaml on a local mirror", "",
             f"Written by `benchmarks/fivek_rehearsal.py` on {r['date']} (commit {r['commit'][:10]}): "
             f"{s['images']} synthetic Nikon D700 DNGs of {s['width']}x{s['height']}"
             + (f" (split {r['split']})" if r["split"] else "") + ", "
             f"steps {s['steps']}; "
             f"params changed: " + ", ".join(f"`{k}={v}`" for k, v in s["params"].items() if k != "data.fivek.list_url")
             + ".", "",
             f"Machine: {m['cpus']} CPUs, {m['ram_gib']} GiB RAM, GPU {m.get('gpu') or 'none'}, torch {m.get('torch')}, "
             f"Python {m['python']}. DNG synthesis (not in the pipeline) {r['synthesis_s']:.0f} s.", "",
             "Memory: peaks of the process tree under `dvc repro`, summed RSS (shared pages counted once per "
             "process) and summed PSS (counted once); GPU: nvidia-smi's memory.used of the device.", "",
             "| stage | status | wall s | peak RSS MiB | peak PSS MiB | " + ("peak GPU MiB | " if gpu else "")
             + "outs MiB (dvc.lock) |", "| --- | --- | ---: | ---: | ---: | " + ("---: | " if gpu else "") + "---: |"]
    for st in r["stages"]:
        lines.append(f"| {st['name']} | {st['status']} | {st['wall_s']:.1f} | {st['peak_rss_mib']:.0f} | "
                     f"{st['peak_pss_mib']:.0f} | "
                     + (f"{st['peak_gpu_mib']:.0f} | " if gpu else "") + (f"{st['disk_mib']:.1f} |" if st["disk_mib"] is not None else "- |"))
    lines += ["", f"`dvc repro` {r['repro_s']:.0f} s wall"
              + (f" in {r['parts']} parts (`--resume`)" if r.get("parts", 1) > 1 else "")
              + f" (stages {r['stage_sum_s']:.0f} s), exit {r['returncode']}"
              + (f", {'stopped' if r['stopped'] else 'failed'} in `{r['failed_stage']}`" if r["returncode"] else "")
              + f"; peak of the tree: RSS {r['peak_rss_mib']:.0f} MiB, PSS {r['peak_pss_mib']:.0f} MiB"
              + (f", GPU {r['peak_gpu_mib']:.0f} MiB" if r["peak_gpu_mib"] is not None else "") + ".", "",
              "By kind: " + ", ".join(f"{k} {v:.0f} s" for k, v in r["kinds_s"].items()) + ".", "",
              "Disk: " + ", ".join(f"{d} {v:.0f} MiB" for d, v in r["disk_mib"].items())
              + " (DVC's cache holds a copy of every cached output unless it can link).", ""]
    if x := r.get("extrapolation"):
        lines += [f"Rough time for 487 raws: {x['total_s'] / 3600:.1f} h = training compute at the rates of "
                  f"{x['rates_from']} {x['training_compute_s'] / 3600:.1f} h (benchmarks/results/train_step.md) + "
                  f"every stage's rehearsal time x 487 / {s['images']} (x the paper graph's QFs and seeds where the "
                  f"rehearsal ran fewer) {x['other_scaled_s'] / 3600:.1f} h, an upper bound: a stage's start-up "
                  "does not grow with the images.", ""]
    (folder / "fivek_rehearsal.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
