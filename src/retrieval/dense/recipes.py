"""Dense index recipes: TOML files in ``indexes/`` (source tree) or ``retrieval/indexes`` (installed).

A recipe's ``[dense]`` table names a FAISS factory string with placeholders (``{nlist}``, ``{m}``,
``{M}``) and the search parameters (nprobe, ef_search, rescore_multiplier) and the rescoring store
(``store`` = float16 | int8 | int4 | pq | none; for int8, ``store_scale`` = vector | dimension; for
int8 and int4 an optional ``store_pca_dim``; for pq, ``store_pq_dims_per_code`` (m = dim / it sub-vectors, 8 bits each)). The
placeholders are filled from the corpus size and the embedding dimension by ``plan``.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

from ..errors import InputError
from ..progress import note

AUTO = "auto"
# "auto" is this recipe, or flat below its min_vectors (exact search costs little there, and IVF
# cannot train well): the recipe file alone says where the switch is
AUTO_LARGE = "pq"


def recipe_dirs() -> list[Path]:
    here = Path(__file__).resolve()
    dirs = [here.parents[1] / "indexes",   # installed: site-packages/retrieval/indexes
            here.parents[3] / "indexes"]   # source tree: <repo>/indexes
    return [d for d in dirs if d.is_dir()]


def available_recipes() -> list[str]:
    names = {AUTO}
    for d in recipe_dirs():
        for f in d.glob("*.toml"):
            try:
                if "dense" in tomllib.loads(f.read_text()):
                    names.add(f.stem)
            except (OSError, tomllib.TOMLDecodeError):
                continue
    return sorted(names)


def load_recipe(name: str | None) -> dict:
    """The recipe ``name`` (or a path to a .toml file) as a flat dict with 'name' and its [dense] keys.

    ``None`` and ``"auto"`` give the automatic choice ({"name": "auto"}), resolved by ``plan``.
    """
    if name is None or name == AUTO:
        return {"name": AUTO}
    path = Path(name)
    if not (path.suffix == ".toml" and path.is_file()):
        path = next((d / f"{name}.toml" for d in recipe_dirs() if (d / f"{name}.toml").is_file()), None)
        if path is None:
            raise InputError(f"unknown recipe {name!r}; available: {', '.join(available_recipes())}")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: not a readable recipe ({exc})") from None
    dense = data.get("dense")
    if not isinstance(dense, dict) or "factory" not in dense:
        raise InputError(f"{path}: recipe has no [dense] table with a factory string")
    return {"name": path.stem, "description": data.get("description", ""), "path": str(path), **dense}


def choose_nlist(n: int, recipe: dict) -> int:
    """About 4 sqrt(n) inverted lists (a power of two), with enough training points per list."""
    min_pts = int(recipe.get("min_points_per_list", 39))
    target = 4 * math.sqrt(max(n, 1))
    nlist = 1 << max(0, round(math.log2(target)))
    nlist = min(nlist, int(recipe.get("max_nlist", 65536)))
    while nlist > 1 and n < nlist * min_pts:
        nlist //= 2
    return max(1, nlist)


def _pq_m(dim: int, dims_per_code: int) -> int:
    m = max(1, dim // dims_per_code)
    while dim % m:
        m -= 1
    return m


def plan(name: str | None, n: int, dim: int, quiet: bool = False) -> dict:
    """Resolve a recipe for ``n`` vectors of ``dim`` dims: the concrete factory string and params."""
    recipe = load_recipe(name)
    auto = recipe["name"] == AUTO
    if auto:
        recipe = load_recipe(AUTO_LARGE)
    if n < int(recipe.get("min_vectors", 0)):
        if not quiet:
            why = (f"{n} passages (< {recipe['min_vectors']})" if auto else
                   f"{n} passages is too few to train recipe {recipe['name']!r} (needs {recipe['min_vectors']})")
            note(f"{why}: using exact flat search (recipe 'flat')")
        recipe = load_recipe("flat")
    fmt = {"dim": dim}
    factory = recipe["factory"]
    if "{nlist}" in factory:
        fmt["nlist"] = choose_nlist(n, recipe)
    if "{m}" in factory:
        fmt["m"] = _pq_m(dim, int(recipe.get("dims_per_code", 8)))
    if "{M}" in factory:
        fmt["M"] = int(recipe.get("M", 32))
    try:
        factory = factory.format(**fmt)
    except KeyError as exc:
        raise InputError(f"recipe {recipe['name']!r}: unknown placeholder {exc} in factory {recipe['factory']!r}") from None
    kind = recipe.get("kind", "float")
    if kind not in ("float", "binary"):
        raise InputError(f"recipe {recipe['name']!r}: kind must be 'float' or 'binary' (got {kind!r})")
    store = recipe.get("store", "float16")
    if store not in ("float16", "int8", "int4", "pq", "none"):
        raise InputError(f"recipe {recipe['name']!r}: store must be float16, int8, int4, pq or none (got {store!r})")
    if kind == "binary" and store == "none":
        raise InputError(f"recipe {recipe['name']!r}: binary codes need a rescoring store (float16, int8, int4 or pq)")
    store_options = {}
    # recipe key -> (write_store option, the stores it applies to)
    for key, (option, applies) in {"store_scale": ("scale", ("int8",)),
                                   "store_pca_dim": ("pca_dim", ("int8", "int4")),
                                   "store_pq_dims_per_code": ("dims_per_code", ("pq",))}.items():
        if key in recipe:
            if store not in applies:
                raise InputError(f"recipe {recipe['name']!r}: {key} is for store = {' or '.join(applies)}, not {store!r}")
            store_options[option] = recipe[key]
    if store == "int8":
        store_options.setdefault("scale", "vector")
    if store == "pq":  # m sub-vectors of about store_pq_dims_per_code dims each (m divides dim)
        per = store_options.pop("dims_per_code", 4)
        if isinstance(per, bool) or not isinstance(per, int) or not 1 <= per <= dim:
            raise InputError(f"recipe {recipe['name']!r}: store_pq_dims_per_code must be a whole number in 1..{dim}, not {per!r}")
        store_options["m"] = _pq_m(dim, per)
    if store not in ("float16", "none"):
        from .vectors import check_store_options

        try:
            check_store_options(store, dim=dim, **store_options)
        except ValueError as exc:
            raise InputError(f"recipe {recipe['name']!r}: {exc}") from None
    params = {}
    for key in ("nprobe", "ef_search", "ef_construction"):
        if key in recipe:
            params[key] = int(recipe[key])
    params["rescore_multiplier"] = max(1, int(recipe.get("rescore_multiplier", 1))) if store != "none" else 1
    if "nlist" in fmt and "nprobe_fraction" in recipe:
        # real queries sit far from their passages (cosine ~0.5-0.65 for MiniLM): their neighbours
        # spread over many lists, so the lists to visit grow with nlist (recall ~0.95 needs ~1/8-1/5)
        params["nprobe"] = max(params.get("nprobe", 1), math.ceil(fmt["nlist"] * float(recipe["nprobe_fraction"])))
    if "nprobe" in params and "nlist" in fmt:
        params["nprobe"] = min(params["nprobe"], fmt["nlist"])
    # training sample: enough points per IVF list and per PQ centroid (256 x 39), capped
    per_list = int(recipe.get("train_points_per_list", 64))
    train = min(n, max(fmt.get("nlist", 1) * per_list, 256 * 39, 65536 if "nlist" not in fmt else 0),
                int(recipe.get("max_train_points", 500000)))
    return {"recipe": recipe["name"], "kind": kind, "factory": factory, "store": store,
            "store_options": store_options, "params": params,
            "train_points": train, "gpu_float16_lut": bool(recipe.get("gpu_float16_lut", True)), **fmt}
