"""Dataset-generation benchmark: one plan of many short synthetic videos at two sizes, side by side in one run.

``dflray.dataset.pipeline.run_generate`` runs the same plan over N_small and N (default 200 and 1,000) short
clips animated from the built-in sample's two portraits (unlabelled, so identity clustering runs), each
run in its own process with its own local Ray cluster. Printed:

1. Total time and every stage's seconds, share of the total and seconds per real video, for both sizes,
   and the marginal cost per video between them, (T_N - T_small) / (N - N_small), which separates a
   stage's fixed start-up (actor pools, Ray Train, model loads) from its per-video work.
2. Scheduling overhead per task of the actor-pool stages (merge, quality, perturb): the stage's wall time
   less the work its actors did divided by how many ran at once, with the work timed around every task
   inside the actors themselves.
3. Peak memory of the driver process (the one that calls ``run_generate``) in both runs, and its ratio:
   it must not grow with the number of videos.
4. The planning stage alone (identities, splits, pairing) at ``--plan-only`` videos (default 100,000;
   synthetic descriptors around a few thousand people, ``bench/plan_scale.py``), its time and the peak
   memory of its process: where the driver's per-video work goes when videos reach the hundred thousands.

This is a benchmark, not a test: nothing is asserted. Run ``python bench/generate.py --help``; see
bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import glob
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import ray  # noqa: E402
from extract import Monitor, run_in_workdir, say, table  # noqa: E402  (bench/extract.py)

RAY_CPUS = 2
# Ray's own processes, always alive while the cluster runs (left out of the "alive" line)
RAY_OWN = ("DashboardAgent", "RuntimeEnvAgent", "_StatsActor", "_AutoscalingCoordinatorActor", "ActorLocationTracker")
STAGES = ("extract", "plan", "train", "merge", "quality", "perturb", "index")
POOL_STAGES = (("merge", "_MergeWorker", "fakes"), ("quality", "_QualityWorker", "fakes"),
               ("perturb", "_PublishWorker", "published videos"))

# The plan besides the videos: tiny models, short merges and encodes (see bench/README.md).
PLAN = ["dataset_id=bench-generate", "seed=0", "splits={train: 1.0, val: 0.0, test: 0.0}",
        "pairing.fakes_per_video=1", "extract.align.size=128",
        "models.per=source", "models.concurrency=2", "models.train.model.resolution=64",
        "models.train.model.ae_dims=64", "models.train.model.e_dims=16", "models.train.model.d_dims=16",
        "models.train.model.d_mask_dims=8", "models.train.batch_size=4", "models.train.preview_every=0",
        "models.train.log_every=5", "models.train.cpus_per_worker=0.5", "models.train.augment_cpus=0.5",
        "perturb.compression=[c23]", "perturb.preset=ultrafast", "perturb.fraction=0.5",
        "quality.sample_frames=2"]


# ------------------------------------------------------------------------------------------------
# inputs


def make_clips(out_dir: str, n: int, frames: int, size: int, fps: int = 25) -> list[str]:
    """``n`` short clips, alternating the sample's two portraits, each with its own camera move (seed).

    Clips already in ``out_dir`` are kept; clip ``i`` is the same for every ``n``.
    """
    from dflray.io.video import VideoWriter
    from dflray.sample import _PORTRAITS, animate, load_portrait

    os.makedirs(out_dir, exist_ok=True)
    stills = {p.name: load_portrait(p.name) for p in _PORTRAITS}
    uris = []
    for i in range(n):
        p = _PORTRAITS[i % len(_PORTRAITS)]
        uri = os.path.join(out_dir, f"{p.name}_{i:04d}.mp4")
        if not os.path.exists(uri):
            tmp = uri + ".tmp.mp4"
            with VideoWriter(tmp, fps=fps, size=(size, size)) as w:
                for frame in animate(stills[p.name], p.face_center, p.face_size, frames, size=size, seed=1000 + i):
                    w.write(frame)
            os.replace(tmp, uri)
        uris.append(uri)
    return uris


# ------------------------------------------------------------------------------------------------
# the child: one run_generate in its own process


def _task_timer(times_dir: str):
    """A Ray worker setup hook that times every call of the dataset stage actors (``TaskActor.__call__``).

    It patches ``dflray.dataset.stages.base`` only when a worker imports it (an import hook), so workers that
    never run a stage actor (extraction, training) do not pay for the import. One JSON line per call:
    actor class, pid, start and end (``time.time()``), tasks in the call.
    """

    def hook() -> None:
        import importlib.abc
        import importlib.machinery
        import json as _json
        import os as _os
        import sys as _sys
        import time as _time

        name = "dflray.dataset.stages.base"

        def patch(mod) -> None:
            orig = mod.TaskActor.__call__
            if getattr(orig, "_bench_timed", False):
                return
            path = _os.path.join(times_dir, f"{_os.getpid()}.jsonl")

            def timed(self, batch):
                t0 = _time.time()
                try:
                    return orig(self, batch)
                finally:
                    t1 = _time.time()
                    # Ray Data wraps the stage class in a subclass of its own: name the dflray class
                    cls = next((c.__name__ for c in type(self).__mro__ if c.__module__.startswith("dflray.dataset.")),
                               type(self).__name__)
                    with open(path, "a") as f:
                        f.write(_json.dumps({"cls": cls, "pid": _os.getpid(), "start": t0,
                                             "end": t1, "tasks": len(batch["task"])}) + "\n")

            timed._bench_timed = True
            mod.TaskActor.__call__ = timed

        if name in _sys.modules:
            patch(_sys.modules[name])
            return

        class Finder(importlib.abc.MetaPathFinder):
            def find_spec(self, fullname, path, target=None):
                if fullname != name:
                    return None
                spec = importlib.machinery.PathFinder.find_spec(fullname, path)
                if spec is None or spec.loader is None:
                    return spec
                run = spec.loader.exec_module

                def exec_module(module):
                    run(module)
                    patch(module)

                spec.loader.exec_module = exec_module
                return spec

        _sys.meta_path.insert(0, Finder())

    return hook


def ray_processes() -> dict[int, tuple[str, float]]:
    """pid → (actor or task name, CPU seconds so far) of this process's busy Ray workers (idle ones left out)."""
    out = {}
    for c in psutil.Process().children(recursive=True):
        try:
            title = " ".join(c.cmdline())
            if not title.startswith("ray::") or title.startswith("ray::IDLE"):
                continue
            t = c.cpu_times()
        except psutil.Error:
            continue
        out[c.pid] = (title.split()[0].removeprefix("ray::").split(".")[0], t.user + t.system)
    return out


def _held_rss() -> int:
    """The driver's RSS once garbage is collected and glibc has handed its free pages back (``malloc_trim``):
    what the driver holds, without the high-water marks of work that has passed."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figure then includes free pages malloc keeps
        pass
    return psutil.Process().memory_info().rss


class _StageClock(logging.Handler):
    """Records when each stage ends, from run_generate's ``stage NAME: S s`` log lines (time.time()),
    which Ray workers are busy then, and what the driver holds then (``_held_rss``; the log line is
    written in the driver's thread that runs the stages, so the stage's work is over)."""

    def __init__(self, label: str):
        super().__init__(logging.INFO)
        self.label = label
        self.ends: dict[str, float] = {}
        self.procs: dict[str, dict[int, tuple[str, float]]] = {}
        self.held: dict[str, int] = {}
        self.arrow: dict[str, int] = {}  # bytes Arrow's memory pool has allocated and not freed: live tables

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "stage %s: %.1f s":
            name, secs = record.args
            self.ends[name] = record.created
            self.procs[name] = ray_processes()
            self.held[name] = _held_rss()
            self.arrow[name] = pa.total_allocated_bytes()
            say(f"    [{self.label}] stage {name}: {secs:.1f} s")


class _RssSampler:
    """Samples this process's RSS every ``interval`` s in a thread: (time.time(), rss bytes)."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.samples = interval, []
        self._me, self._stop = psutil.Process(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self._me.memory_info().rss))
            self._stop.wait(self.interval)

    def __enter__(self) -> "_RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), self._me.memory_info().rss))

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((r for t, r in self.samples if start <= t <= end), default=0)


def child(args) -> None:
    """Runs the plan over the first ``args.n`` clips into ``args.out``; writes the figures to ``args.result``."""
    import pyarrow.parquet as pq

    from dflray.config import GenerateConfig, load_config
    from dflray.dataset.pipeline import run_generate

    label = f"N={args.n}"
    if args.window_chunks:
        import dflray.extract.pipeline as extract_pipeline

        extract_pipeline.WINDOW_CHUNKS = args.window_chunks
    if args.tasks_per_actor:
        import dflray.dataset.stages.base as stages_base

        stages_base.TASKS_PER_ACTOR = args.tasks_per_actor
    clips = sorted(glob.glob(os.path.join(args.clips, "*_[0-9][0-9][0-9][0-9].mp4")),
                   key=lambda u: int(u.rsplit("_", 1)[1].split(".")[0]))[: args.n]
    manifest = os.path.join(os.path.dirname(args.result), f"manifest-{args.n}.txt")
    with open(manifest, "w") as f:
        f.write("\n".join(clips) + "\n")
    cfg = load_config(GenerateConfig, overrides=[f"manifest={manifest}", f"models.train.steps={args.steps}",
                                                 f"models.train.checkpoint_every={args.steps}", *PLAN, *args.set])
    times_dir = os.path.join(os.path.dirname(args.result), f"task-times-{args.n}")
    os.makedirs(times_dir, exist_ok=True)

    # The driver's malloc-arena cap, set before ray.init makes the driver's threads (arenas made before
    # stay), as dflray.runtime.init_ray sets it in a job's driver: here ray.init comes first, so
    # run_generate's own call would come too late.
    from dflray.runtime import limit_malloc_arenas

    limit_malloc_arenas()
    # address="local": a new cluster of our own even when a `ray start` cluster runs on this machine
    ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False,
             configure_logging=False, runtime_env={"worker_process_setup_hook": _task_timer(times_dir)})
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    clock = _StageClock(label)
    glog = logging.getLogger("dflray.generate")
    glog.setLevel(logging.INFO)
    glog.addHandler(clock)
    glog.propagate = False
    for name in ("dflray.extract", "dflray.train", "dflray.merge"):
        logging.getLogger(name).setLevel(logging.WARNING)

    rss_before = psutil.Process().memory_info().rss
    held_before = _held_rss()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with _RssSampler() as rss:
        t_start = time.time()
        summary = run_generate(cfg, args.out, report=False)
        t_end = time.time()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    res = {"n": args.n, "videos": summary.videos, "identities": summary.identities,
           "fakes_planned": summary.fakes_planned, "models": summary.models, "models_failed": summary.models_failed,
           "merged": summary.merged, "published": summary.published, "failures": summary.failures[:10],
           "n_failures": len(summary.failures), "seconds": summary.seconds, "stage_seconds": summary.stage_seconds,
           "rss_before": rss_before, "maxrss_before": maxrss_before, "maxrss": maxrss,
           "rss_peak": rss.peak(t_start, t_end), "rss_stage": {}, "pool": {}, "held_before": held_before,
           "held_stage": clock.held, "arrow_stage": clock.arrow}
    windows = {s: (clock.ends[s] - summary.stage_seconds[s], clock.ends[s]) for s in clock.ends}
    for s, (a, b) in windows.items():
        res["rss_stage"][s] = rss.peak(a, b)

    # the actors' own time per task, from the setup hook's records
    calls = []
    for path in glob.glob(os.path.join(times_dir, "*.jsonl")):
        with open(path) as f:
            calls += [json.loads(line) for line in f if line.strip()]
    for stage, cls, _ in POOL_STAGES:
        mine = [c for c in calls if c["cls"] == cls]
        if not mine or stage not in windows:
            continue
        a, b = windows[stage]
        res["pool"][stage] = {"tasks": sum(c["tasks"] for c in mine), "actors": len({c["pid"] for c in mine}),
                              "work": sum(c["end"] - c["start"] for c in mine),
                              "first_start": min(c["start"] for c in mine) - a,
                              "tail": b - max(c["end"] for c in mine), "wall": b - a}
    recs = os.path.join(args.out.rstrip("/") + ".work", "fakes", "records")
    if os.path.isdir(recs):
        t = pq.read_table(recs, columns=["seconds", "status"]).to_pylist()
        res["merge_record_seconds"] = sum(r["seconds"] or 0.0 for r in t if r["status"] == "ok")
    res["model_seconds"] = []
    for path in glob.glob(os.path.join(args.out.rstrip("/") + ".work", "models", "*", "model.json")):
        with open(path) as f:
            res["model_seconds"].append(json.load(f).get("seconds", 0.0))
    # Ray workers still busy when run_generate returns, and the CPU they used after the training stage
    end = ray_processes()
    after = clock.procs.get("train", {})
    left: dict[str, list[float]] = {}
    for pid, (kind, cpu) in end.items():
        n, c0, c1 = left.get(kind, [0, 0.0, 0.0])
        left[kind] = [n + 1, c0 + cpu, c1 + cpu - after.get(pid, (kind, 0.0))[1]]
    res["left_alive"] = left
    ray.shutdown()

    if args.report:
        from dflray.dataset.report import build_report

        with _RssSampler() as rss2:
            t = time.perf_counter()
            build_report(args.out, os.path.join(args.out, "report.html"))
            res["report_seconds"] = time.perf_counter() - t
        res["report_rss_peak"] = rss2.peak()
        res["maxrss_with_report"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        say(f"    [{label}] report (measured apart): {res['report_seconds']:.1f} s")
    with open(args.result, "w") as f:
        json.dump(res, f)


# ------------------------------------------------------------------------------------------------
# the parent: clips, two child runs, the tables


def run_child(n: int, clips_dir: str, work: str, args) -> tuple[dict, Monitor, float]:
    out = os.path.join(work, f"ds-{n}")
    result = os.path.join(work, f"result-{n}.json")
    log_path = os.path.join(work, f"child-{n}.log")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--n", str(n), "--clips", clips_dir, "--out", out,
           "--result", result, "--steps", str(args.steps), *(["--report"] if not args.skip_report else []),
           *(["--window-chunks", str(args.window_chunks)] if args.window_chunks else []),
           *(["--tasks-per-actor", str(args.tasks_per_actor)] if args.tasks_per_actor else [])]
    for s in args.set:
        cmd += ["--set", s]
    say(f"\n  run N={n}: {n} clips → {out}")
    t = time.perf_counter()
    with open(log_path, "w") as log_file, Monitor(interval=1.0) as mon:
        # stdout (progress lines) passes through; Ray's and the libraries' stderr goes to a log file
        env = {**os.environ, **({"MALLOC_ARENA_MAX": str(args.arena_max)} if args.arena_max else {})}
        rc = subprocess.call(cmd, stderr=log_file, env=env)
    secs = time.perf_counter() - t
    if rc != 0 or not os.path.exists(result):
        with open(log_path) as f:
            tail = f.read()[-6000:]
        raise RuntimeError(f"the N={n} run failed (exit code {rc}); its stderr ends with:\n{tail}")
    with open(result) as f:
        res = json.load(f)
    say(f"    [N={n}] {mon.load()}; process wall time {secs:.0f} s")
    if args.keep:
        say(f"    kept: {out}")
    else:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    return res, mon, secs


def mib(b: float) -> str:
    return f"{b / 2**20:.0f}"


def report_runs(small: dict, big: dict) -> None:
    ns, nb = small["n"], big["n"]
    say("\n[0] what was made")
    say(table(["", f"N={ns}", f"N={nb}"], [
        ["real videos / identities", f"{small['videos']} / {small['identities']}", f"{big['videos']} / {big['identities']}"],
        ["fakes planned / merged ok", f"{small['fakes_planned']} / {small['merged'].get('ok', 0)}",
         f"{big['fakes_planned']} / {big['merged'].get('ok', 0)}"],
        ["models (failed)", f"{small['models']} ({small['models_failed']})", f"{big['models']} ({big['models_failed']})"],
        ["published videos ok (all statuses)", f"{small['published'].get('ok', 0)} ({sum(small['published'].values())})",
         f"{big['published'].get('ok', 0)} ({sum(big['published'].values())})"],
        ["failures", small["n_failures"], big["n_failures"]]]))
    for r in (small, big):
        for f in r["failures"]:
            say(f"    N={r['n']} failure: {f}")

    say(f"\n[1] time by stage; per video = seconds / real videos; marginal = (T{nb} - T{ns}) / {nb - ns}; "
        f"fixed = T{ns} - {ns} x marginal")
    rows = []
    for s in STAGES:
        a, b = small["stage_seconds"].get(s, 0.0), big["stage_seconds"].get(s, 0.0)
        marg = (b - a) / (nb - ns)
        rows.append([s, f"{a:.1f}", f"{100 * a / small['seconds']:.0f}%", f"{a / ns:.3f}",
                     f"{b:.1f}", f"{100 * b / big['seconds']:.0f}%", f"{b / nb:.3f}", f"{marg:.3f}", f"{a - ns * marg:.1f}"])
    oa = small["seconds"] - sum(small["stage_seconds"].values())
    ob = big["seconds"] - sum(big["stage_seconds"].values())
    om = (ob - oa) / (nb - ns)
    rows.append(["between stages", f"{oa:.1f}", f"{100 * oa / small['seconds']:.0f}%", f"{oa / ns:.3f}", f"{ob:.1f}",
                 f"{100 * ob / big['seconds']:.0f}%", f"{ob / nb:.3f}", f"{om:.3f}", f"{oa - ns * om:.1f}"])
    tm = (big["seconds"] - small["seconds"]) / (nb - ns)
    rows.append(["total", f"{small['seconds']:.1f}", "100%", f"{small['seconds'] / ns:.3f}", f"{big['seconds']:.1f}",
                 "100%", f"{big['seconds'] / nb:.3f}", f"{tm:.3f}", f"{small['seconds'] - ns * tm:.1f}"])
    say(table(["stage", f"N={ns} s", "share", "s/video", f"N={nb} s", "share", "s/video", "marginal s/video",
               "fixed s"], rows))
    for r in (small, big):
        ms = r.get("model_seconds") or []
        if ms:
            say(f"    N={r['n']}: each model's own training task took {', '.join(f'{x:.1f}' for x in sorted(ms))} s "
                f"(model.json seconds: subset facesets, Ray Train run, export, check)")
    if "report_seconds" in small and "report_seconds" in big:
        say(f"    report.html, measured apart (not in the totals): N={ns} {small['report_seconds']:.1f} s, "
            f"N={nb} {big['report_seconds']:.1f} s")

    say("\n[2] scheduling overhead of the actor-pool stages, per task (a task = one fake, or one published "
        "video)\n    overhead = stage wall - actors' work / actors; work = sum of the actors' own time per task "
        "(timed inside the actor\n    around each call; it includes a first call's lazy model load); split into "
        "start (stage start → first task\n    starts: driver-side preparation, actor start-up and __init__), tail "
        "(last task ends → stage ends: results,\n    records read back) and between (the rest: idle actors between "
        "tasks, unequal shares)")
    rows = []
    for r in (small, big):
        for stage, _, unit in POOL_STAGES:
            p = r["pool"].get(stage)
            if not p:
                continue
            busy = p["work"] / p["actors"]
            over = p["wall"] - busy
            between = over - p["first_start"] - p["tail"]
            k = p["tasks"]
            rows.append([f"N={r['n']} {stage}", f"{k} {unit}", p["actors"], f"{p['wall']:.1f}", f"{p['work']:.1f}",
                         f"{p['work'] / k:.3f}", f"{busy:.1f}", f"{over:.1f}", f"{over / k:.3f}",
                         f"{p['first_start']:.1f}", f"{between / k:.3f}", f"{p['tail']:.1f}"])
    say(table(["", "tasks", "actors", "wall s", "work s", "work s/task", "work/actors", "overhead s", "overhead s/task",
               "start s", "between s/task", "tail s"], rows))
    for r in (small, big):
        p = r["pool"].get("merge")
        if p and r.get("merge_record_seconds") is not None:
            say(f"    N={r['n']} merge: the records' own seconds (merge_one) sum to {r['merge_record_seconds']:.1f} s of "
                f"the actors' {p['work']:.1f} s; the rest is model loads and the task wrapper")

    for r in (small, big):
        left = {k: v for k, v in (r.get("left_alive") or {}).items() if k not in RAY_OWN}
        if left:
            say(f"    N={r['n']}: Ray actors alive when run_generate returned (Ray's own left out): " + "; ".join(
                f"{k} x{n} ({c0:.1f} CPU s in all, {c1:.1f} s of it after the train stage)"
                for k, (n, c0, c1) in sorted(left.items())))

    say("\n[3] driver memory (the process that calls run_generate; Ray's workers are other processes)")
    rows = [["RSS before run_generate (imports, ray.init)", mib(small["rss_before"]), mib(big["rss_before"]),
             f"{big['rss_before'] / small['rss_before']:.2f}"]]
    for s in STAGES:
        a, b = small["rss_stage"].get(s), big["rss_stage"].get(s)
        if a and b:
            rows.append([f"peak RSS during {s}", mib(a), mib(b), f"{b / a:.2f}"])
    rows.append(["peak RSS during run_generate (sampled every 0.2 s)", mib(small["rss_peak"]), mib(big["rss_peak"]),
                 f"{big['rss_peak'] / small['rss_peak']:.2f}"])
    rows.append(["growth during run_generate (peak - before)", mib(small["rss_peak"] - small["rss_before"]),
                 mib(big["rss_peak"] - big["rss_before"]), ""])
    rows.append(["ru_maxrss before run_generate (start-up's high-water mark)", mib(small["maxrss_before"]),
                 mib(big["maxrss_before"]), f"{big['maxrss_before'] / small['maxrss_before']:.2f}"])
    rows.append(["ru_maxrss at the end of run_generate", mib(small["maxrss"]), mib(big["maxrss"]),
                 f"{big['maxrss'] / small['maxrss']:.2f}"])
    if "maxrss_with_report" in small and "maxrss_with_report" in big:
        rows.append(["peak RSS during build_report (apart)", mib(small["report_rss_peak"]), mib(big["report_rss_peak"]),
                     f"{big['report_rss_peak'] / small['report_rss_peak']:.2f}"])
    say(table(["", f"N={ns} MiB", f"N={nb} MiB", "ratio"], rows))
    if "held_stage" in small and "held_stage" in big:
        say(f"\n    held by the driver at each stage's end (gc, then malloc_trim: no free pages, no passed peaks), "
            f"above its RSS before run_generate;\n    marginal = (held N={nb} - held N={ns}) / {nb - ns} videos")
        rows = []
        for s in STAGES:
            a, b = small["held_stage"].get(s), big["held_stage"].get(s)
            if a and b:
                ga, gb = a - small["held_before"], b - big["held_before"]
                row = [f"after {s}", f"{ga / 2**20:.1f}", f"{gb / 2**20:.1f}", f"{(gb - ga) / 1024 / (nb - ns):.1f}"]
                if "arrow_stage" in small and "arrow_stage" in big:  # of which live Arrow buffers (tables kept)
                    aa, ab = small["arrow_stage"][s], big["arrow_stage"][s]
                    row += [f"{aa / 2**20:.2f}", f"{ab / 2**20:.2f}", f"{(ab - aa) / 1024 / (nb - ns):.2f}"]
                rows.append(row)
        say(table(["", f"N={ns} MiB", f"N={nb} MiB", "marginal KiB/video", "Arrow N=small", "Arrow N=big",
                   "Arrow KiB/video"][:len(rows[0]) if rows else 4], rows))
    say(f"    videos ratio {nb / ns:.1f}x; a memory ratio near 1 means the driver does not grow with the number of videos")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=1000, help="real videos of the large run (default 1000)")
    ap.add_argument("--small", type=int, default=200, help="real videos of the small run (default 200)")
    ap.add_argument("--plan-only", type=int, default=100000,
                    help="videos of the planning-only figure (default 100000; 0 skips it)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 and 12 videos")
    ap.add_argument("--frames", type=int, default=10, help="frames per clip (default 10)")
    ap.add_argument("--size", type=int, default=160, help="clip side, pixels (default 160)")
    ap.add_argument("--steps", type=int, default=6, help="training steps per model (default 6)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="GenerateConfig override for both runs (repeatable), e.g. --set perturb.preset=veryfast")
    ap.add_argument("--arena-max", type=int, default=0, metavar="N",
                    help="run the children (driver and the Ray cluster it starts) with MALLOC_ARENA_MAX=N: at most N "
                         "glibc malloc arenas, instead of 8 per core for a process's many threads (default: unset)")
    ap.add_argument("--window-chunks", type=int, default=0, metavar="K",
                    help="extraction's commit chunks per pipeline (dflray.extract.pipeline.WINDOW_CHUNKS; default: "
                         "dflray's own). Small windows make a run of --videos hold several of them")
    ap.add_argument("--tasks-per-actor", type=int, default=0, metavar="T",
                    help="tasks per actor in one pipeline of merge, quality and publish "
                         "(dflray.dataset.stages.base.TASKS_PER_ACTOR; default: dflray's own)")
    ap.add_argument("--skip-report", action="store_true", help="do not time build_report after each run")
    ap.add_argument("--keep", action="store_true", help="keep the generated datasets (their paths are printed)")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dflray-bench-cache"),
                    help="where generated clips are kept between runs")
    # internal: one run in a child process
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--report", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--clips", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        child(args)
        return
    if args.quick:
        args.small, args.videos, args.plan_only = 4, 12, 10000
    if not 2 <= args.small < args.videos:
        ap.error("need 2 <= --small < --videos")
    run_in_workdir("dflray-bench-generate-", _main, args)


def _main(args, work: str) -> None:
    import torch

    say("dflray dataset-generation benchmark")
    say(f"  machine: {psutil.cpu_count(logical=True)} logical CPUs ({psutil.cpu_count(logical=False)} physical), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, load average {os.getloadavg()[0]:.2f}; "
        f"python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}")
    clips_dir = os.path.join(args.cache_dir, f"generate-clips-{args.size}px-{args.frames}f")
    t = time.perf_counter()
    make_clips(clips_dir, args.videos, args.frames, args.size)
    say(f"  clips: {args.videos} in {clips_dir} ({args.frames} frames, {args.size}x{args.size}, 25 fps, "
        f"astronaut / grace_hopper alternating, one camera move each; ready in {time.perf_counter() - t:.1f} s)")
    say(f"  plan: {' '.join(PLAN + [f'models.train.steps={args.steps}'] + args.set)}")
    if args.window_chunks or args.tasks_per_actor:
        say(f"  windows: WINDOW_CHUNKS={args.window_chunks or 'default'}, TASKS_PER_ACTOR={args.tasks_per_actor or 'default'}")
    say(f"  each run: its own process and local Ray cluster (num_cpus={RAY_CPUS}), run_generate(report=False)"
        + (f", MALLOC_ARENA_MAX={args.arena_max}" if args.arena_max else ""))
    if args.keep:
        work = tempfile.mkdtemp(prefix="dflray-bench-generate-keep-")
    small, _, _ = run_child(args.small, clips_dir, work, args)
    big, _, _ = run_child(args.videos, clips_dir, work, args)
    report_runs(small, big)
    if args.plan_only:
        report_plan_only(args.plan_only)


def report_plan_only(n: int) -> None:
    """[4]: identities, splits and pairing alone at ``n`` synthetic videos, in a process of their own."""
    from plan_scale import _child as plan_child  # bench/plan_scale.py

    r = plan_child("size", n)
    say(f"\n[4] planning alone at {n:,} synthetic videos ({r['people']:,} people drawn, {r['found']:,} found; "
        "bench/plan_scale.py; peak RSS of its process, ru_maxrss)")
    rows = [["identities", f"{r['identities_s']:.2f}", f"{r['identities_rss']:.0f}"],
            ["splits", f"{r['splits_s']:.2f}", f"{r['splits_rss']:.0f}"],
            ["pairing (nearest)", f"{r['nearest_s']:.2f}", f"{r['nearest_rss']:.0f}"]]
    total = r["identities_s"] + r["splits_s"] + r["nearest_s"]
    rows.append(["total", f"{total:.2f}", f"{max(r['identities_rss'], r['nearest_rss']):.0f}"])
    say(table(["step", "seconds", "MB"], rows))
    say(f"    {1000 * total / n:.3f} ms per video")


if __name__ == "__main__":
    main()
