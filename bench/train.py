"""Training benchmark: the Ray Train loop against a plain PyTorch loop, side by side in one run.

Prints, measured on the same facesets (extracted once from the built-in sample and cached) with the same
``TrainConfig``:

1. Step time (forward + backward + optimizer) of the same model and batch in a plain loop in this
   process, without Ray, against the step time the Ray Train loop reports (``step_time_s``) with one
   worker, and the overhead of the Ray loop (the issue's target: <= 10%).
2. End-to-end training throughput (samples/s, data waits included) with 1 and with 2 Ray Train workers
   on this machine's CPUs, and their ratio.
3. On a GPU, when one is available: the same comparison for the default liae-ud 128 px model at batch 8.

This is a benchmark, not a test: nothing is asserted. Run ``python bench/train.py --help``; see
bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from extract import Monitor, quiet_ray, run_in_workdir, say, table  # noqa: E402  (bench/extract.py: the CPU-load monitor and table)

from dflray.cli import _expand_arch  # noqa: E402
from dflray.config import ExtractConfig, ModelConfig, TrainConfig, load_config  # noqa: E402
from dflray.models import count_parameters  # noqa: E402
from dflray.sample import make_sample  # noqa: E402
from dflray.train.data import SAMPLE_COLUMNS, _make_samples, ct_references, epoch_plan, inspect_faceset  # noqa: E402
from dflray.train.step import SwapTrainer, join_batch  # noqa: E402

RAY_CPUS = 2
# The CPU model: liae-ud at 64 px with a quarter of SAEHD's channel widths, so that one step at batch 8
# takes about a second on one core and the whole benchmark a few minutes on 2 cores.
CPU_DIMS = (128, 32, 32, 16)  # ae_dims, e_dims, d_dims, d_mask_dims
SAMPLE_SECONDS = 8.0  # 200 frames per clip: 200 faces per faceset
PLAIN_BATCHES = 4  # distinct pre-built batches the plain loop cycles through


# ------------------------------------------------------------------------------------------------
# facesets


def facesets(cache_dir: str, seconds: float) -> tuple[str, str]:
    """src (astronaut) and dst (Grace Hopper) facesets from the built-in sample, extracted once and cached."""
    from dflray.extract import run_extract

    root = os.path.join(cache_dir, f"train-facesets-{seconds:g}s")
    src, dst = os.path.join(root, "src"), os.path.join(root, "dst")
    done = os.path.join(root, "DONE")
    if os.path.exists(done):
        return src, dst
    shutil.rmtree(root, ignore_errors=True)
    say(f"  building the facesets (once; cached in {root})")
    clips = make_sample(os.path.join(cache_dir, f"sample-{seconds:g}s"), seconds=seconds)
    by_name = {os.path.splitext(os.path.basename(c))[0]: c for c in clips}
    cfg = load_config(ExtractConfig, overrides=["align.size=128", "landmarks.embedding=false"])
    t = time.perf_counter()
    for name, out in (("astronaut", src), ("grace_hopper", dst)):
        s = run_extract([by_name[name]], out, cfg)
        say(f"    {name}: {s.faces} faces from {s.frames} frames")
    say(f"    extracted in {time.perf_counter() - t:.0f} s")
    open(done, "w").close()
    return src, dst


# ------------------------------------------------------------------------------------------------
# the plain loop


def plain_batches(src: str, dst: str, cfg: TrainConfig, n: int, device: torch.device, seed: int = 0
                  ) -> list[dict[str, torch.Tensor]]:
    """``n`` training batches built by the very function the Ray Data pipeline maps over the faceset
    (``data._make_samples`` → ``augment.make_batch``), as torch tensors already on ``device``."""
    from dflray.faceset import read_faces

    rng = np.random.default_rng(seed)
    refs = ct_references(inspect_faceset(dst, "dst"), cfg)
    tables = {role: read_faces(uri, columns=SAMPLE_COLUMNS) for role, uri in (("src", src), ("dst", dst))}
    out = []
    for _ in range(n):
        half = {}
        for role, tab in tables.items():
            idx = rng.choice(tab.num_rows, cfg.batch_size, replace=tab.num_rows < cfg.batch_size)
            rows = tab.take(idx).to_pydict()
            batch = {k: np.array(v, dtype=object) for k, v in rows.items()}
            batch["landmarks"] = np.array(rows["landmarks"], dtype=np.float32)
            batch["align_mat"] = np.array(rows["align_mat"], dtype=np.float64)
            flip = cfg.augment.random_src_flip if role == "src" else cfg.augment.random_dst_flip
            arrays = _make_samples(batch, resolution=cfg.model.resolution, face_type=cfg.model.face_type,
                                   augment=cfg.augment, flip=flip, ct_refs=refs if role == "src" else None)
            half[role] = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
        out.append(join_batch(half["src"], half["dst"]))
    return out


@dataclasses.dataclass
class PlainResult:
    times: list[float]
    threads: int | None
    mon: Monitor
    skipped: int = 0

    @property
    def mean(self) -> float:
        return statistics.mean(self.times)


def plain_loop(cfg: TrainConfig, batches: list[dict[str, torch.Tensor]], warmup: int, steps: int,
               device: torch.device, foreach: bool = True, channels_last: bool = False,
               compile_model: bool = False) -> PlainResult:
    """The Ray worker's step, in this process: the same ``SwapTrainer`` (model, discriminators, optimizer,
    precision) and torch thread count; the clock covers the same span as the Ray loop's ``step_time_s``
    (``train_step`` and, on a GPU, the synchronize after it)."""
    threads = None
    old_threads = torch.get_num_threads()
    if device.type == "cpu":  # as train_loop_per_worker does on CPU
        threads = cfg.torch_threads or max(1, int(np.ceil(cfg.cpus_per_worker)))
        torch.set_num_threads(threads)
    try:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        wrap = (lambda m: torch.compile(m.to(device, memory_format=layout))) if compile_model else \
            (lambda m: m.to(device, memory_format=layout))
        t = SwapTrainer(cfg, device, wrap=wrap)
        for group in t.opt.param_groups:
            group["foreach"] = foreach
        if channels_last:
            batches = [{k: v.contiguous(memory_format=layout) for k, v in b.items()} for b in batches]
        times, skipped, mon = [], 0, None
        for i in range(warmup + steps):
            if i == warmup:
                mon = Monitor(interval=0.5).__enter__()
            t0 = time.perf_counter()
            losses = t.train_step(batches[i % len(batches)])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
                skipped += losses is None
        mon.__exit__(None, None, None)
        return PlainResult(times=times, threads=threads, mon=mon, skipped=skipped)
    finally:
        torch.set_num_threads(old_threads)


# ------------------------------------------------------------------------------------------------
# the Ray Train loop


@dataclasses.dataclass
class RayResult:
    label: str
    cfg: TrainConfig
    metrics: dict
    seconds: float
    mon: Monitor

    @property
    def step(self) -> float:
        return self.metrics["step_time_s"]

    @property
    def wait(self) -> float:
        return self.metrics["data_wait_s"]

    @property
    def samples_per_s(self) -> float:
        """End to end over the last log window: src + dst samples of every worker per (compute + wait)."""
        return 2 * self.cfg.batch_size * self.cfg.num_workers / (self.step + self.wait)


def ray_run(label: str, src: str, dst: str, cfg: TrainConfig, work: str) -> RayResult:
    from dflray.train import run_train

    out = os.path.join(work, label.replace(" ", "-"))
    shutil.rmtree(out, ignore_errors=True)
    with Monitor(interval=1.0) as mon:
        t0 = time.perf_counter()
        summary = run_train(src, dst, out, cfg)
        secs = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return RayResult(label=label, cfg=cfg, metrics=summary.metrics, seconds=secs, mon=mon)


def timed_config(cfg: TrainConfig, window: int, **changes) -> TrainConfig:
    """``cfg`` for a Ray run of two log windows: the last report (what run_train returns) covers steps
    window+1..2*window, so it excludes the first steps and the data pipeline's start."""
    return dataclasses.replace(cfg, steps=2 * window, log_every=window, checkpoint_every=2 * window,
                               keep_checkpoints=1, preview_every=0, **changes)


# ------------------------------------------------------------------------------------------------
# output


def ms(s: float) -> str:
    return f"{1000 * s:.0f}" if s >= 0.1 else f"{1000 * s:.1f}"


def spread(times: list[float]) -> str:
    return (f"median {ms(statistics.median(times))}, min {ms(min(times))}, max {ms(max(times))} ms"
            + (f", stdev {ms(statistics.stdev(times))} ms" if len(times) > 1 else ""))


def describe(cfg: TrainConfig) -> str:
    m = cfg.model
    return (f"{m.arch_string} {m.resolution} px {m.face_type}, ae/e/d/mask dims {m.ae_dims}/{m.e_dims}/{m.d_dims}/"
            f"{m.d_mask_dims}, batch {cfg.batch_size} src + {cfg.batch_size} dst, optimizer {cfg.optim.name}, "
            f"masked_training={cfg.loss.masked_training}, gan_power={cfg.loss.gan_power:g}")


def params(cfg: TrainConfig) -> str:
    from dflray.models import build_model

    c = count_parameters(build_model(cfg.model))
    parts = ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in c.items() if k != "total")
    return f"{c['total'] / 1e6:.2f} M parameters ({parts})"


# ------------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 6-step windows, each plain loop once, no GPU part")
    ap.add_argument("--arch", default="liae-ud", help="model architecture, DFL's form (default liae-ud)")
    ap.add_argument("--resolution", type=int, default=64, help="model.resolution of the CPU runs (default 64)")
    ap.add_argument("--dims", default=",".join(map(str, CPU_DIMS)),
                    help="ae,e,d,mask dims of the CPU model (default %(default)s; 'default': SAEHD's 256,64,64,22)")
    ap.add_argument("--batch", type=int, default=8, help="batch_size per worker, src and dst each (default 8)")
    ap.add_argument("--steps", type=int, default=20,
                    help="timed steps: plain-loop steps after warm-up, and steps per Ray log window (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed plain-loop steps first (default 3)")
    ap.add_argument("--two-worker-cpus", type=float, default=0.5,
                    help="cpus_per_worker of the 2-worker run (default 0.5: 2 x 0.5 leaves 1 CPU to the data pipeline)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="TrainConfig override for every run (repeatable), e.g. --set loss.gan_power=0.1")
    ap.add_argument("--compile", action="store_true", help="[0] also times the step with torch.compile")
    ap.add_argument("--skip-gpu", action="store_true", help="skip part 3 even when a GPU is available")
    ap.add_argument("--gpu-steps", type=int, default=50, help="timed steps of the GPU runs (default 50)")
    ap.add_argument("--seconds", type=float, default=SAMPLE_SECONDS,
                    help=f"length of the sample clips the facesets come from (default {SAMPLE_SECONDS:g})")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dflray-bench-cache"),
                    help="where the sample clips and facesets are kept between runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 6, 2
    if RAY_CPUS - 2 * args.two_worker_cpus < 1:
        # Ray Data's file-listing and read tasks reserve 1 CPU each: with less left the pipeline never starts.
        ap.error(f"--two-worker-cpus {args.two_worker_cpus:g} leaves {RAY_CPUS - 2 * args.two_worker_cpus:g} of "
                 f"{RAY_CPUS} CPUs to the data pipeline, whose read tasks need 1 CPU (run_train refuses it)")

    run_in_workdir("dflray-bench-train-", _main, args)


def _quiet_ray() -> None:
    quiet_ray(RAY_CPUS, "Converting a tensor with requires_grad=True to a scalar")


def _main(args, work: str) -> None:
    dims = ModelConfig() if args.dims == "default" else None
    ae, e, d, mk = ((dims.ae_dims, dims.e_dims, dims.d_dims, dims.d_mask_dims) if dims
                    else tuple(int(x) for x in args.dims.split(",")))
    overrides = [f"model.resolution={args.resolution}", f"model.ae_dims={ae}", f"model.e_dims={e}",
                 f"model.d_dims={d}", f"model.d_mask_dims={mk}", f"batch_size={args.batch}", "augment_cpus=0.5",
                 *args.set]
    base = load_config(TrainConfig, overrides=_expand_arch(overrides, args.arch))
    one = dataclasses.replace(base, num_workers=1, cpus_per_worker=1.0)
    two = dataclasses.replace(base, num_workers=2, cpus_per_worker=args.two_worker_cpus)

    say("dflray training benchmark")
    say(f"  machine: {psutil.cpu_count(logical=True)} logical CPUs ({psutil.cpu_count(logical=False)} physical), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, load average {os.getloadavg()[0]:.2f}; "
        f"python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}; "
        f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    say(f"  CPU model: {describe(base)}")
    say(f"    {params(base)}")

    _quiet_ray()
    src, dst = facesets(args.cache_dir, args.seconds)
    s_info, d_info = inspect_faceset(src, "src"), inspect_faceset(dst, "dst")
    times, _, per_pass = epoch_plan(s_info, base)
    say(f"  facesets: src {s_info.faces} faces, dst {d_info.faces} faces ({s_info.face_type} {s_info.size} px crops "
        f"from the built-in sample, {args.seconds:g} s clips); one pass of the src dataset: {per_pass} samples "
        f"(each face {times}x) = {per_pass // base.batch_size} steps with 1 worker, "
        f"{per_pass // (2 * base.batch_size)} with 2")

    cpu = torch.device("cpu")
    batches = plain_batches(src, dst, one, PLAIN_BATCHES, cpu)
    window = args.steps

    # ---- [0] CPU step speed-ups, before/after in one run
    speedups(args, one, batches, cpu)

    # ---- [1] step time: plain loop vs the Ray Train loop, 1 worker
    say("\n[1] step time: plain PyTorch loop vs the Ray Train loop (1 worker), same model, batch and config")
    say(f"  plain loop: this process, no Ray; SwapTrainer.train_step on {PLAIN_BATCHES} "
        f"pre-built batches (augment.make_batch), torch threads = {max(1, math.ceil(one.cpus_per_worker))} "
        f"as a worker with cpus_per_worker={one.cpus_per_worker:g} gets; {args.warmup} warm-up steps, then "
        f"{window} timed")
    say("  two placements of the plain loop: in the main thread, as a script runs it; and in a second thread, as\n"
        "  Ray Train runs train_loop_per_worker (in a thread of the worker actor). glibc serves each thread's\n"
        "  allocations from its own arena, and the main arena returns freed tensor memory to the system and\n"
        "  faults it in again every step, so the placement alone can move the step time by a few percent.")
    plains: dict[str, list[PlainResult]] = {"main thread": [], "worker thread": []}
    for where in plains:
        plains[where].append(_plain(f"plain loop, {where}, 1st", one, batches, args.warmup, window, cpu,
                                    thread=where == "worker thread"))

    say(f"  Ray Train: run_train on the local ray.init(num_cpus={RAY_CPUS}) cluster, steps={2 * window}, "
        f"log_every={window}: the figures are the loop's last report, steps {window + 1}..{2 * window}")
    r1 = ray_run("ray 1 worker", src, dst, timed_config(one, window), work)
    _say_ray(r1)
    r2 = ray_run("ray 2 workers", src, dst, timed_config(two, window), work)
    _say_ray(r2)
    if not args.quick:  # again after the Ray runs: the mean of both brackets drift in the machine's load
        say("  plain loops again, after the Ray runs")
        for where in reversed(plains):
            plains[where].append(_plain(f"plain loop, {where}, 2nd", one, batches, args.warmup, window, cpu,
                                        thread=where == "worker thread"))

    base_ms = {where: statistics.mean(p.mean for p in runs) for where, runs in plains.items()}
    ref = base_ms["worker thread"]
    say("\n  summary: step time (forward + backward + optimizer), ms; the issue's target: Ray <= plain + 10%")
    rows = [[f"plain loop, {where}, {nth}", ms(p.mean), "-", f"{p.mean / ref:.3f}", f"{p.mon.other / p.mon.wall:.2f}"]
            for where, runs in plains.items() for nth, p in zip(("1st", "2nd"), runs)]
    rows.append(["Ray Train, 1 worker", ms(r1.step), ms(r1.wait), f"{r1.step / ref:.3f}",
                 f"{r1.mon.other / r1.mon.wall:.2f}"])
    say(table(["", "step ms", "data wait ms", "vs plain (worker thread)", "other load (cores)"], rows))
    over = r1.step / ref - 1
    say(f"  => Ray Train loop overhead = {100 * over:+.1f}% of the plain loop's step time in a worker thread "
        f"(the same placement), {100 * (r1.step / base_ms['main thread'] - 1):+.1f}% of it in the main thread "
        f"[plain: mean of {len(plains['main thread'])} run(s) each] -> "
        f"{'within' if over <= 0.10 else 'OVER'} the 10% target")
    plain_mean = ref

    # ---- [2] samples/s, 1 vs 2 workers
    say(f"\n[2] training throughput on {RAY_CPUS} CPUs: 1 vs 2 Ray Train workers (samples = src + dst faces)")
    say(f"  1 worker: cpus_per_worker=1, torch 1 thread; 2 workers: cpus_per_worker={two.cpus_per_worker:g}, "
        f"torch {max(1, math.ceil(two.cpus_per_worker))} thread each, gradients all-reduced (gloo); "
        f"augment_cpus={base.augment_cpus:g}; the data pipeline gets the CPUs the workers leave: "
        f"{RAY_CPUS - one.cpus_per_worker:g} and {RAY_CPUS - 2 * two.cpus_per_worker:g}")
    plain_sps = 2 * base.batch_size / plain_mean
    rows = [["plain loop (worker thread), compute only", "1", ms(plain_mean), "-", f"{plain_sps:.1f}", "-", "-", "-"]]
    for r in (r1, r2):
        rows.append([r.label, str(r.cfg.num_workers), ms(r.step), ms(r.wait), f"{r.samples_per_s:.1f}",
                     f"{r.metrics.get('samples_per_s', float('nan')):.1f}", f"{r.samples_per_s / r1.samples_per_s:.2f}x",
                     f"{r.mon.other / r.mon.wall:.2f}"])
    say(table(["", "workers", "step ms", "data wait ms", "samples/s", "reported", "vs 1 worker",
               "other load"], rows))
    say(f"  => 2 workers / 1 worker = {r2.samples_per_s / r1.samples_per_s:.2f}x samples/s "
        f"(2 workers' step time {r2.step / r1.step:.2f}x one worker's: two ranks, the data pipeline and the "
        f"all-reduce share {RAY_CPUS} cores)")
    say("  samples/s: 2 x batch x workers / (step + data wait) over the last window; reported: the loop's own\n"
        "  samples_per_s metric over the same window (wall time, so it also holds the report and checkpoint).")

    # ---- [3] GPU
    if args.quick or args.skip_gpu:
        say("\n[3] GPU: skipped (--quick / --skip-gpu)")
    elif not torch.cuda.is_available():
        say("\n[3] GPU: skipped: torch.cuda.is_available() is False on this machine "
            f"(torch {torch.__version__}{', a CPU-only build' if '+cpu' in torch.__version__ else ''})")
    else:
        gpu(args, src, dst, work)


SPEEDUPS = [  # label, TrainConfig changes, plain_loop options
    ("before: fp32, per-tensor optimizer", {"mixed_precision": "off"}, {"foreach": False}),
    ("fp32, multi-tensor optimizer", {"mixed_precision": "off"}, {}),
    ("after: bf16 autocast, multi-tensor optimizer", {"mixed_precision": "bf16"}, {}),
    ("bf16 autocast + channels-last", {"mixed_precision": "bf16"}, {"channels_last": True}),
]


def speedups(args, cfg: TrainConfig, batches, device: torch.device) -> None:
    """Step time of the plain loop (worker thread, as Ray Train runs it) with and without each CPU speed-up,
    the variants interleaved twice so that a drift in the machine's load hits all of them alike."""
    from dflray.train.step import cpu_has_bf16

    variants = list(SPEEDUPS) + ([("bf16 autocast + torch.compile", {"mixed_precision": "bf16"},
                                   {"compile_model": True})] if args.compile else [])
    say("\n[0] CPU step time, before/after the speed-ups (plain loop in a worker thread, torch threads "
        f"{max(1, math.ceil(cfg.cpus_per_worker))}; this CPU {'has' if cpu_has_bf16() else 'lacks'} native bf16 "
        "(AVX-512 BF16 / AMX))")
    runs: dict[str, list[PlainResult]] = {label: [] for label, _, _ in variants}
    for _ in range(1 if args.quick else 2):
        for label, changes, opts in variants:
            c = dataclasses.replace(cfg, **changes)
            box: list[PlainResult] = []
            th = threading.Thread(target=lambda: box.append(plain_loop(c, batches, args.warmup, args.steps, device,
                                                                       **opts)))
            th.start()
            th.join()
            if not box:
                raise RuntimeError(f"{label} failed (see the traceback above)")
            runs[label].append(box[0])
    before = statistics.mean(p.mean for p in runs[variants[0][0]])
    rows = [[label, ms(statistics.mean(p.mean for p in rs)), " / ".join(ms(p.mean) for p in rs),
             f"{before / statistics.mean(p.mean for p in rs):.2f}x",
             f"{statistics.mean(p.mon.other / p.mon.wall for p in rs):.2f}"]
            for label, rs in runs.items()]
    say(table(["", "step ms (mean)", "runs", "speed-up vs before", "other load (cores)"], rows))
    after = statistics.mean(p.mean for p in runs[variants[2][0]])
    say(f"  => step-time ratio after/before = {after / before:.2f} ({before / after:.2f}x faster); "
        "mixed_precision=auto trains in bf16 on a CPU with native bf16, else fp32 (see bench/README.md)")


def _plain(label: str, cfg: TrainConfig, batches, warmup: int, steps: int, device: torch.device,
           thread: bool = False) -> PlainResult:
    if thread:
        box: list[PlainResult] = []
        th = threading.Thread(target=lambda: box.append(plain_loop(cfg, batches, warmup, steps, device)))
        th.start()
        th.join()
        if not box:
            raise RuntimeError(f"{label} failed (see the traceback above)")
        p = box[0]
    else:
        p = plain_loop(cfg, batches, warmup, steps, device)
    say(f"    {label}: {ms(p.mean)} ms/step mean over {steps} steps ({spread(p.times)})"
        + (f"; {p.skipped} non-finite steps skipped" if p.skipped else ""))
    say(f"      {p.mon.load()}")
    return p


def _say_ray(r: RayResult) -> None:
    m = r.metrics
    say(f"    {r.label} (cpus_per_worker={r.cfg.cpus_per_worker:g}{', GPU' if r.cfg.use_gpu else ''}): "
        f"step {ms(r.step)} ms, data wait {ms(r.wait)} ms -> {r.samples_per_s:.1f} samples/s; "
        f"run_train took {r.seconds:.0f} s in all (start, {r.cfg.steps} steps, checkpoint); "
        f"final losses src {m.get('src_loss', float('nan')):.4f} dst {m.get('dst_loss', float('nan')):.4f}"
        + (f"; {m['skipped_steps']} skipped steps" if m.get("skipped_steps") else ""))
    say(f"      {r.mon.load()}")


def gpu(args, src: str, dst: str, work: str) -> None:
    """The default liae-ud 128 px model (ModelConfig() defaults) at batch 8 on the GPU."""
    dev = torch.device("cuda", 0)
    cfg = load_config(TrainConfig, overrides=["batch_size=8", "augment_cpus=0.5", *args.set])
    cfg = dataclasses.replace(cfg, model=ModelConfig(), num_workers=1, cpus_per_worker=1.0)
    n = args.gpu_steps
    say(f"\n[3] GPU ({torch.cuda.get_device_name(dev)}): the default model, {describe(cfg)}; "
        f"mixed_precision={cfg.mixed_precision}")
    say(f"    {params(cfg)}")
    batches = plain_batches(src, dst, cfg, PLAIN_BATCHES, dev)
    p = _plain("plain loop (worker thread, as Ray Train runs it)", cfg, batches, 10, n, dev, thread=True)
    del batches
    torch.cuda.empty_cache()
    r = ray_run("ray 1 GPU worker", src, dst, timed_config(cfg, n, use_gpu=True), work)
    _say_ray(r)
    say(table(["", "step ms", "data wait ms", "samples/s", "vs plain step"],
              [["plain loop", ms(p.mean), "-", f"{2 * cfg.batch_size / p.mean:.1f}", "1.000"],
               ["Ray Train, 1 GPU worker", ms(r.step), ms(r.wait), f"{r.samples_per_s:.1f}", f"{r.step / p.mean:.3f}"]]))
    say(f"  => Ray Train loop overhead on the GPU = {100 * (r.step / p.mean - 1):+.1f}% of the plain loop's step time; "
        f"data wait shows whether the {RAY_CPUS - cfg.cpus_per_worker:g} CPU(s) left to augmentation keep up")


if __name__ == "__main__":
    main()
