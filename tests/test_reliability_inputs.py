"""Issue 11, second half: leftovers of killed builds, corpus walks that hang or read the wrong
tree or skip without a word, and one-line errors (never a traceback) from the `rtv` CLI."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval import Index

RTV = [sys.executable, "-m", "rtv_cli.main"]
ENV = {**os.environ, "RTV_SILENT": "0", "HF_HUB_OFFLINE": "1"}


def _write(path, marker, n=30, size=1):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"{marker}-{i}", "text": f"{marker} document {i} " + "filler text " * 20 * size}) + "\n")
    return path


def rtv(*args, timeout=120, **kw):
    return subprocess.run([*RTV, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=kw.pop("env", ENV), **kw)


def one_line_error(res, *needles):
    """exit 1, one line on stderr (after any notices) naming what is wrong, no traceback."""
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


# -- leftovers of killed builds -------------------------------------------------------------------
def _start_build(src, path, *extra):
    return subprocess.Popen([*RTV, "index", str(src), "-o", str(path), "--no-dense", "--silent", *extra])


def _wait_for(glob_dir, pattern, timeout=60):
    deadline = time.time() + timeout
    while not list(glob_dir.glob(pattern)) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    found = list(glob_dir.glob(pattern))
    assert found, f"no {pattern} appeared"
    return found


def test_sigterm_during_a_build_removes_its_temp_directory(tmp_path):
    big = _write(tmp_path / "big.jsonl", "bravo", n=4000, size=10)
    path = tmp_path / "idx"
    child = _start_build(big, path)
    _wait_for(tmp_path, ".idx.building-*")
    child.send_signal(signal.SIGTERM)
    rc = child.wait(60)
    assert rc != 0
    assert not path.exists()
    assert not list(tmp_path.glob(".idx.building-*"))
    assert not (tmp_path / ".idx.lock").exists()  # the lock is released before the process dies


def test_sigterm_during_a_rebuild_removes_the_generation_it_was_writing(tmp_path):
    old = _write(tmp_path / "old.jsonl", "alpha")
    big = _write(tmp_path / "big.jsonl", "bravo", n=4000, size=10)
    path = tmp_path / "idx"
    Index.build([old], path, dense=False).close()
    child = _start_build(big, path, "--force")
    _wait_for(path, ".gen-*.building-*")
    child.send_signal(signal.SIGTERM)
    assert child.wait(60) != 0
    assert not list(path.glob(".gen-*.building-*"))
    assert not (tmp_path / ".idx.lock").exists()
    assert Index.open(path).count("alpha") == 30


def test_stale_building_sibling_of_a_killed_build_is_removed_by_the_next_build(tmp_path):
    big = _write(tmp_path / "big.jsonl", "bravo", n=4000, size=10)
    small = _write(tmp_path / "small.jsonl", "alpha")
    path = tmp_path / "idx"
    child = _start_build(big, path)
    (stale,) = _wait_for(tmp_path, ".idx.building-*")
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert stale.exists()
    # a sibling whose process still runs is not known to be stale: it stays
    sleeper = subprocess.Popen(["sleep", "60"])
    alive = tmp_path / f".idx.building-{sleeper.pid}"
    alive.mkdir()
    other = tmp_path / ".idxother.building-999999999"  # another index's leftover: not ours to touch
    other.mkdir()
    try:
        Index.build([small], path, dense=False).close()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not stale.exists()
    assert alive.exists() and other.exists()
    assert Index.open(path).count("alpha") == 30


# -- corpus walks: nothing hangs, nothing is skipped without a word -------------------------------
def _tree(root: Path) -> Path:
    """A corpus folder holding one of everything a walk must not read blindly."""
    c = root / "c"
    (c / "sub").mkdir(parents=True)
    (c / "a.jsonl").write_text(json.dumps({"id": "a", "text": "alpha doc"}) + "\n")
    (c / "package.json").write_text(json.dumps({"name": "pkg", "version": "1.0.0", "scripts": {"t": "x"}}))
    (c / ".hidden.txt").write_text("hidden words")
    (c / "sub" / "t.txt").write_text("bravo text")
    os.mkfifo(c / "fifo")
    os.symlink("nowhere", c / "dangling")
    os.symlink("..", c / "sub" / "up")  # back to c: a loop
    os.symlink("sub", c / "zlink")  # a second way to sub
    return c


def test_walk_skips_fifo_links_and_hidden_files_and_says_so(tmp_path):
    c = _tree(tmp_path)
    res = rtv("index", c, "-o", tmp_path / "idx", "--no-dense", timeout=60)  # a FIFO used to hang here
    assert res.returncode == 0, res.stderr
    err = res.stderr
    assert "not a regular file (FIFO, socket or device)" in err and "c/fifo" in err
    assert "dangling symbolic link" in err and "c/dangling" in err
    assert "symbolic link loop" in err and "c/sub/up" in err
    assert "already walked" in err and "c/zlink" in err
    assert "hidden" in err and ".hidden.txt" in err
    assert "package.json" in err and "read as one text document" in err
    idx = Index.open(tmp_path / "idx")
    ids = sorted(d["ext_id"] for d in idx.store.documents(range(idx.n_documents)))
    assert ids == ["a", "package.json", "sub/t.txt"]  # sub/t.txt once, not again through zlink or up
    assert idx.count("bravo text") == 1 and idx.count('"version": "1.0.0"') == 1 and idx.count("hidden words") == 0


def test_symlinked_folder_is_followed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "x.txt").write_text("charlie")
    c = tmp_path / "c"
    c.mkdir()
    os.symlink(real, c / "linked")
    idx = Index.build(c, tmp_path / "idx", dense=False)
    assert idx.count("charlie") == 1


def test_build_with_a_string_path_reads_that_path_not_its_characters(tmp_path):
    c = _tree(tmp_path)
    os.remove(c / "fifo")
    idx = Index.build(str(c), str(tmp_path / "idx"), dense=False)
    assert idx.n_documents == 3
    idx2 = Index.build(str(c / "a.jsonl"), tmp_path / "idx2", dense=False)
    assert idx2.n_documents == 1
    with pytest.raises(TypeError, match="expected paths"):
        Index.build([5], tmp_path / "idx3", dense=False)


def test_output_inside_the_source_folder_is_never_read_as_corpus(tmp_path):
    c = tmp_path / "c"
    c.mkdir()
    (c / "a.txt").write_text("delta " * 50)
    for extra in ((), ("--force",), ("--force",)):
        res = rtv("index", c, "-o", c / "idx", "--no-dense", *extra)
        assert res.returncode == 0, res.stderr
        idx = Index.open(c / "idx")
        assert idx.n_documents == 1 and idx.count("delta") == 50
        idx.close()
    assert "an rtv index directory" in res.stderr and "c/idx" in res.stderr
    one_line_error(rtv("index", c / "idx", "-o", tmp_path / "x", "--no-dense"), "is an rtv index, not a corpus")


def test_unreadable_subfolder_is_skipped_with_a_notice(tmp_path):
    c = tmp_path / "c"
    (c / "locked").mkdir(parents=True)
    (c / "a.txt").write_text("echo")
    (c / "locked" / "b.txt").write_text("foxtrot")
    os.chmod(c / "locked", 0)
    try:
        if os.access(c / "locked", os.R_OK):  # root reads anything: run the build as nobody
            pytest.skip("running as root; tested without that privilege in test_permission_errors")
        res = rtv("index", c, "-o", tmp_path / "idx", "--no-dense")
    finally:
        os.chmod(c / "locked", 0o755)
    assert res.returncode == 0 and "folder cannot be listed" in res.stderr


def test_dangling_link_and_link_loop_given_by_name_are_one_line_errors(tmp_path):
    os.symlink(tmp_path / "nowhere.jsonl", tmp_path / "d.jsonl")
    os.symlink("loop", tmp_path / "loop")
    one_line_error(rtv("index", tmp_path / "d.jsonl", "-o", tmp_path / "i1", "--no-dense"),
                   "d.jsonl", "dangling symbolic link")
    one_line_error(rtv("index", tmp_path / "loop", "-o", tmp_path / "i2", "--no-dense"),
                   "loop", "symbolic link loop")


DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


@pytest.fixture
def unprivileged(tmp_path):
    """A runner of `rtv` that file permissions apply to: as root (these tests' usual user), the
    same user without the capabilities that override them."""
    import shutil

    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root without setpriv: permissions cannot be tested")
        prefix = DROP_DAC
    else:
        prefix = []

    def run(*args):
        return subprocess.run([*prefix, *RTV, *map(str, args)], capture_output=True, text=True, timeout=120, env=ENV)

    yield tmp_path, run
    for p in tmp_path.rglob("*"):  # let pytest clean up
        if p.is_dir() and not p.is_symlink():
            os.chmod(p, 0o755)


def test_permission_errors(unprivileged):
    d, run = unprivileged
    c = d / "c"
    (c / "locked").mkdir(parents=True)
    (c / "a.txt").write_text("echo words")
    (c / "secret.txt").write_text("golf")
    (c / "locked" / "b.txt").write_text("foxtrot")
    os.chmod(c / "locked", 0)
    os.chmod(c / "secret.txt", 0)
    res = run("index", c, "-o", d / "idx", "--no-dense")
    assert res.returncode == 0, res.stderr
    assert "folder cannot be listed" in res.stderr and "c/locked" in res.stderr
    assert "cannot be read (permission denied)" in res.stderr and "secret.txt" in res.stderr
    # given by name: one line each
    one_line_error(run("index", c / "secret.txt", "-o", d / "i2", "--no-dense"), "secret.txt", "permission denied")
    one_line_error(run("index", c / "locked", "-o", d / "i3", "--no-dense"), "locked", "permission denied")
    # an output folder that cannot be written
    ro = d / "ro"
    ro.mkdir(mode=0o555)
    os.chmod(ro, 0o555)
    one_line_error(run("index", c / "a.txt", "-o", ro / "idx", "--no-dense"), "ro", "permission denied")
    # an index that cannot be read
    assert run("index", c / "a.txt", "-o", d / "ok", "--no-dense").returncode == 0
    gen = next((d / "ok").glob("gen-*"))
    for f in (gen / "meta.sqlite", gen / "manifest.json", d / "ok" / "CURRENT"):
        os.chmod(f, 0)
        one_line_error(run("count", d / "ok", "echo"), f.name)
        os.chmod(f, 0o644)
    os.chmod(d / "ok", 0)  # click refuses the argument itself: a usage error (2) naming it
    res = run("count", d / "ok", "echo")
    assert res.returncode == 2 and "not readable" in res.stderr and "Traceback" not in res.stderr


# -- output that cannot be written -----------------------------------------------------------------
def test_output_that_is_a_file_or_under_proc_is_one_line(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("hotel words")
    (tmp_path / "afile").write_text("x")
    one_line_error(rtv("index", src, "-o", tmp_path / "afile" / "idx", "--no-dense"), "afile", "not a directory")
    one_line_error(rtv("index", src, "-o", tmp_path / "afile", "--no-dense"), "afile", "already exists")
    one_line_error(rtv("index", src, "-o", tmp_path / "afile", "--no-dense", "--force"), "afile", "not an rtv index")
    one_line_error(rtv("index", src, "-o", "/proc/rtv-idx", "--no-dense"), "/proc/rtv-idx", "choose another -o")
    assert (tmp_path / "afile").read_text() == "x"


def _disk_full_run(tmp_path, size: str, corpus: Path):
    """`rtv index` into a tmpfs of `size` in a private mount namespace; then what is left there."""
    import shutil

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount a tiny tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cmd = " ".join([*RTV, "index", str(corpus), "-o", f"{mnt}/idx", "--no-dense"])
    script = f"mount -t tmpfs -o size={size} tmpfs {mnt} || exit 99; {cmd}; echo rc=$? >&2; ls -A {mnt} >&2"
    res = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120, env=ENV)
    if res.returncode == 99:
        pytest.skip("cannot mount a tmpfs here")
    return res


def _in_tmpfs(tmp_path, size: str, script: str):
    """`script` (sh; $RTV is the CLI, $MNT the mount) run in a tmpfs of `size` in a private mount
    namespace; its stderr."""
    import shutil

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount a tiny tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = f"mount -t tmpfs -o size={size} tmpfs {mnt} || exit 99; MNT={mnt}; RTV='{' '.join(RTV)}'; {script}"
    res = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300, env=ENV)
    if res.returncode == 99:
        pytest.skip("cannot mount a tmpfs here")
    return res.stderr


def _errors_by_command(err: str) -> dict:
    """{command: its `Error:` lines} from stderr where each command ran after `echo "== NAME" >&2`."""
    out, name = {}, None
    for line in err.splitlines():
        if line.startswith("== "):
            name = line[3:]
            out[name] = []
        elif line.startswith("Error:") and name:
            out[name].append(line)
    assert "Traceback" not in err, err
    return out


def test_changes_that_cannot_write_name_the_index_and_the_fix(tmp_path):
    """rtv add / delete / compact on an index whose file system is read-only, and an add that fills
    the disk: one line naming the index directory and what to do (no -o: a change has none)."""
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    _write(small, "juliet", n=20, size=1)
    _write(big, "kilo", n=10000, size=2)
    idx = "$MNT/idx"
    err = _in_tmpfs(tmp_path, "1m", " ".join([
        f"$RTV index {small} -o {idx} --no-dense --id-field id || exit 98;",
        f'echo "== full" >&2; $RTV add {idx} {big} --id-field id; echo "rc=$?" >&2;',
        f'echo "count=$($RTV count {idx} juliet)" >&2;',
        "mount -o remount,ro $MNT || exit 97;",
        f'echo "== add" >&2; $RTV add {idx} {big} --id-field id; echo "rc=$?" >&2;',
        f'echo "== delete" >&2; $RTV delete {idx} --id juliet-1; echo "rc=$?" >&2;',
        f'echo "== compact" >&2; $RTV compact {idx}; echo "rc=$?" >&2']))
    assert "rc=1" in err and err.count("rc=1") == 4, err
    errors = _errors_by_command(err)
    mnt = str(tmp_path / "mnt")
    assert len(errors["full"]) == 1 and "disk is full" in errors["full"][0], err
    for cmd in ("add", "delete", "compact"):
        assert len(errors[cmd]) == 1 and "read-only file system; remount it writable" in errors[cmd][0], (cmd, err)
    for line in errors.values():
        assert f"index {mnt}/idx:" in line[0] and " -o " not in line[0], line
    assert re.search(r"^count=20\b", err, re.M), err  # the failed add left the index as it was


@pytest.mark.parametrize("size", ["48k", "400k"])  # sqlite fills it first / the shard file does
def test_disk_full_is_one_line_and_leaves_nothing(tmp_path, size):
    corpus = tmp_path / "big.jsonl"
    _write(corpus, "india", n=2000, size=2)  # ~1 MB of text
    res = _disk_full_run(tmp_path, size, corpus)
    err = res.stderr
    assert "rc=1" in err and "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("Error:")]
    assert len(lines) == 1 and "disk is full" in lines[0] and "-o" in lines[0], err
    assert err.rstrip().endswith("rc=1"), err  # ls printed nothing: no temp directory, no lock


def test_file_size_limit_is_one_line(tmp_path):
    """RLIMIT_FSIZE (ulimit -f) makes writes fail with EFBIG: the same path as a full disk."""
    import resource

    corpus = tmp_path / "big.jsonl"
    _write(corpus, "juliet", n=2000, size=2)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    res = subprocess.run([*RTV, "index", str(corpus), "-o", str(tmp_path / "idx"), "--no-dense"],
                         capture_output=True, text=True, timeout=120, env=ENV, preexec_fn=limit)
    one_line_error(res, "-o", "idx")
    assert not (tmp_path / "idx").exists() and not list(tmp_path.glob(".idx*"))


# -- tracebacks where a one-line error belongs -----------------------------------------------------
@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    src = d / "c.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "text": f"kilo lima mike {i} " * 5}) + "\n" for i in range(3)))
    Index.build([src], d / "idx", dense=False).close()
    return d / "idx"


@pytest.mark.parametrize("name,body,where", [
    ("deep.json", "[" * 100_000 + "]" * 100_000, "item 0"),
    ("deep.jsonl", '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "line 1"),
    ("deepobj.json", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "deepobj.json"),
])
def test_json_nested_too_deep_is_one_line(tmp_path, small_index, name, body, where):
    (tmp_path / name).write_text(body)
    one_line_error(rtv("index", tmp_path / name, "-o", tmp_path / "idx", "--no-dense"), name, where, "nested deeper")
    one_line_error(rtv("contamination", small_index, tmp_path / name), name, "nested deeper")


def test_unterminated_csv_quote_is_an_error_not_one_huge_entry(tmp_path, small_index):
    path = tmp_path / "q.csv"
    path.write_text('id,text\n1,"never closed\n2,more\n3,rows\n')
    one_line_error(rtv("index", path, "-o", tmp_path / "idx", "--no-dense"), "q.csv", "line 2", "never closed")
    one_line_error(rtv("contamination", small_index, path), "q.csv", "line 2", "never closed")
    ok = tmp_path / "ok.csv"  # a closed quote spanning lines is still one cell
    ok.write_text('id,text\n1,"two\nlines"\n2,plain\n')
    idx = Index.build([ok], tmp_path / "ok", dense=False)
    assert idx.n_documents == 2 and idx.count("two\nlines") == 1


@pytest.mark.parametrize("first", [None, 5])
def test_first_benchmark_entry_with_a_null_or_number_field(tmp_path, small_index, first):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"id": 1, "question": first}) + "\n"
                    + json.dumps({"id": 2, "question": "kilo lima mike 1 kilo lima mike 1 kilo lima mike 1 kilo"}) + "\n")
    res = rtv("contamination", small_index, path, "--json")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    summary = rows[-1]
    assert summary["fields"] == ["question"] and summary["entries"] == 2
    assert [r["score"] for r in rows[:-1] if r.get("id") == "2"] == [1.0]
    nested = tmp_path / "n.jsonl"  # a dotted field whose first value is null exists all the same
    nested.write_text(json.dumps({"id": 1, "a": {"b": None}}) + "\n" + json.dumps({"id": 2, "a": {"b": "x"}}) + "\n")
    assert rtv("contamination", small_index, nested, "--field", "a.b").returncode == 0


def test_sample_rates_out_of_range(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("november")
    for flag, value in (("--sa-sample", 1 << 32), ("--sa-sample", (1 << 20) + 1), ("--isa-sample", 10 ** 20),
                        ("--sa-sample", 0)):
        one_line_error(rtv("index", src, "-o", tmp_path / "idx", "--no-dense", flag, value), flag, "between 1 and 1048576")
    assert rtv("index", src, "-o", tmp_path / "idx", "--no-dense", "--sa-sample", 1 << 20).returncode == 0


def test_cnf_with_an_empty_separator(small_index):
    one_line_error(rtv("cnf", small_index, "--or", "", "kilo"), "--or", "non-empty")


def test_non_utf8_arguments(small_index, tmp_path):
    def run(*args):
        # the child gets the bytes back from these surrogate-escaped strings, as from a shell
        return subprocess.run([*RTV, *map(str, args)], capture_output=True, text=True, timeout=60, env=ENV)
    bad = os.fsdecode(b"caf\xe9")
    one_line_error(run("count", small_index, bad), "STRINGS", "not valid UTF-8")
    one_line_error(run("find", small_index, bad), "STRING", "not valid UTF-8")
    one_line_error(run("query", small_index, bad, "--mode", "lexical"), "TEXT", "not valid UTF-8")
    one_line_error(run("cnf", small_index, "kilo", bad), "GROUPS", "not valid UTF-8")
    one_line_error(run("count", str(small_index) + bad, "kilo"), "no such index")  # a path may be any bytes


def test_non_utf8_file_names(tmp_path):
    c = tmp_path / "c"
    c.mkdir()
    name = os.fsdecode(b"caf\xe9.txt")
    (c / name).write_text("oscar papa")
    res = rtv("index", c, "-o", tmp_path / "idx", "--no-dense")
    assert res.returncode == 0, res.stderr
    res = rtv("find", tmp_path / "idx", "oscar", "--json")
    assert res.returncode == 0 and "Traceback" not in res.stderr
    assert json.loads(res.stdout)["ext_id"] == "caf\ufffd.txt"
    assert rtv("index", c / name, "-o", tmp_path / "idx2", "--no-dense").returncode == 0


@pytest.mark.parametrize("errors", ["strict", "replace"])
def test_lone_surrogates_in_id_and_metadata(tmp_path, errors):
    for field, line in (("id", '{"id": "a\\ud800", "text": "quebec"}'),
                        ("metadata", '{"id": "b", "text": "quebec", "tag": {"x": ["r\\udc00"]}}'),
                        ("key", '{"id": "c", "text": "quebec", "k\\ud800": 1}')):
        path = tmp_path / f"{field}.jsonl"
        path.write_text(line + "\n")
        res = rtv("index", path, "-o", tmp_path / f"idx-{field}-{errors}", "--no-dense", "--errors", errors, "--json")
        if errors == "strict":
            one_line_error(res, path.name, "line 1", "lone surrogate", "--errors replace")
        else:
            assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
            idx = Index.open(tmp_path / f"idx-{field}-{errors}")
            (doc,) = idx.store.documents([0])
            assert "\ufffd" in json.dumps(doc, ensure_ascii=False) or "?" in json.dumps(doc, ensure_ascii=False)


def test_stdout_on_a_full_device(small_index, tmp_path):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": 1, "text": "kilo lima mike 1 " * 5}) + "\n")
    for args in (("count", small_index, "kilo"), ("extract", small_index, "0", "--json"), ("info", small_index),
                 ("query", small_index, "kilo", "--mode", "lexical"), ("contamination", small_index, bench, "--json"),
                 ("contamination", small_index, bench)):
        with open("/dev/full", "w") as full:
            res = subprocess.run([*RTV, *map(str, args)], stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
                                 env=ENV)
        one_line_error(res, "standard output", "No space left")


# -- leftovers and slow paths ----------------------------------------------------------------------
def test_default_k_on_a_small_index_returns_what_exists(small_index):
    from retrieval import Retriever

    idx = Index.open(small_index)
    assert idx.n_passages == 3
    hits = idx.search("kilo", mode="lexical")
    assert len(hits) == 3 and len({h.passage_id for h in hits}) == 3
    assert len(Retriever(idx, mode="lexical", rerank=False).retrieve("kilo")) == 3
    from retrieval.errors import InputError
    with pytest.raises(InputError, match="holds only 3 passages"):
        idx.search("kilo", k=10, mode="lexical")  # asked for explicitly: more than there is
    res = rtv("query", small_index, "kilo", "--mode", "lexical", "--json")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 3
    one_line_error(rtv("query", small_index, "kilo", "--mode", "lexical", "-k", "10"), "-k 10", "only 3 passages")
    assert len(rtv("query", small_index, "kilo", "--mode", "lexical", "-k", "2", "--json").stdout.splitlines()) == 2


def test_python_api_type_errors(small_index):
    idx = Index.open(small_index)
    for bad in (5, 2.5, None, ["kilo"]):
        with pytest.raises(TypeError, match="expected str or bytes"):
            idx.count(bad)
    with pytest.raises(TypeError, match="expected a list of patterns"):
        idx.count_many("kilo")
    with pytest.raises(TypeError, match="expected a list of queries"):
        idx.search_batch("kilo lima", mode="lexical")
    assert idx.count(b"kilo") == idx.count("kilo") == 15  # the oracle: 3 documents x 5 repeats
    assert [len(h) for h in idx.search_batch(["kilo", "lima"], mode="lexical")] == [3, 3]


@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:9"])  # this machine's hub / a closed port
def test_offline_rerank_fails_at_once(small_index, tmp_path, endpoint):
    env = {k: v for k, v in ENV.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    else:
        import socket
        try:
            socket.create_connection(("huggingface.co", 443), timeout=3).close()
            pytest.skip("the hub is reachable from here")
        except OSError:
            pass
    start = time.time()
    res = rtv("query", small_index, "kilo", "--mode", "lexical", "--rerank", "--silent", env=env, timeout=60)
    elapsed = time.time() - start
    one_line_error(res, "reranker", "cannot be reached", "--reranker DIR")
    assert elapsed < 20, elapsed  # was ~52 s of hub retries
    script = (f"import time; from retrieval import Retriever; from retrieval.errors import ModelError\n"
              f"t = time.time()\n"
              f"try:\n    Retriever({str(small_index)!r}, mode='lexical', rerank=True)\n"
              f"except ModelError as e:\n    print('ModelError', round(time.time() - t, 1), e)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert out.stdout.startswith("ModelError") and float(out.stdout.split()[1]) < 15, out.stdout + out.stderr


def test_html_report_is_written_whole_or_not_at_all(small_index, tmp_path):
    import resource

    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": 1, "text": "kilo lima mike 1 " * 5}) + "\n")
    report = tmp_path / "r.html"
    report.write_text("old report")

    def limit():  # the report is larger than this: its write fails like on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    res = subprocess.run([*RTV, "contamination", str(small_index), str(bench), "--html", str(report)],
                         capture_output=True, text=True, timeout=120, env=ENV, preexec_fn=limit)
    one_line_error(res, "r.html", "cannot be written")
    assert report.read_text() == "old report"  # not a cut or 0-byte file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.jsonl", "r.html"]  # no temp file left
    assert rtv("contamination", small_index, bench, "--html", report).returncode == 0
    assert report.read_text().startswith("<!") and "</html>" in report.read_text()
