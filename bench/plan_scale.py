"""Planning benchmark: identities, splits and pairing of the dataset job at 1,000 / 10,000 / 100,000 videos.

Builds synthetic videos the way the job sees them after extraction: one 128-D dominant-identity
embedding per video, drawn around identity centres (3 per 100 videos, so 3,000 at 100,000: centres
~1.0 apart, a person's videos ~0.35 apart, like dlib descriptors), none labelled, every video usable,
a ``gender`` attribute per person. Then runs the planning's own pure functions, as ``dflray generate``
does after its Ray stages:

1. identities: ``dflray.dataset.stages.identities.identities_from_embeddings`` (clustering by
   ``dflray.dataset.plan.cluster_identities``, identity means);
2. splits: ``dflray.dataset.plan.assign_splits`` alone;
3. plan, per pairing policy (``nearest``, ``group``, ``random``): ``dflray.dataset.stages.plan.plan_dataset``
   (splits, ``pair``, the plan rows).

Each size runs in a fresh process; memory is the process's peak RSS (``resource.getrusage`` ``ru_maxrss``)
after each step, so it includes the interpreter and libraries (the "after imports" column). Then the old
quadratic paths at 5,000 videos (scipy's average linkage over all pairwise distances; pairing that orders
every source for every target), and ``read_manifest`` on 100,000-row CSV, Parquet and JSONL manifests.

This is a benchmark, not a test: nothing is asserted. ``python bench/plan_scale.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

POLICIES = ("nearest", "group", "random")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def synthetic(n: int, seed: int = 0) -> tuple[list[dict], dict[str, np.ndarray], np.ndarray]:
    """``n`` manifest rows, their embeddings and the true identity of each (deterministic)."""
    from dflray.faceset import video_id

    rng = np.random.default_rng(seed)
    people = max(1, 3 * n // 100)
    centres = rng.normal(0, 1 / 16, (people, 128))
    truth = rng.integers(0, people, n)
    emb = centres[truth] + rng.normal(0, 0.022, (n, 128))
    rows, embeddings = [], {}
    for i in range(n):
        uri = f"/data/videos/v{i:06d}.mp4"
        vid = video_id(uri)
        rows.append({"uri": uri, "video_id": vid, "identity": "", "attributes": {"gender": "fm"[truth[i] % 2]}})
        embeddings[vid] = emb[i]
    return rows, embeddings, truth


def one_size(n: int) -> dict:
    """Times the planning of ``n`` synthetic videos in this process."""
    from dflray.config import GenerateConfig, PairingConfig
    from dflray.dataset.plan import assign_splits
    from dflray.dataset.stages.identities import identities_from_embeddings
    from dflray.dataset.stages.plan import plan_dataset

    out = {"n": n, "rss_imports": _rss_mb()}
    manifest, embeddings, truth = synthetic(n)
    out["people"] = len(set(truth.tolist()))
    out["rss_inputs"] = _rss_mb()
    cfg = GenerateConfig(videos=("unused.mp4",))
    t = time.perf_counter()
    people = identities_from_embeddings(cfg, manifest, embeddings, {m["video_id"]: "ok" for m in manifest})
    out["identities_s"], out["identities_rss"] = time.perf_counter() - t, _rss_mb()
    out["found"] = len(people.means)
    counts: dict[str, int] = {}
    for r in people.videos:
        counts[r["identity"]] = counts.get(r["identity"], 0) + 1
    t = time.perf_counter()
    assign_splits(counts, cfg.splits, cfg.seed)
    out["splits_s"], out["splits_rss"] = time.perf_counter() - t, _rss_mb()
    for policy in POLICIES:
        pcfg = GenerateConfig(videos=("unused.mp4",), pairing=PairingConfig(
            policy=policy, group_by="gender" if policy == "group" else "", fakes_per_video=1))
        t = time.perf_counter()
        plan = plan_dataset(pcfg, people)
        out[f"{policy}_s"], out[f"{policy}_rss"] = time.perf_counter() - t, _rss_mb()
        out[f"{policy}_fakes"] = sum(r["kind"] == "FAKE" for r in plan.rows)
        del plan
    return out


def old_paths(n: int) -> dict:
    """The old quadratic clustering and nearest pairing against the new ones, on ``n`` videos."""
    import dflray.dataset.plan as P
    from dflray.config import PairingConfig

    _, embeddings, truth = synthetic(n)
    x = np.stack([embeddings[k] for k in sorted(embeddings)])
    out = {"n": n}
    t = time.perf_counter()
    old = P._scipy_labels(x, 0.6, "average")
    out["old_cluster_s"] = time.perf_counter() - t
    t = time.perf_counter()
    new = P._cluster_labels(x, 0.6, "average", exact_max=0)
    out["new_cluster_s"] = time.perf_counter() - t
    out["same_clusters"] = bool(len(set(old.tolist())) == len(set(new.tolist())) and
                                len(set(zip(old.tolist(), new.tolist()))) == len(set(old.tolist())))
    people: dict[str, list[np.ndarray]] = {}
    for v, p in zip(embeddings, truth):
        people.setdefault(f"p{p}", []).append(embeddings[v])
    sources = {k: {"split": "train", "attributes": {}, "embedding": np.mean(v, 0), "videos": len(v)}
               for k, v in people.items()}
    targets = [{"video_id": v, "identity": f"p{p}", "split": "train", "attributes": {}, "embedding": embeddings[v]}
               for v, p in zip(embeddings, truth)]
    cfg = PairingConfig(policy="nearest", fakes_per_video=2)
    keep = P._PAIR_EXACT_MAX
    try:
        P._PAIR_EXACT_MAX = 10**9  # every target's whole order, as before
        t = time.perf_counter()
        a = P.pair(targets, sources, cfg, 0)
        out["old_pair_s"] = time.perf_counter() - t
        P._PAIR_EXACT_MAX = 0
        t = time.perf_counter()
        b = P.pair(targets, sources, cfg, 0)
        out["new_pair_s"] = time.perf_counter() - t
    finally:
        P._PAIR_EXACT_MAX = keep
    out["same_pairs"] = a == b
    out["sources"] = len(sources)
    return out


def manifests(n: int) -> dict:
    """``read_manifest`` times on ``n``-row CSV, Parquet and JSONL manifests."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dflray.config import GenerateConfig
    from dflray.dataset.plan import read_manifest

    rows = [{"uri": f"videos/v{i:06d}.mp4", "identity": f"p{i % 3000}" if i % 2 else "", "gender": "fm"[i % 2]}
            for i in range(n)]
    out = {"n": n}
    with tempfile.TemporaryDirectory() as d:
        with open(f"{d}/m.csv", "w") as f:
            f.write("uri,identity,gender\n")
            f.writelines(f"{r['uri']},{r['identity']},{r['gender']}\n" for r in rows)
        with open(f"{d}/m.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        pq.write_table(pa.Table.from_pylist(rows), f"{d}/m.parquet")
        for ext in ("csv", "parquet", "jsonl"):
            t = time.perf_counter()
            got = read_manifest(GenerateConfig(manifest=f"{d}/m.{ext}"))
            out[ext] = time.perf_counter() - t
            assert len(got) == n
    return out


def _child(mode: str, n: int) -> dict:
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, str(n)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000], help="numbers of videos")
    ap.add_argument("--old", type=int, default=5000, help="videos for the old quadratic paths (0: skip)")
    ap.add_argument("--manifest-rows", type=int, default=100000, help="rows of each manifest (0: skip)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, n = args.child[0], int(args.child[1])
        print(json.dumps({"size": one_size, "old": old_paths, "manifest": manifests}[mode](n)))
        return
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    runs = [_child("size", n) for n in args.sizes]
    print("\nplanning (s = seconds; MB = peak RSS of the process after the step, ru_maxrss; one process per size)")
    head = "| step | " + " | ".join(f"{r['n']:,} videos" for r in runs) + " |"
    print(head)
    print("|---|" + "---:|" * len(runs))
    print("| people (drawn / found) | " + " | ".join(f"{r['people']:,} / {r['found']:,}" for r in runs) + " |")
    print("| after imports, inputs | " + " | ".join(f"{r['rss_imports']:.0f} MB, {r['rss_inputs']:.0f} MB"
                                                   for r in runs) + " |")
    steps = [("identities", "identities"), ("splits", "splits")] + [(p, f"plan, pairing={p}") for p in POLICIES]
    for key, label in steps:
        print(f"| {label} | " + " | ".join(f"{r[key + '_s']:.2f} s, {r[key + '_rss']:.0f} MB" for r in runs) + " |")
    print("| identities + splits + plan (nearest) | " +
          " | ".join(f"{r['identities_s'] + r['splits_s'] + r['nearest_s']:.2f} s" for r in runs) + " |")
    print("| fakes planned (nearest, group, random) | " +
          " | ".join(", ".join(f"{r[p + '_fakes']:,}" for p in POLICIES) for r in runs) + " |")
    if args.old:
        o = _child("old", args.old)
        print(f"\nold quadratic paths at {o['n']:,} videos ({o['sources']:,} people)")
        print("| step | old | new | same result |")
        print("|---|---:|---:|---|")
        print(f"| clustering | {o['old_cluster_s']:.2f} s | {o['new_cluster_s']:.2f} s | {o['same_clusters']} |")
        print(f"| pairing nearest, 2 fakes per video | {o['old_pair_s']:.2f} s | {o['new_pair_s']:.2f} s | "
              f"{o['same_pairs']} |")
    if args.manifest_rows:
        m = _child("manifest", args.manifest_rows)
        print(f"\nread_manifest, {m['n']:,} rows: " + ", ".join(f"{k} {m[k]:.2f} s" for k in ("csv", "parquet", "jsonl")))
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
