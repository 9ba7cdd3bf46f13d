"""The dataset job's plan, as pure functions (no Ray, no video I/O).

``dflray generate`` starts from a manifest of real videos and decides, before any heavy work, who is
who, which split each person is in and which source identity goes onto which destination video:

- ``read_manifest``: the plan's videos, inline or from a CSV / Parquet / JSONL / text manifest on any
  fsspec URL, as rows ``{uri, video_id, identity, attributes}``.
- ``dominant_embedding``: the mean dlib descriptor of the person with the most faces in one video, the
  same "dominant identity" the merge swaps (``dflray.merge.video.select_faces``).
- ``cluster_identities``: names the people of unlabelled videos by agglomerative (average-linkage)
  clustering of those descriptors at dlib's same-person distance (0.6).
- ``assign_splits``: identity-disjoint train/val/test splits whose *video* fractions approximate the
  configured ones (a person is never in two splits, so a detector is always tested on unseen faces,
  as FaceForensics++ and DFDC split by identity).
- ``pair``: for each destination video, the source identities swapped onto it: same split, never its
  own person, never an excluded pair, at most ``max_per_source`` fakes per source, chosen at random,
  by the nearest identity embedding (DFDC swapped similar-looking people) or at random within an
  attribute group (e.g. gender).
- ``plan_seed``: stable 63-bit seeds derived from the plan's seed and names.

Every function is deterministic for its inputs and seed, independent of dict and row order.

Example:
    >>> splits = assign_splits({"alice": 3, "bob": 2, "carol": 4}, SplitsConfig(0.6, 0.2, 0.2), seed=0)
    >>> sorted(set(splits.values())) == ["test", "train", "val"]
    True
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import posixpath
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from dflray.config import GenerateConfig, PairingConfig, SplitsConfig, VideoEntry
from dflray.faceset import video_id as _video_id
from dflray.io.storage import join, open_uri

__all__ = ["SPLITS", "assign_splits", "cluster_identities", "dominant_embedding", "pair", "plan_seed",
           "read_manifest"]

SPLITS = ("train", "val", "test")
_TEXT_EXTENSIONS = (".txt", ".lst", ".list")
_RESERVED_COLUMNS = ("uri", "identity")


# ------------------------------------------------------------------------------ seeds


def plan_seed(seed: int, *parts: str) -> int:
    """A stable 63-bit seed from the plan's seed and any number of names.

    The encoding is unambiguous (``("ab", "c")`` and ``("a", "bc")`` differ) and does not depend on
    Python's per-process string hashing, so every worker and every rerun derives the same seed.

    Args:
        seed: the base seed (``GenerateConfig.seed``).
        *parts: names the seed is for, e.g. ``"pair", video_id``.

    Returns:
        An int in ``0 .. 2**63 - 1``.

    Example:
        >>> plan_seed(0, "splits") == plan_seed(0, "splits") != plan_seed(1, "splits")
        True
        >>> plan_seed(0, "ab", "c") != plan_seed(0, "a", "bc")
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    for p in parts:
        if not isinstance(p, str):
            raise ValueError(f"plan_seed parts must be strings, got {p!r}")
    doc = json.dumps(["dflray.plan", int(seed), *parts], ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(doc.encode()).digest()[:8], "big") >> 1


# ------------------------------------------------------------------------------ manifest


def read_manifest(cfg: GenerateConfig) -> list[dict]:
    """The plan's real videos, from ``cfg.videos`` or the ``cfg.manifest`` file.

    Manifest formats, by extension:

    - ``.csv``: a header with a ``uri`` column, an optional ``identity`` column; every other column is an
      attribute (e.g. ``gender``).
    - ``.parquet`` / ``.pq``: the same columns (any type; values are kept as strings).
    - ``.jsonl`` / ``.ndjson``: one object per line with the same keys (an ``attributes`` object is
      merged into the attributes too).
    - ``.txt`` / ``.lst`` / ``.list``: one URI per line; blank lines and ``#`` comments are skipped.

    URIs that are neither URLs (``s3://…``) nor absolute paths resolve against the manifest's folder.
    Empty identity and attribute values count as missing (an attribute with an empty value is left out
    of ``attributes``, so ``pairing.policy=group`` puts that video in no group). Inline URIs are kept
    as given.

    Args:
        cfg: the plan.

    Returns:
        One row per video, in manifest order: ``{"uri", "video_id", "identity", "attributes"}``, where
        ``video_id`` is the faceset's id of the URI (``dflray.faceset.video_id``), ``identity``
        the label ("" when unlabelled) and ``attributes`` a ``dict[str, str]``.

    Raises:
        ValueError: on an empty manifest, a duplicate URI, a missing ``uri`` column or value, or an
            unknown manifest format (the message names the manifest and the row).

    Example:
        >>> rows = read_manifest(GenerateConfig(videos=("/data/a.mp4", VideoEntry("/data/b.mp4", "bob"))))
        >>> [(r["uri"], r["identity"]) for r in rows]
        [('/data/a.mp4', ''), ('/data/b.mp4', 'bob')]
    """
    if cfg.videos:
        name = "videos"
        raw = [_inline_entry(v, i) for i, v in enumerate(cfg.videos)]
    else:
        name = f"manifest {cfg.manifest}"
        raw = _read_manifest_file(cfg.manifest)
        base = _folder(cfg.manifest)
        raw = [(where, _resolve(base, uri), ident, attrs) for where, uri, ident, attrs in raw]
    if not raw:
        raise ValueError(f"{name}: lists no videos")
    seen: dict[str, str] = {}
    rows = []
    for where, uri, ident, attrs in raw:
        if uri in seen:
            raise ValueError(f"{name}: duplicate uri {uri!r} ({seen[uri]} and {where})")
        seen[uri] = where
        rows.append({"uri": uri, "video_id": _video_id(uri), "identity": ident, "attributes": attrs})
    return rows


_Raw = tuple[str, str, str, dict[str, str]]  # where (for errors), uri, identity, attributes


def _text(value: Any) -> str | None:
    """A manifest cell as a stripped string; None for missing values (null, NaN, empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    s = str(value).strip()
    return s or None


def _record(obj: Mapping[str, Any], where: str, origin: str) -> _Raw:
    uri = _text(obj.get("uri"))
    if uri is None:
        raise ValueError(f"{origin}: {where} has no uri")
    attrs: dict[str, str] = {}
    nested = obj.get("attributes")
    items = list(nested.items()) if isinstance(nested, Mapping) else []
    items += [(k, v) for k, v in obj.items() if not (k == "attributes" and isinstance(v, Mapping))]
    for key, value in items:
        key = str(key).strip()
        value = _text(value)
        if key and key not in _RESERVED_COLUMNS and value is not None:
            attrs[key] = value
    return where, uri, _text(obj.get("identity")) or "", attrs


def _inline_entry(v: VideoEntry | str | Mapping[str, Any], i: int) -> _Raw:
    if isinstance(v, str):
        return _record({"uri": v}, f"videos[{i}]", "videos")
    if isinstance(v, VideoEntry):
        return _record({"uri": v.uri, "identity": v.identity, "attributes": dict(v.attributes)}, f"videos[{i}]",
                       "videos")
    if isinstance(v, Mapping):
        return _record(v, f"videos[{i}]", "videos")
    raise ValueError(f"videos[{i}]: expected a URI or {{uri, identity, attributes}}, got {v!r}")


def _read_manifest_file(uri: str) -> list[_Raw]:
    origin = f"manifest {uri}"
    ext = posixpath.splitext(uri.split("?", 1)[0].lower())[1]
    if ext in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        with open_uri(uri, "rb") as f:
            table = pq.read_table(f)
        if "uri" not in table.column_names:
            raise ValueError(f"{origin}: has no 'uri' column (columns: {', '.join(table.column_names)})")
        return [_record(obj, f"row {i + 1}", origin) for i, obj in enumerate(table.to_pylist())]
    with open_uri(uri, "rb") as fb:
        text = io.TextIOWrapper(fb, encoding="utf-8-sig", newline="").read()
    if ext == ".csv":
        return _read_csv(text, origin)
    if ext in (".jsonl", ".ndjson"):
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{origin}: line {n} is not JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{origin}: line {n} must be an object with a uri, got {obj!r}")
            out.append(_record(obj, f"line {n}", origin))
        return out
    if ext in _TEXT_EXTENSIONS:
        return [(f"line {n}", line.strip(), "", {}) for n, line in enumerate(text.splitlines(), 1)
                if line.strip() and not line.strip().startswith("#")]
    raise ValueError(f"{origin}: unknown manifest format {ext or '(no extension)'!r}; use .csv, .parquet, "
                     f".jsonl or a text file of URIs ({', '.join(_TEXT_EXTENSIONS)})")


def _read_csv(text: str, origin: str) -> list[_Raw]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return []
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise ValueError(f"{origin}: column {dupes[0]!r} appears twice in the header")
    if "uri" not in header:
        raise ValueError(f"{origin}: has no 'uri' column (columns: {', '.join(header)})")
    out = []
    for cells in reader:
        n = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            raise ValueError(f"{origin}: line {n} has {len(cells)} cells, the header {len(header)}")
        out.append(_record(dict(zip(header, cells)), f"line {n}", origin))
    return out


def _folder(uri: str) -> str:
    """The folder a manifest's relative entries resolve against (absolute for local paths)."""
    if "://" in uri:
        return uri.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(uri))


def _resolve(base: str, uri: str) -> str:
    if "://" in uri or os.path.isabs(uri):
        return uri
    if "://" in base:
        proto, rest = base.split("://", 1)
        return f"{proto}://{posixpath.normpath(posixpath.join(rest, uri))}"
    return os.path.normpath(join(base, uri))


# ------------------------------------------------------------------------------ identities


def _embedding_matrix(values: Any) -> np.ndarray:
    """(N, D) float64 descriptors from an array or a column of arrays / None (missing rows are NaN)."""
    if hasattr(values, "to_pylist"):  # a pyarrow column
        values = values.to_pylist()
    if isinstance(values, np.ndarray) and values.dtype != object:
        e = values.astype(np.float64)
        return e.reshape(len(e), -1) if e.ndim != 2 else e
    rows = [None if v is None else np.asarray(v, np.float64).ravel() for v in values]
    dims = {r.size for r in rows if r is not None}
    if len(dims) > 1:
        raise ValueError(f"embedding rows have different lengths {sorted(dims)}")
    d = dims.pop() if dims else 0
    out = np.full((len(rows), d), np.nan)
    for i, r in enumerate(rows):
        if r is not None:
            out[i] = r
    return out


def dominant_embedding(video_faces: Mapping[str, Any], threshold: float = 0.6, *,
                       max_sample: int = 2000) -> np.ndarray | None:
    """The mean descriptor of the person with the most faces in one video.

    The definition is the merge's ``identity.swap=dominant`` (``dflray.merge.video.select_faces``): the
    face with the most other faces closer than ``threshold`` (a medoid of the densest group) and those
    neighbours form the core; the result is the mean of every face closer than ``threshold`` to the
    core's mean, keeping the closest one per frame (a person is in a frame once). So it is the identity
    of the faces the merge would replace.

    Args:
        video_faces: a video's face rows as columns: ``embedding`` ((N, 128) array, or a column of
            128-D arrays / None) and optionally ``frame_index`` ((N,)).
        threshold: dlib descriptor distance under which two faces are one person.
        max_sample: faces compared pairwise to find the core (a deterministic sample of longer videos).

    Returns:
        (D,) float64 mean descriptor, or None when no face has one.

    Example:
        >>> e = np.zeros((3, 128)); e[2] += 1.0  # two faces of one person, one of another
        >>> dominant_embedding({"frame_index": np.array([0, 1, 1]), "embedding": e})[:2]
        array([0., 0.])
    """
    emb = _embedding_matrix(video_faces["embedding"])
    n = len(emb)
    if n == 0 or emb.shape[1] == 0:
        return None
    frames = video_faces.get("frame_index") if hasattr(video_faces, "get") else None
    frames = np.arange(n) if frames is None else np.asarray(frames).ravel()
    if len(frames) != n:
        raise ValueError(f"frame_index has {len(frames)} rows, embedding {n}")
    have = np.flatnonzero(np.isfinite(emb).all(axis=1))
    if have.size == 0:
        return None
    sample = have
    if sample.size > max_sample:
        sample = np.sort(np.random.default_rng(0).choice(sample, max_sample, replace=False))
    e = emb[sample]
    close = np.linalg.norm(e[:, None, :] - e[None, :, :], axis=-1) < threshold
    centre = e[close[int(np.argmax(close.sum(1)))]].mean(0)
    dist = np.linalg.norm(emb[have] - centre, axis=1)
    best: dict[int, int] = {}  # frame -> row of `have` closest to the centre
    for j in np.flatnonzero(dist < threshold):
        f = int(frames[have[j]])
        if f not in best or dist[j] < dist[best[f]]:
            best[f] = j
    # the centre is inside the core's ball around its medoid, so the medoid is always kept
    return emb[have[sorted(best.values())]].mean(0)


def cluster_identities(embeddings: Mapping[str, np.ndarray], threshold: float = 0.6, prefix: str = "id-", *,
                       linkage: Literal["average", "complete"] = "average",
                       reserved: Iterable[str] = ()) -> dict[str, str]:
    """Names the people of unlabelled videos by clustering their dominant identity descriptors.

    Agglomerative clustering (scipy's hierarchical ``linkage``) merges the two closest groups while
    their distance stays under ``threshold``: with ``average`` linkage the mean descriptor distance
    between two groups' videos, with ``complete`` the largest. dlib calls two faces one person under
    0.6; average linkage lets a person's videos vary (lighting, age) without chaining distinct people
    together as single linkage would. Cost is quadratic in the number of videos (pairwise distances).

    Args:
        embeddings: video_id → its dominant mean descriptor (``dominant_embedding``).
        threshold: distance under which two videos are one person.
        prefix: the names' prefix.
        linkage: ``average`` or ``complete``.
        reserved: names already in use (the manifest's labels); a generated name among them is an error.

    Returns:
        video_id → identity name, ``prefix`` + a 4-digit index; clusters are numbered in the order of
        their smallest video_id, so the names do not depend on the dict's order.

    Raises:
        ValueError: on descriptors of different lengths or with NaN, or a name clash with ``reserved``.

    Example:
        >>> cluster_identities({"v1": np.zeros(128), "v2": np.full(128, 0.01), "v0": np.ones(128)}, 0.6, "id-")
        {'v0': 'id-0000', 'v1': 'id-0001', 'v2': 'id-0001'}
    """
    if not 0 < threshold:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if linkage not in ("average", "complete"):
        raise ValueError(f"linkage must be average or complete, got {linkage!r}")
    ids = sorted(embeddings)
    if not ids:
        return {}
    rows = [np.asarray(embeddings[v], np.float64).ravel() for v in ids]
    dims = {r.size for r in rows}
    if len(dims) != 1:
        raise ValueError(f"embeddings have different lengths {sorted(dims)}")
    x = np.stack(rows)
    bad = [v for v, r in zip(ids, rows) if not np.isfinite(r).all()]
    if bad:
        raise ValueError(f"embedding of video {bad[0]} is not finite")
    if len(ids) == 1:
        labels = np.zeros(1, np.int64)
    else:
        from scipy.cluster.hierarchy import fcluster
        from scipy.cluster.hierarchy import linkage as _linkage

        z = _linkage(x, method=linkage, metric="euclidean")
        # fcluster keeps merges with distance <= t; dlib's rule is strictly under the threshold
        labels = fcluster(z, t=np.nextafter(threshold, 0), criterion="distance")
    first: dict[int, int] = {}
    for i, lab in enumerate(labels):  # ids are sorted, so the first seen is the smallest video_id
        first.setdefault(int(lab), len(first))
    names = {v: f"{prefix}{first[int(lab)]:04d}" for v, lab in zip(ids, labels)}
    clash = sorted(set(names.values()) & set(reserved))
    if clash:
        raise ValueError(f"identity.prefix {prefix!r}: the found identity {clash[0]!r} is also a label in "
                         "the manifest; choose another prefix")
    return names


# ------------------------------------------------------------------------------ splits


def assign_splits(identities: Mapping[str, int], cfg: SplitsConfig, seed: int) -> dict[str, str]:
    """Puts every identity into one split so that the splits' *video* fractions approximate ``cfg``.

    Greedy: the identities are shuffled with the seed; the first ones go one each to the splits with a
    non-zero fraction, in order of decreasing fraction (ties in train/val/test order), so that every
    such split has someone; every further identity goes into the split furthest below its target
    number of videos (``fraction * total``). With fewer identities than non-empty splits the
    largest-fraction splits are filled first and the smallest stay empty. A split with fraction 0 gets
    nothing. A split ends at most the largest identity's video count above its target (and twice that
    below), so with many identities the video fractions are close to ``cfg``.

    Args:
        identities: identity → its number of videos.
        cfg: the split fractions.
        seed: the plan's seed.

    Returns:
        identity → ``train``, ``val`` or ``test``.

    Raises:
        ValueError: on a negative video count.

    Example:
        >>> s = assign_splits({f"p{i}": 1 for i in range(10)}, SplitsConfig(0.8, 0.1, 0.1), seed=0)
        >>> [list(s.values()).count(k) for k in ("train", "val", "test")]
        [8, 1, 1]
    """
    for name, count in identities.items():
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"identity {name!r}: number of videos must be an integer >= 0, got {count!r}")
    fractions = {s: float(getattr(cfg, s)) for s in SPLITS}
    live = sorted((s for s in SPLITS if fractions[s] > 0), key=lambda s: (-fractions[s], SPLITS.index(s)))
    names = sorted(identities)
    order = [names[i] for i in np.random.default_rng(plan_seed(seed, "splits")).permutation(len(names))]
    total = sum(int(identities[n]) for n in names)
    assigned = dict.fromkeys(live, 0)
    out: dict[str, str] = {}
    for k, name in enumerate(order):
        if k < len(live):  # one person per non-empty split first (the largest fractions when too few)
            split = live[k]
        else:
            split = max(live, key=lambda s: (fractions[s] * total - assigned[s], -live.index(s)))
        out[name] = split
        assigned[split] += int(identities[name])
    return {n: out[n] for n in names}


# ------------------------------------------------------------------------------ pairing


class _Pool:
    """The source identities of one split, as arrays (names sorted)."""

    def __init__(self, names: list[str], sources: Mapping[str, Mapping[str, Any]], group_by: str):
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        embs = [sources[n].get("embedding") for n in names]
        self.emb = _embedding_matrix(embs) if names else np.zeros((0, 0))
        self.has_emb = np.isfinite(self.emb).all(axis=1) if self.emb.shape[1] else np.zeros(len(names), bool)
        self.group = np.array([_text((sources[n].get("attributes") or {}).get(group_by)) if group_by else None
                               for n in names], dtype=object)
        self.used = np.zeros(len(names), np.int64)


def _check_target(t: Mapping[str, Any], i: int) -> str:
    for key in ("video_id", "identity", "split"):
        if key not in t:
            raise ValueError(f"targets[{i}] has no {key!r}")
    vid = t["video_id"]
    if not isinstance(vid, str) or not vid:
        raise ValueError(f"targets[{i}].video_id must be a non-empty string, got {vid!r}")
    return vid


def _preference(t: Mapping[str, Any], pool: _Pool, cfg: PairingConfig, seed: int,
                excluded: Mapping[str, set[str]]) -> np.ndarray:
    """Indices into ``pool`` of the sources allowed for target ``t``, best first."""
    n = len(pool.names)
    ok = np.ones(n, bool)
    ident = t["identity"]
    for other in excluded.get(ident, set()) | {ident}:
        if other in pool.index:
            ok[pool.index[other]] = False
    if cfg.policy == "group":
        g = _text((t.get("attributes") or {}).get(cfg.group_by))
        if g is None:
            return np.zeros(0, np.int64)
        ok &= pool.group == g
    e = t.get("embedding")
    e = None if e is None else np.asarray(e, np.float64).ravel()
    if cfg.policy == "nearest" and e is not None and np.isfinite(e).all():
        if pool.has_emb.any() and e.size != pool.emb.shape[1]:
            raise ValueError(f"target {t['video_id']}: embedding has {e.size} values, the sources' {pool.emb.shape[1]}")
        keys = np.full(n, np.inf)  # sources without an embedding last
        if pool.has_emb.any():
            keys[pool.has_emb] = np.linalg.norm(pool.emb[pool.has_emb] - e, axis=1)
    else:
        # drawn from the target's own seed, so each video's draw is independent of the others
        keys = np.random.default_rng(plan_seed(seed, "pair", t["video_id"])).random(n)
    order = np.lexsort((np.arange(n), keys))  # ties by name: the pool's names are sorted
    return order[ok[order]]


def pair(targets: Sequence[Mapping[str, Any]], sources: Mapping[str, Mapping[str, Any]], cfg: PairingConfig,
         seed: int) -> list[dict]:
    """Chooses the source identities swapped onto each destination (target) video.

    Each target gets up to ``cfg.fakes_per_video`` distinct sources that are in its split, are not its
    own identity, are not excluded with it (``cfg.exclude``, either direction), have videos to train
    on, and have fewer than ``cfg.max_per_source`` fakes. Among those:

    - ``random``: a random order drawn from the target's own seed (``plan_seed(seed, "pair", video_id)``).
    - ``nearest``: by Euclidean distance of the source's mean descriptor to the target's ``embedding``
      (ties by name; sources without an embedding last, by name). A target without an embedding gets
      the random order.
    - ``group``: the random order restricted to sources whose ``attributes[cfg.group_by]`` equals the
      target's; a target without that attribute gets none.

    Sources are handed out in rounds (each target's first choice, then each target's second, …) with
    the targets in a seeded random order, so a ``max_per_source`` limit is shared fairly rather than
    used up by the first videos. Targets that cannot get as many sources as asked get fewer; this is
    never an error (the caller logs it).

    Args:
        targets: rows ``{"video_id", "identity", "split", "attributes", "embedding"}`` (embedding: a
            descriptor or None).
        sources: identity → ``{"split", "attributes", "embedding", "videos"}`` (a source with
            ``videos == 0`` is never chosen; a missing count is taken as usable).
        cfg: the pairing policy.
        seed: the plan's seed.

    Returns:
        One row per pair, ``{"video_id", "source_identity", "target_identity", "split"}``, ordered by
        video_id and, within a video, by choice (best first).

    Raises:
        ValueError: on a target without ``video_id``/``identity``/``split``, a video listed twice, or
            descriptors of different lengths.

    Example:
        >>> src = {"a": {"split": "train", "attributes": {}, "embedding": None, "videos": 1},
        ...        "b": {"split": "train", "attributes": {}, "embedding": None, "videos": 2}}
        >>> tgt = [{"video_id": "v1", "identity": "a", "split": "train", "attributes": {}, "embedding": None}]
        >>> pair(tgt, src, PairingConfig(), seed=0)
        [{'video_id': 'v1', 'source_identity': 'b', 'target_identity': 'a', 'split': 'train'}]
    """
    seen: set[str] = set()
    for i, t in enumerate(targets):
        vid = _check_target(t, i)
        if vid in seen:
            raise ValueError(f"targets: video {vid} is listed twice")
        seen.add(vid)
    if cfg.fakes_per_video == 0 or not targets:
        return []
    by_split: dict[str, list[str]] = {}
    for name in sorted(sources):
        s = sources[name]
        if "split" not in s:
            raise ValueError(f"sources[{name!r}] has no 'split'")
        if s.get("videos") is None or int(s["videos"]) > 0:
            by_split.setdefault(s["split"], []).append(name)
    pools = {split: _Pool(names, sources, cfg.group_by) for split, names in by_split.items()}
    excluded: dict[str, set[str]] = {}
    for a, b in cfg.exclude:
        excluded.setdefault(a, set()).add(b)
        excluded.setdefault(b, set()).add(a)

    ordered = sorted(targets, key=lambda t: t["video_id"])
    turn = [ordered[i] for i in np.random.default_rng(plan_seed(seed, "pair-order")).permutation(len(ordered))]
    cap = np.iinfo(np.int64).max if cfg.max_per_source is None else cfg.max_per_source
    chosen: dict[str, list[int]] = {t["video_id"]: [] for t in ordered}
    # Each target keeps only its best few remaining sources between rounds (its whole order, targets ×
    # sources, would not fit in memory at scale). A source passed over is taken by this target or full,
    # and stays so, so the kept window only moves forward; when it runs dry the order is recomputed.
    keep = 4 * cfg.fakes_per_video + 16
    window: dict[str, tuple[np.ndarray, bool]] = {}  # video_id -> (best remaining first, reaches the end)
    for _ in range(cfg.fakes_per_video):
        progress = False
        for t in turn:
            pool = pools.get(t["split"])
            if pool is None:
                continue
            vid = t["video_id"]
            pick = -1
            for attempt in range(2):
                if attempt or vid not in window:
                    full = _preference(t, pool, cfg, seed, excluded)
                    window[vid] = (full, True)
                order, to_end = window[vid]
                free = (pool.used[order] < cap) & ~np.isin(order, chosen[vid])
                if free.any():
                    pos = int(np.argmax(free))
                    pick = int(order[pos])
                    rest = order[pos + 1:pos + 1 + keep]
                    window[vid] = (rest.astype(np.int32), to_end and pos + 1 + keep >= order.size)
                    break
                if to_end:
                    window[vid] = (order[:0], True)
                    break
            if pick >= 0:
                chosen[vid].append(pick)
                pool.used[pick] += 1
                progress = True
        if not progress:
            break
    return [{"video_id": t["video_id"], "source_identity": pools[t["split"]].names[j],
             "target_identity": t["identity"], "split": t["split"]}
            for t in ordered for j in chosen[t["video_id"]]]
