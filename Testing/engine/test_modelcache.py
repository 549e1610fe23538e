"""The worker's model cache with real tiny models: a hit returns the same loaded networks, a weights file replaced
on disk is loaded (and verified) again, the least recently used model is dropped, and nothing is cached without an
installed cache."""

from __future__ import annotations

import os

import pytest

from glims.catalog import load_catalog
from glims.errors import CheckpointError
from glims.inference import load_models
from glims.modelcache import ModelCache, use_model_cache

from tiny_models import register_tiny_model


@pytest.fixture
def catalog(tmp_path):
    register_tiny_model(tmp_path, "brats", model_id="tiny-a", seed=0)
    register_tiny_model(tmp_path, "brats", model_id="tiny-b", seed=1)
    register_tiny_model(tmp_path, "brats", model_id="tiny-c", seed=2)
    return load_catalog(tmp_path)


def test_a_second_load_is_a_hit_with_the_same_networks_and_only_inside_the_cache(catalog):
    spec = catalog.get("tiny-a")
    said: list[str] = []
    cache = ModelCache(on_lookup=said.append)
    with use_model_cache(cache):
        first, second = load_models(spec), load_models(spec)
    assert second is first and (cache.stats.hits, cache.stats.misses) == (1, 1)
    assert said == ["model cache miss: loading tiny-a@1.0.0",
                    "model cache hit: tiny-a@1.0.0 (loaded earlier in this worker)"]
    assert load_models(spec) is not first  # no cache installed: loaded afresh, as the one-shot command does


def test_a_weights_file_changed_on_disk_is_loaded_and_verified_again(catalog):
    spec = catalog.get("tiny-a")
    cache = ModelCache()
    with use_model_cache(cache):
        load_models(spec)
        path = spec.weights[0].path
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF  # same size, other content: the catalog's sha256 no longer matches
        path.write_bytes(bytes(data))
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
        with pytest.raises(CheckpointError, match="sha256"):
            load_models(spec)
    assert cache.stats.misses == 1 and cache.stats.hits == 0 and len(cache) == 1  # the new file never served


def test_the_least_recently_used_model_is_dropped(catalog):
    a, b, c = (catalog.get(ref) for ref in ("tiny-a", "tiny-b", "tiny-c"))
    cache = ModelCache(capacity=2)
    with use_model_cache(cache):
        first_a = load_models(a)
        load_models(b)
        assert load_models(a) is first_a  # a is now the most recent
        load_models(c)  # drops b
        assert load_models(a) is first_a
        cache.reset_stats()
        load_models(b)
    assert (cache.stats.hits, cache.stats.misses) == (0, 1) and len(cache) == 2
