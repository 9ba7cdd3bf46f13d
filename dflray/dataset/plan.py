"""The dataset job's plan, as pure functions (no Ray, no video I/O).

``dflray generate`` starts from a manifest of real videos and decides, before any heavy work, who is
who, which split each person is in and which source identity goes onto which destination video:

- ``read_manifest``: the plan's videos, inline or from a CSV / Parquet / JSONL / text manifest on any
  fsspec URL, as rows ``{uri, video_id, identity, attributes}``.
- ``dominant_embedding``: the mean dlib descriptor of the person with the most faces in one video, the
  same "dominant identity" the merge swaps (``dflray.merge.video.select_faces``).
- ``cluster_identities``: names the people of unlabelled videos by agglomerative (average-linkage)
  clustering of those descriptors at dlib's same-person distance (0.6); above 2,000 videos on a faiss
  nearest-neighbour graph, so 100,000 videos plan in seconds (``bench/plan_scale.py``).
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
from dflray.io.storage import normalize_uri, open_uri, resolve_entry

__all__ = ["SPLITS", "assign_methods", "assign_splits", "cluster_identities", "dominant_embedding", "pair", "plan_seed",
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
        raw = [(where, resolve_entry(base, uri), ident, attrs) for where, uri, ident, attrs in raw]
    if not raw:
        raise ValueError(f"{name}: lists no videos")
    seen: dict[str, str] = {}
    rows = []
    for where, uri, ident, attrs in raw:
        uri = normalize_uri(uri)  # the spelling extraction keys a video by: a.mp4 and ./a.mp4 are one video
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


def _cell(value: Any, what: str, where: str, origin: str) -> str | None:
    """``_text`` of a cell that must be a scalar (a list or an object is a malformed row)."""
    if isinstance(value, (Mapping, list, tuple, set, np.ndarray)):
        raise ValueError(f"{origin}: {where}: {what} must be a string or a number, got {value!r}")
    return _text(value)


def _record(obj: Mapping[str, Any], where: str, origin: str) -> _Raw:
    uri = obj.get("uri")
    if uri is not None and not isinstance(uri, str):
        raise ValueError(f"{origin}: {where}: uri must be a string, got {uri!r}")
    uri = _text(uri)
    if uri is None:
        raise ValueError(f"{origin}: {where} has no uri")
    if any(c in uri for c in "\r\n\x00"):
        raise ValueError(f"{origin}: {where}: uri {uri!r} holds a line break or NUL (an unclosed quote?)")
    attrs: dict[str, str] = {}
    nested = obj.get("attributes")
    items = list(nested.items()) if isinstance(nested, Mapping) else []
    items += [(k, v) for k, v in obj.items() if not (k == "attributes" and isinstance(v, Mapping))]
    for key, value in items:
        key = str(key).strip()
        if key and key not in _RESERVED_COLUMNS:
            value = _cell(value, f"attribute {key!r}", where, origin)
            if value is not None:
                attrs[key] = value
    return where, uri, _cell(obj.get("identity"), "identity", where, origin) or "", attrs


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
        raw = fb.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{origin}: line {line} is not UTF-8 text ({e.reason} at byte {e.start})") from None
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
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise ValueError(f"{origin}: line 1 is not CSV ({e})") from None
    if header is None:
        return []
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise ValueError(f"{origin}: column {dupes[0]!r} appears twice in the header")
    if "uri" not in header:
        raise ValueError(f"{origin}: has no 'uri' column (columns: {', '.join(header)})")
    out = []
    while True:
        n = reader.line_num + 1  # the row's first line
        try:
            cells = next(reader, None)
        except csv.Error as e:
            raise ValueError(f"{origin}: line {n} is not CSV ({e})") from None
        if cells is None:
            break
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


_EXACT_MAX = 2000  # videos clustered by scipy over all their pairwise distances (memory n²/2 doubles)
_COMPONENT_MAX = 2000  # a neighbour-graph component up to this size: scipy over its pairwise distances
_NEIGHBOURS = 16  # k of the k-nearest-neighbour graph above _EXACT_MAX videos
_FLAT_MAX = 20000  # exact (flat) neighbour search up to this many vectors, inverted lists (IVF) above


def _neighbour_index(x32: np.ndarray, flat_max: int, nprobe: int = 8) -> Any:
    """A faiss L2 index over ``x32``: exact (flat) up to ``flat_max`` rows, else inverted lists whose
    cells are centred on a seeded sample of the rows (no k-means, so the cells do not depend on the
    thread count) and ``nprobe`` cells searched per query."""
    import faiss

    n, d = x32.shape
    if n <= flat_max:
        index = faiss.IndexFlatL2(d)
    else:
        nlist = max(1, int(2 * math.sqrt(n)))
        quantizer = faiss.IndexFlatL2(d)
        quantizer.add(x32[np.sort(np.random.default_rng(0).choice(n, nlist, replace=False))])
        # trained, as its quantizer holds nlist centroids; faiss's wrapper keeps the quantizer alive
        index = faiss.IndexIVFFlat(quantizer, d, nlist)
        index.nprobe = min(nprobe, nlist)
    index.add(x32)
    return index


def _components(n: int, rows: np.ndarray, cols: np.ndarray) -> list[np.ndarray]:
    """The connected components of the undirected graph ``rows[i] — cols[i]`` over ``n`` nodes, each a
    sorted array of nodes, in the order of their smallest node."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(n, n))
    _, lab = connected_components(graph, directed=False)
    order = np.argsort(lab, kind="stable")
    parts = np.split(order, np.flatnonzero(np.diff(lab[order])) + 1)
    return sorted(parts, key=lambda p: int(p[0]))


def _scipy_labels(x: np.ndarray, threshold: float, method: str) -> np.ndarray:
    """Average/complete-linkage flat clusters of ``x`` cut strictly under ``threshold`` (scipy, exact)."""
    if len(x) == 1:
        return np.zeros(1, np.int64)
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage as _linkage

    z = _linkage(x, method=method, metric="euclidean")
    # fcluster keeps merges with distance <= t; dlib's rule is strictly under the threshold
    return fcluster(z, t=np.nextafter(threshold, 0), criterion="distance") - 1


def _graph_labels(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, threshold: float, method: str) -> np.ndarray:
    """Average/complete linkage of ``x`` restricted to groups joined by a graph edge.

    Merges, smallest first, the two groups whose linkage distance is smallest while it stays under
    ``threshold``; only groups that share an edge ``rows[i] — cols[i]`` are candidates. The linkage
    distance itself is exact: the mean (average) or largest (complete) of *all* distances between the two
    groups' members, kept per neighbouring pair as a sum or maximum, updated Lance–Williams style on a
    merge, and computed from the members when a neighbour was only the other half's neighbour. Two groups
    whose average (or largest) distance is under the threshold have a pair under it, so when the edges
    hold every pair under the threshold this is exactly scipy's result.
    """
    import heapq

    from scipy.spatial.distance import cdist

    m = len(x)
    average = method == "average"
    size = [1] * m
    members: list[list[int] | None] = [[i] for i in range(m)]
    nbr: list[dict[int, float] | None] = [{} for _ in range(m)]
    d = np.linalg.norm(x[rows] - x[cols], axis=1)
    heap = []
    for a, b, v in zip(rows.tolist(), cols.tolist(), d.tolist()):
        if a != b and b not in nbr[a]:
            nbr[a][b] = nbr[b][a] = v
            heap.append((v, min(a, b), max(a, b)))
    heapq.heapify(heap)

    def between(a: int, b: int) -> float:
        dist = cdist(x[members[a]], x[members[b]])
        return float(dist.sum()) if average else float(dist.max())

    while heap:
        v, a, b = heapq.heappop(heap)
        if v >= threshold:
            break
        if members[a] is None or members[b] is None:  # stale: one side merged since (a live pair never changes)
            continue
        c = len(members)
        members.append(members[a] + members[b])
        size.append(size[a] + size[b])
        na, nb = nbr[a], nbr[b]
        merged: dict[int, float] = {}
        for o in sorted((set(na) | set(nb)) - {a, b}):
            sa = na[o] if o in na else between(a, o)
            sb = nb[o] if o in nb else between(b, o)
            s = sa + sb if average else max(sa, sb)
            merged[o] = s
            no = nbr[o]
            no.pop(a, None)
            no.pop(b, None)
            no[c] = s
            heapq.heappush(heap, (s / (size[c] * size[o]) if average else s, o, c))
        nbr.append(merged)
        members[a] = members[b] = nbr[a] = nbr[b] = None
    labels = np.empty(m, np.int64)
    for k, group in enumerate(g for g in members if g is not None):
        labels[group] = k
    return labels


def _cluster_labels(x: np.ndarray, threshold: float, method: str, *, exact_max: int = _EXACT_MAX,
                    component_max: int = _COMPONENT_MAX, neighbours: int = _NEIGHBOURS,
                    flat_max: int = _FLAT_MAX) -> np.ndarray:
    """Flat cluster labels of the rows of ``x`` (see ``cluster_identities`` for the method)."""
    n = len(x)
    if n <= exact_max:
        return _scipy_labels(x, threshold, method)
    x32 = np.ascontiguousarray(x, np.float32)
    dist, idx = _neighbour_index(x32, flat_max).search(x32, min(neighbours + 1, n))
    # candidate edges: faiss's float32 squared distances, with a margin (an extra edge costs only time)
    keep = (idx >= 0) & (dist < threshold * threshold * (1 + 1e-3) + 1e-6)
    rows = np.repeat(np.arange(n), idx.shape[1])[keep.ravel()]
    cols = idx.ravel()[keep.ravel()]
    keep = rows != cols
    rows, cols = rows[keep], cols[keep]
    labels = np.empty(n, np.int64)
    next_label = 0
    comps = _components(n, rows, cols)
    comp_of = np.empty(n, np.int64)
    for k, part in enumerate(comps):
        comp_of[part] = k
    edge_comp = comp_of[rows]
    edge_bounds = np.searchsorted(np.sort(edge_comp), np.arange(len(comps) + 1))
    edge_order = np.argsort(edge_comp, kind="stable")
    for k, part in enumerate(comps):
        if part.size == 1:
            local = np.zeros(1, np.int64)
        elif part.size <= component_max:
            local = _scipy_labels(x[part], threshold, method)
        else:
            e = edge_order[edge_bounds[k]:edge_bounds[k + 1]]
            pos = np.searchsorted(part, np.concatenate([rows[e], cols[e]]))
            local = _graph_labels(x[part], pos[:e.size], pos[e.size:], threshold, method)
        labels[part] = next_label + local
        next_label += int(local.max()) + 1
    return labels


def cluster_identities(embeddings: Mapping[str, np.ndarray], threshold: float = 0.6, prefix: str = "id-", *,
                       linkage: Literal["average", "complete"] = "average",
                       reserved: Iterable[str] = ()) -> dict[str, str]:
    """Names the people of unlabelled videos by clustering their dominant identity descriptors.

    Agglomerative clustering merges the two closest groups while their distance stays under
    ``threshold``: with ``average`` linkage the mean descriptor distance between two groups' videos, with
    ``complete`` the largest. dlib calls two faces one person under 0.6; average linkage lets a person's
    videos vary (lighting, age) without chaining distinct people together as single linkage would.

    Up to 2,000 videos this is scipy's hierarchical ``linkage`` over all pairwise distances. Above, the
    pairwise distances are never all computed: faiss finds each video's 16 nearest videos (exactly up to
    20,000 videos, with inverted lists above), the pairs under the threshold form a graph, and each of its
    connected components is clustered on its own: by scipy when it has up to 2,000 videos, else by
    average (complete) linkage restricted to groups joined by an edge, with each candidate merge's linkage
    distance computed exactly from all the two groups' members. Two groups can only merge when some pair
    of their videos is under the threshold, so no group ever spans two components and, as long as the
    graph holds those pairs, the result is the exact one; it can differ only where a video has more than
    16 neighbours under the threshold and the missing pairs were the only ones joining two groups (the
    unit tests measure agreement with scipy on inputs where that happens). Memory grows with the number
    of videos, time about as n·√n (the inverted lists) on well-separated people; a single blob of
    thousands of videos all within the threshold costs its size squared.

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
    labels = _cluster_labels(x, threshold, linkage)
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


_PAIR_EXACT_MAX = 256  # nearest: up to this many sources with a descriptor, each target's whole order (numpy)
_PAIR_FLAT_MAX = 8192  # nearest: exact faiss search up to this many such sources, inverted lists above


class _Pool:
    """The source identities of one split, as arrays (names sorted), with what pairing needs to find
    each target's best remaining sources without ordering the whole pool per target."""

    def __init__(self, names: list[str], sources: Mapping[str, Mapping[str, Any]], group_by: str):
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        embs = [sources[n].get("embedding") for n in names]
        self.emb = _embedding_matrix(embs) if names else np.zeros((0, 0))
        self.has_emb = np.isfinite(self.emb).all(axis=1) if self.emb.shape[1] else np.zeros(len(names), bool)
        self.with_emb = np.flatnonzero(self.has_emb)  # sorted: ties by name
        self.without_emb = np.flatnonzero(~self.has_emb)
        self.group = [_text((sources[n].get("attributes") or {}).get(group_by)) if group_by else None
                      for n in names]
        self.members: dict[str | None, np.ndarray] = {}
        for g in sorted(set(self.group) - {None}):
            self.members[g] = np.flatnonzero(np.array([x == g for x in self.group], bool))
        self.all = np.arange(len(names))
        self.used = np.zeros(len(names), np.int64)
        self.free = {None: len(names), **{g: m.size for g, m in self.members.items()}}  # sources not full
        self.search: Any = None  # faiss index over emb[with_emb] (nearest, large pools)
        self.max_sq = float((self.emb[self.with_emb] ** 2).sum(1).max()) if self.with_emb.size else 0.0

    def use(self, j: int, cap: int) -> None:
        self.used[j] += 1
        if self.used[j] == cap:
            self.free[None] -= 1
            if self.group[j] is not None:
                self.free[self.group[j]] -= 1


class _Order:
    """One target's preference over its pool, revealed a block at a time, best first.

    ``buf[pos:]`` is the revealed part not yet scanned; ``seen`` every pool index revealed so far.
    """

    __slots__ = ("buf", "pos", "seen", "level", "done", "cand", "emb", "first", "row", "group")

    def __init__(self, cand: np.ndarray, emb: np.ndarray | None, first: int, row: int = -1,
                 group: str | None = None):
        self.buf = np.zeros(0, np.int64)
        self.pos = 0
        self.seen = np.zeros(0, np.int64)
        self.level = 0
        self.done = cand.size == 0 and emb is None
        self.cand = cand  # random order: the candidate pool indices (all, or the target's group)
        self.emb = emb  # nearest order: the target's descriptor
        self.first = first
        self.row = row  # nearest: the target's row of the batched first search
        self.group = group  # group policy: the target's group (whose count of sources not full applies)


def _random_block(o: _Order, seed: int, vid: str) -> np.ndarray:
    """The next block of a seeded random order of ``o.cand``: ``first``·2^level draws without
    replacement (those already revealed dropped), then, once that would reach half the candidates, the
    rest in random order. Each level has its own seed, so a target's order does not depend on the
    others; the order is a uniformly random permutation (every step treats the candidates alike)."""
    m = o.cand.size
    rng = np.random.default_rng(plan_seed(seed, "pair", vid) if o.level == 0 else
                                plan_seed(seed, "pair", vid, str(o.level)))
    want = o.first << o.level
    o.level += 1
    if o.seen.size + want >= m // 2:
        rest = np.ones(m, bool)
        rest[o.seen] = False
        pos = np.flatnonzero(rest)
        pos = pos[rng.permutation(pos.size)]
        o.done = True
    else:
        pos = rng.choice(m, want, replace=False)
        if o.seen.size:
            pos = pos[~np.isin(pos, o.seen)]
    o.seen = np.concatenate([o.seen, pos])
    return o.cand[pos]


def _nearest_block(o: _Order, pool: _Pool, first_hits: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """The next block of the sources by distance of their descriptor to ``o.emb`` (ties by name), then
    those without a descriptor, by name.

    Small pools are ordered whole. Larger ones ask faiss for the nearest ``first``·4^level and re-rank
    them by the exact (float64) distance; with the exact index only those certainly nearer than every
    source not returned are revealed (faiss's float32 distance with a margin), so the order is the exact
    one; with inverted lists (pools over ``_PAIR_FLAT_MAX``) a nearer source in an unsearched cell can
    come later.
    """
    ids = pool.with_emb
    while True:
        k = o.first << (2 * o.level)
        level = o.level
        o.level += 1
        if ids.size <= _PAIR_EXACT_MAX or k * 2 >= ids.size:
            block = ids
            if ids.size:
                block = ids[np.lexsort((ids, np.linalg.norm(pool.emb[ids] - o.emb, axis=1)))]
            o.done = True
            if o.seen.size:
                block = block[~np.isin(block, o.seen)]
            return np.concatenate([block, pool.without_emb])
        if level == 0 and first_hits is not None:
            sq, lab = first_hits[0][o.row], first_hits[1][o.row]
        else:
            sq, lab = pool.search.search(o.emb[None].astype(np.float32), k)
            sq, lab = sq[0], lab[0]
        found = lab >= 0
        sq, cand = sq[found], ids[lab[found]]
        dist = np.linalg.norm(pool.emb[cand] - o.emb, axis=1)
        order = np.lexsort((cand, dist))
        cand, dist = cand[order], dist[order]
        if pool.with_emb.size <= _PAIR_FLAT_MAX and sq.size:
            tol = 1e-4 * (float(o.emb @ o.emb) + pool.max_sq) + 1e-9
            cand = cand[dist * dist < float(sq.max()) - tol]
        if o.seen.size:
            cand = cand[~np.isin(cand, o.seen)]
        if cand.size:
            o.seen = np.concatenate([o.seen, cand])
            return cand


def _check_target(t: Mapping[str, Any], i: int) -> str:
    for key in ("video_id", "identity", "split"):
        if key not in t:
            raise ValueError(f"targets[{i}] has no {key!r}")
    vid = t["video_id"]
    if not isinstance(vid, str) or not vid:
        raise ValueError(f"targets[{i}].video_id must be a non-empty string, got {vid!r}")
    return vid


def assign_methods(items: Sequence[str], shares: Sequence[tuple[str, float]], seed: int) -> dict[str, str]:
    """Each planned fake's forgery method, by exact shares.

    The fakes are ordered by a seeded hash of their ids and cut into runs of ``round(share * n)`` (largest
    remainders get the leftovers, ties to the earlier method), so the counts match the shares as closely
    as whole fakes can, and a fake's method depends only on the seed, its id and the plan's fakes.

    Args:
        items: the fakes' ids.
        shares: (method, share) in the plan's order; shares sum to 1.
        seed: the plan's seed.

    Example:
        >>> got = assign_methods([f"f{i}" for i in range(10)], [("sbi", 0.3), ("liae", 0.7)], seed=0)
        >>> sorted(got.values()).count("sbi"), sorted(got.values()).count("liae")
        (3, 7)
    """
    n = len(items)
    exact = [share * n for _, share in shares]
    counts = [int(x) for x in exact]
    leftovers = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in leftovers[:n - sum(counts)]:
        counts[i] += 1
    order = sorted(items, key=lambda item: (plan_seed(seed, "method", item), item))
    out: dict[str, str] = {}
    start = 0
    for (name, _), count in zip(shares, counts):
        for item in order[start:start + count]:
            out[item] = name
        start += count
    return out


def pair(targets: Sequence[Mapping[str, Any]], sources: Mapping[str, Mapping[str, Any]], cfg: PairingConfig,
         seed: int) -> list[dict]:
    """Chooses the source identities swapped onto each destination (target) video.

    Each target gets up to ``cfg.fakes_per_video`` distinct sources that are in its split, are not its
    own identity, are not excluded with it (``cfg.exclude``, either direction), have videos to train
    on, and have fewer than ``cfg.max_per_source`` fakes. Among those:

    - ``random``: a uniformly random order drawn from the target's own seed (``plan_seed(seed, "pair",
      video_id)``), revealed a few draws at a time, so a target costs time in the sources it looks at,
      not in the pool's size.
    - ``nearest``: by Euclidean distance of the source's mean descriptor to the target's ``embedding``
      (ties by name; sources without an embedding last, by name). A target without an embedding gets
      the random order. Pools of more than 256 sources with a descriptor are searched with faiss (the
      nearest few per target, re-ranked exactly, more when those are used up): exact up to 8,192 such
      sources in the split, approximate above (inverted lists: a nearer source can be passed over).
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
    # Each target's preference is revealed a block at a time (its whole order, targets × sources, would
    # cost quadratic time): a source passed over is taken by this target, full or not allowed, and stays
    # so, so one forward scan per target serves every round.
    first = 4 * cfg.fakes_per_video + 16
    orders: dict[str, _Order] = {}
    hits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, pool in pools.items():
        rows = []
        for t in ordered:
            if t["split"] != split or cfg.policy != "nearest":
                continue
            e = t.get("embedding")
            e = None if e is None else np.asarray(e, np.float64).ravel()
            if e is None or not np.isfinite(e).all():
                continue
            if pool.with_emb.size and e.size != pool.emb.shape[1]:
                raise ValueError(f"target {t['video_id']}: embedding has {e.size} values, the sources' "
                                 f"{pool.emb.shape[1]}")
            orders[t["video_id"]] = _Order(pool.all, e, first, len(rows))
            rows.append(e)
        if rows and _PAIR_EXACT_MAX < pool.with_emb.size and first * 2 < pool.with_emb.size:
            pool.search = _neighbour_index(np.ascontiguousarray(pool.emb[pool.with_emb], np.float32),
                                           _PAIR_FLAT_MAX, nprobe=16)
            hits[split] = pool.search.search(np.asarray(rows, np.float32), first)
    bad: dict[tuple[str, str], frozenset[int]] = {}
    for _ in range(cfg.fakes_per_video):
        progress = False
        for t in turn:
            pool = pools.get(t["split"])
            if pool is None:
                continue
            vid, ident = t["video_id"], t["identity"]
            o = orders.get(vid)
            if o is None:
                group = None
                if cfg.policy == "group":
                    group = _text((t.get("attributes") or {}).get(cfg.group_by))
                    cand = pool.members.get(group, np.zeros(0, np.int64))
                else:
                    cand = pool.all
                o = orders[vid] = _Order(cand, None, first, group=group)
            key = (t["split"], ident)
            if key not in bad:
                bad[key] = frozenset(pool.index[x] for x in excluded.get(ident, set()) | {ident} if x in pool.index)
            no = bad[key]
            mine = chosen[vid]
            pick = -1
            while pick < 0:
                for off, j in enumerate(o.buf[o.pos:].tolist()):
                    if j not in no and pool.used[j] < cap and j not in mine:
                        pick = j
                        o.pos += off + 1
                        break
                else:
                    o.pos = o.buf.size
                    if o.done or pool.free.get(o.group, 0) == 0:
                        break
                    o.buf = (_random_block(o, seed, vid) if o.emb is None else
                             _nearest_block(o, pool, (hits[t["split"]] if t["split"] in hits else None)))
                    o.pos = 0
            if pick >= 0:
                mine.append(pick)
                pool.use(pick, cap)
                progress = True
        if not progress:
            break
    return [{"video_id": t["video_id"], "source_identity": pools[t["split"]].names[j],
             "target_identity": t["identity"], "split": t["split"]}
            for t in ordered for j in chosen[t["video_id"]]]
