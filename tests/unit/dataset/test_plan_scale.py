"""The plan's scalable paths without Ray: neighbour-graph clustering against scipy's average linkage,
faiss pairing against each target's whole order, a 20,000-video plan, and manifests' malformed rows."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.special import comb

import dflray.dataset.plan as plan
from dflray.config import GenerateConfig, PairingConfig, SplitsConfig
from dflray.dataset.plan import assign_splits, cluster_identities, pair, read_manifest


def _ari(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labellings (pair counting)."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    both = comb(table, 2).sum()
    ra, rb, total = comb(table.sum(1), 2).sum(), comb(table.sum(0), 2).sum(), comb(len(a), 2)
    expected = ra * rb / total
    return float((both - expected) / ((ra + rb) / 2 - expected))


def _continuum(seed: int, n: int = 1200) -> np.ndarray:
    """Videos spread evenly through a 3-D cube (side 3) in 128-D: no natural groups, so where average
    linkage cuts depends on every pair, and most videos have more than 8 neighbours under 0.6."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(128, 3)))[0]
    return rng.uniform(0, 3, (n, 3)) @ basis.T + rng.normal(0, 0.01, (n, 128))


def _people(seed: int, n: int, people: int, spread: float = 0.022) -> tuple[np.ndarray, np.ndarray]:
    """Videos around identity centres ~1.0 apart (a person's videos ~0.35 apart at the default spread)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1 / 16, (people, 128))
    truth = rng.integers(0, people, n)
    return centres[truth] + rng.normal(0, spread, (n, 128)), truth


# Adjusted Rand index against scipy, measured over these 5 seeds (2026-12-06): on the continuum 1.0 with
# the default 16 neighbours (both linkages, graph merge or scipy per component); with 8 neighbours
# 0.993-1.0 (average) and 0.988-1.0 (complete); with 4, where the graph misses many pairs under the
# threshold, 0.948-0.992 (average) and 0.925-0.959 (complete). Separated people: 1.0.
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("linkage", ["average", "complete"])
def test_graph_clustering_agrees_with_scipy_average_linkage(seed, linkage):
    x = _continuum(seed)
    exact = plan._scipy_labels(x, 0.6, linkage)
    assert 50 < len(set(exact.tolist())) < 600  # a real test: neither one blob nor all singletons
    # every component through the merge on the graph (component_max=0), and through scipy per component
    for component_max, neighbours, floor in [(0, 16, 0.99), (10**6, 16, 0.99), (0, 8, 0.98), (0, 4, 0.90)]:
        got = plan._cluster_labels(x, 0.6, linkage, exact_max=0, component_max=component_max,
                                   neighbours=neighbours)
        assert _ari(exact, got) >= floor, (component_max, neighbours)
    # separated people (the benchmark's shape, a wider spread)
    x, _ = _people(seed, 1500, 300, spread=0.03)
    exact = plan._scipy_labels(x, 0.6, linkage)
    got = plan._cluster_labels(x, 0.6, linkage, exact_max=0, component_max=0)
    assert _ari(exact, got) >= 0.99


def test_graph_clustering_does_not_chain_a_line_of_people():
    # 3,000 videos on a line 0.5 apart: every neighbour pair is under 0.6, one component; average linkage
    # must still cut it into short runs, on the graph path (component over component_max) too
    x = np.zeros((3000, 128))
    x[:, 0] = 0.5 * np.arange(3000)
    labels = plan._cluster_labels(x, 0.6, "average", exact_max=0, component_max=100)
    sizes = np.bincount(labels)
    assert sizes.max() <= 3 and len(sizes) >= 1000
    assert _ari(plan._scipy_labels(x[:1000], 0.6, "average"),
                plan._cluster_labels(x[:1000], 0.6, "average", exact_max=0, component_max=100)) == 1.0


def test_twenty_thousand_videos_find_their_people_and_pair():
    x, truth = _people(1, 20000, 600)
    vids = [f"v{i:05d}" for i in range(len(x))]
    names = cluster_identities(dict(zip(vids, x)), 0.6, "id-")  # above the exact size: faiss path
    found = np.array([int(names[v][3:]) for v in vids])
    present = len(set(truth.tolist()))
    assert abs(len(set(found.tolist())) - present) <= present // 100
    assert _ari(truth, found) > 0.99
    counts = np.bincount(found)
    splits = assign_splits({f"id-{k:04d}": int(c) for k, c in enumerate(counts)}, SplitsConfig(), seed=0)
    means = {f"id-{k:04d}": x[found == k].mean(0) for k in range(len(counts))}
    sources = {k: {"split": splits[k], "attributes": {"g": "fm"[int(k[3:]) % 2]}, "embedding": means[k],
                   "videos": int(counts[int(k[3:])])} for k in means}
    targets = [{"video_id": v, "identity": names[v], "split": splits[names[v]],
                "attributes": sources[names[v]]["attributes"], "embedding": e} for v, e in zip(vids, x)]
    for policy in ("nearest", "group", "random"):
        cfg = PairingConfig(policy=policy, group_by="g" if policy == "group" else "", fakes_per_video=2)
        rows = pair(targets, sources, cfg, seed=3)
        assert len(rows) == 2 * len(targets)
        for r in rows[::97]:
            src, t = sources[r["source_identity"]], sources[r["target_identity"]]
            assert src["split"] == t["split"] and r["source_identity"] != r["target_identity"]
            if policy == "group":
                assert src["attributes"] == t["attributes"]
        if policy == "nearest":  # the nearest other identity, by the exact distance
            for r in rows[::2][::251]:
                e = targets[vids.index(r["video_id"])]["embedding"]
                same = [k for k in sources if sources[k]["split"] == r["split"] and k != r["target_identity"]]
                best = min(same, key=lambda k: (float(np.linalg.norm(means[k] - e)), k))
                assert r["source_identity"] == best


def _pairing_inputs(seed: int, n_sources: int = 700, n_targets: int = 2500, ties: bool = False):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1 / 16, (n_sources, 128))
    if ties:  # identical descriptors: ties broken by name on both paths
        centres[1::7] = centres[0::7][:len(centres[1::7])]
    sources = {f"s{i:04d}": {"split": "train" if i % 5 else "test", "attributes": {"g": "fm"[i % 2]},
                             "embedding": None if i % 13 == 0 else centres[i], "videos": 1 + i % 3}
               for i in range(n_sources)}
    who = rng.integers(0, n_sources, n_targets)
    targets = [{"video_id": f"v{j:05d}", "identity": f"s{who[j]:04d}", "split": sources[f"s{who[j]:04d}"]["split"],
                "attributes": {"g": "fm"[who[j] % 2]},
                "embedding": centres[who[j]] + rng.normal(0, 0.02, 128) if j % 11 else None}
               for j in range(n_targets)]
    exclude = tuple((f"s{a:04d}", f"s{b:04d}") for a, b in rng.integers(0, n_sources, (300, 2)))
    return targets, sources, exclude


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ties", [False, True])
def test_faiss_nearest_pairing_gives_the_whole_order_pairs(seed, ties, monkeypatch):
    targets, sources, exclude = _pairing_inputs(seed, ties=ties)
    for cfg in (PairingConfig(policy="nearest", fakes_per_video=3, exclude=exclude),
                PairingConfig(policy="nearest", fakes_per_video=2, exclude=exclude, max_per_source=4)):
        monkeypatch.setattr(plan, "_PAIR_EXACT_MAX", 10**9)  # every target's whole order, as before
        exact = pair(targets, sources, cfg, seed)
        monkeypatch.setattr(plan, "_PAIR_EXACT_MAX", 0)  # faiss's nearest few, re-ranked
        assert pair(targets, sources, cfg, seed) == exact
        assert len(exact) > len(targets)
        # a large pool: approximate (inverted lists), still only allowed, distinct, capped sources
        monkeypatch.setattr(plan, "_PAIR_FLAT_MAX", 0)
        approx = pair(targets, sources, cfg, seed)
        monkeypatch.setattr(plan, "_PAIR_FLAT_MAX", 8192)
        _check_allowed(approx, targets, sources, cfg)
        assert sum(a == b for a, b in zip(approx, exact)) > 0.5 * len(exact)


def _check_allowed(rows, targets, sources, cfg):
    excluded = {frozenset(p) for p in cfg.exclude}
    by_vid = {t["video_id"]: t for t in targets}
    per_source, per_target = {}, {}
    for r in rows:
        t, s = by_vid[r["video_id"]], r["source_identity"]
        assert sources[s]["split"] == t["split"] and s != t["identity"]
        assert frozenset((s, t["identity"])) not in excluded
        per_source[s] = per_source.get(s, 0) + 1
        per_target.setdefault(r["video_id"], []).append(s)
    assert all(len(v) == len(set(v)) <= cfg.fakes_per_video for v in per_target.values())
    if cfg.max_per_source is not None:
        assert max(per_source.values()) <= cfg.max_per_source


@pytest.mark.parametrize("policy", ["random", "group"])
def test_lazy_random_orders_are_uniform_and_fill_up(policy):
    # one target, 5,000 sources: its first choice over many seeds is spread over the pool (or group)
    sources = {f"s{i:04d}": {"split": "train", "attributes": {"g": "fm"[i % 2]}, "embedding": None, "videos": 1}
               for i in range(5000)}
    cfg = PairingConfig(policy=policy, group_by="g" if policy == "group" else "")
    target = {"video_id": "v", "identity": "x", "split": "train", "attributes": {"g": "f"}, "embedding": None}
    firsts = [int(pair([target], sources, cfg, seed)[0]["source_identity"][1:]) for seed in range(400)]
    assert len(set(firsts)) > 350  # not a few favourites
    assert 1500 < np.mean(firsts) < 3500
    if policy == "group":
        assert all(f % 2 == 0 for f in firsts)
    # a tight shared limit: every source is used up before anyone goes short (the orders reach the end)
    targets = [{**target, "video_id": f"v{i:04d}"} for i in range(3000)]
    rows = pair(targets, sources, PairingConfig(policy=policy, group_by=cfg.group_by, fakes_per_video=3,
                                                max_per_source=1), seed=0)
    assert len(rows) == (2500 if policy == "group" else 5000)
    assert len({r["source_identity"] for r in rows}) == len(rows)


# ------------------------------------------------------------------------------ malformed manifest rows


@pytest.mark.parametrize("name,data,message", [
    ("quote.csv", b'uri,identity\na.mp4,x\n"b.mp4,y\nc.mp4,z\n', r"line 3 is not CSV \(unexpected end of data\)"),
    ("junk.csv", b'uri,identity\na.mp4,x\nb.mp4,"y"z\n', r"line 3 is not CSV"),
    ("nul.csv", b"uri,identity\na.mp4,x\nb\x00.mp4,y\n", r"line 3: uri .* holds a line break or NUL"),
    ("latin1.csv", b"uri,identity\na.mp4,x\nb.mp4,Jos\xe9\n", r"line 3 is not UTF-8 text"),
    ("latin1.jsonl", b'{"uri": "a.mp4"}\n\n{"uri": "b\xe9.mp4"}\n', r"line 3 is not UTF-8 text"),
    ("list.jsonl", b'{"uri": "a.mp4"}\n{"uri": ["b.mp4"]}\n', r"line 2: uri must be a string"),
    ("number.jsonl", b'{"uri": "a.mp4"}\n{"uri": 5}\n', r"line 2: uri must be a string, got 5"),
    ("ident.jsonl", b'{"uri": "a.mp4"}\n{"uri": "b.mp4", "identity": {"x": 1}}\n',
     r"line 2: identity must be a string or a number"),
    ("attr.jsonl", b'{"uri": "a.mp4", "gender": ["f", "m"]}\n', r"line 1: attribute 'gender' must be a string"),
])
def test_malformed_rows_name_their_line(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match=rf"manifest {tmp_path / name}: {message}"):
        read_manifest(GenerateConfig(manifest=str(tmp_path / name)))


def test_malformed_parquet_rows_name_their_row(tmp_path):
    pq.write_table(pa.table({"uri": [["a.mp4"], ["b.mp4"]]}), tmp_path / "list.parquet")
    with pytest.raises(ValueError, match=r"list.parquet: row 1: uri must be a string"):
        read_manifest(GenerateConfig(manifest=str(tmp_path / "list.parquet")))
    pq.write_table(pa.table({"uri": ["a.mp4", "b.mp4"], "identity": [None, {"x": 1}]}), tmp_path / "s.parquet")
    with pytest.raises(ValueError, match=r"s.parquet: row 2: identity must be a string or a number"):
        read_manifest(GenerateConfig(manifest=str(tmp_path / "s.parquet")))


def test_a_large_manifest_reads_every_row(tmp_path):
    rows = [{"uri": f"v/{i:06d}.mp4", "identity": f"p{i % 300}", "gender": "fm"[i % 2]} for i in range(20000)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = read_manifest(GenerateConfig(manifest=str(tmp_path / "m.jsonl")))
    assert len(got) == 20000 and got[-1]["identity"] == "p199" and got[-1]["attributes"] == {"gender": "m"}
