import pickle

from userloop.cache import cache_dir, cached_pickle


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("USERLOOP_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path


def test_cached_pickle_builds_once(tmp_path):
    calls = []
    path = tmp_path / "sub" / "value.pkl"
    assert cached_pickle(path, lambda: calls.append(1) or {"a": 1}) == {"a": 1}
    assert cached_pickle(path, lambda: calls.append(1) or {"a": 2}) == {"a": 1}
    assert calls == [1]


def test_a_pickle_that_no_longer_loads_is_built_again(tmp_path):
    moved = tmp_path / "moved.pkl"      # names a module that is gone (a renamed userloop module)
    moved.write_bytes(pickle.dumps(None).replace(b"N.", b"cuserloop.no_such_module\nThing\n."))
    damaged = tmp_path / "damaged.pkl"
    damaged.write_bytes(pickle.dumps({"a": 1})[:5])
    for path in (moved, damaged):
        assert cached_pickle(path, lambda: "rebuilt") == "rebuilt"
        assert pickle.loads(path.read_bytes()) == "rebuilt"
