"""rtv serve's web page in a real browser: Debian's chromium (headless) through chromedriver and
selenium, against a real server. What the page shows is checked against the library's own answers
(Index.search, ngram_counts, find, extract, and a BenchmarkRun over the same file).

RTV_SCREENSHOT_DIR=DIR saves a screenshot of each view there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from _serve_fixtures import DOCS, Server, write_corpus

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "page-token"


def make_driver():
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: apt-get install -y chromium chromium-driver (.ci/run does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)  # explicit paths: no download


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("faiss")
    from retrieval import Index

    tmp = tmp_path_factory.mktemp("page")
    Index.build([write_corpus(tmp / "c.jsonl")], tmp / "pets", id_field="id", dense=True, recipe="flat").close()
    return tmp


@pytest.fixture(scope="module")
def local(built):
    from retrieval import Index

    idx = Index.open(built / "pets")
    yield idx
    idx.close()


@pytest.fixture(scope="module")
def server(built):
    s = Server(str(built / "pets"), "--token", TOKEN, "--no-rerank")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def page(server):
    from selenium.webdriver.support.ui import WebDriverWait

    driver = make_driver()
    driver.get(server.url + "/")
    wait = WebDriverWait(driver, 30)
    # the server wants a token: the page says so and shows the token box
    wait.until(lambda d: d.find_element("id", "token-box").is_displayed())
    assert "Bearer" in driver.find_element("id", "error").text
    box = driver.find_element("id", "token")
    box.send_keys(TOKEN)
    driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", box)
    wait.until(lambda d: d.find_element("id", "index").get_attribute("value") == "pets")
    assert not driver.find_element("id", "error").is_displayed()
    yield driver, wait
    driver.quit()


def shot(driver, name):
    out = os.environ.get("RTV_SCREENSHOT_DIR")
    if out:
        driver.save_screenshot(str(Path(out) / f"serve-{name}.png"))


def set_value(driver, id_, value):
    from selenium.webdriver.support.ui import Select

    e = driver.find_element("id", id_)
    if e.tag_name == "select":
        Select(e).select_by_value(value)
    else:
        e.clear()
        e.send_keys(value)


def test_search_view_shows_the_librarys_hits(page, local):
    driver, wait = page
    driver.find_element("id", "tab-search").click()
    query = 'pets kept at "home"'
    for mode in ("hybrid", "dense"):
        set_value(driver, "q", query)
        set_value(driver, "mode", mode)
        set_value(driver, "k", "5")
        set_value(driver, "rerank", "false")
        status = driver.find_element("id", "search-status")
        driver.find_element("id", "search-go").click()
        wait.until(lambda d: f"· {mode}" in status.text)
        want = local.search(query, k=5, mode=mode, rerank=False)
        items = driver.find_elements("css selector", "#search-results li.hit")
        assert [int(li.get_attribute("data-passage-id")) for li in items] == [h.passage_id for h in want]
        for li, h in zip(items, want):
            assert li.find_element("class name", "ext-id").text == h.ext_id
            assert li.find_element("class name", "hit-text").text == h.text.strip()
            marks = [m.text for m in li.find_elements("tag name", "mark")]
            assert marks == [h.text.encode()[s:e].decode() for s, e in sorted(h.spans)]
            badges = {b.get_attribute("data-stage"): int(b.get_attribute("data-rank"))
                      for b in li.find_elements("class name", "stage")}
            assert badges == {st: v["rank"] for st, v in h.stages.items()}
        if mode == "hybrid":
            assert any(li.find_elements("tag name", "mark") for li in items)  # the quoted phrase is highlighted
            shot(driver, "search")


def test_search_view_where(page, local):
    """The search form's where box restricts the hits as Index.search(where=...) does."""
    driver, wait = page
    driver.find_element("id", "tab-search").click()
    where = "topic IN ('cat', 'dog', 'bac')"
    set_value(driver, "q", "pets kept at home")
    set_value(driver, "mode", "dense")
    set_value(driver, "k", "3")
    set_value(driver, "rerank", "false")
    set_value(driver, "where", where)
    status = driver.find_element("id", "search-status")
    status_before = status.text
    driver.find_element("id", "search-go").click()
    wait.until(lambda d: status.text != status_before and "· dense" in status.text)
    want = local.search("pets kept at home", k=3, mode="dense", rerank=False, where=where)
    items = driver.find_elements("css selector", "#search-results li.hit")
    assert [int(li.get_attribute("data-passage-id")) for li in items] == [h.passage_id for h in want]
    assert {h.metadata["topic"] for h in want} <= {"cat", "dog", "bac"}
    set_value(driver, "where", "")


def test_count_explorer_ngrams_find_and_document(page, local):
    driver, wait = page
    driver.find_element("id", "tab-count").click()
    text = "the quick brown fox and the cat"
    set_value(driver, "count-text", text)
    set_value(driver, "count-n", "2")
    set_value(driver, "count-unit", "tokens")
    driver.find_element("id", "count-go").click()
    wait.until(lambda d: d.find_element("id", "count-total").get_attribute("data-count") is not None)
    assert int(driver.find_element("id", "count-total").get_attribute("data-count")) == local.count(text)
    rows = driver.find_elements("css selector", "#ngram-table tbody tr")
    assert [int(r.get_attribute("data-count")) for r in rows] == local.ngram_counts(text, 2, "tokens").tolist()
    assert [r.get_attribute("data-ngram") for r in rows][0] == "the quick"
    row = next(r for r in rows if r.get_attribute("data-ngram") == "the cat")
    row.click()
    wait.until(lambda d: d.find_element("id", "find-title").text.startswith("“the cat”"))
    docs, offsets = local.find("the cat", limit=10)
    items = driver.find_elements("css selector", "#find-results li.occurrence")
    assert [(int(i.get_attribute("data-doc-id")), int(i.get_attribute("data-offset"))) for i in items] == \
        list(zip(docs.tolist(), offsets.tolist()))
    assert all(m.text == "the cat" for i in items for m in i.find_elements("tag name", "mark"))
    items[0].find_element("class name", "doc-link").click()
    view = driver.find_element("id", "doc-view")
    wait.until(lambda d: view.is_displayed() and view.text)
    assert view.text == local.extract(int(docs[0])).strip()
    shot(driver, "count")


def test_contamination_upload(page, local, tmp_path):
    from retrieval.contamination import BenchmarkRun, ContaminationConfig

    driver, wait = page
    entries = [{"task_id": f"t{i}", "prompt": text, "answer": "x"} for i, (_, text) in enumerate(DOCS[:6])]
    entries += [{"task_id": "novel", "prompt": "A sentence written for this test that no indexed document has in it."},
                {"task_id": "half", "prompt": DOCS[7][1][:55] + " but then it goes somewhere new and unknown to it."}]
    bench = tmp_path / "mini-bench.jsonl"
    bench.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    run = BenchmarkRun(local, bench, ["prompt"], None, ContaminationConfig())
    results = list(run)
    want = run.summary.to_json()

    driver.find_element("id", "tab-contamination").click()
    driver.find_element("id", "bench-file").send_keys(str(bench))
    set_value(driver, "bench-fields", "prompt")
    driver.find_element("id", "bench-go").click()
    wait.until(lambda d: d.find_elements("css selector", "#bucket-table tbody tr[data-bucket]"))
    got = {r.get_attribute("data-bucket"): int(r.get_attribute("data-count"))
           for r in driver.find_elements("css selector", "#bucket-table tbody tr[data-bucket]")}
    assert got == want["buckets"] and got["dirty"] >= 6
    bars = driver.find_elements("css selector", "#histogram .bar")
    assert [int(b.get_attribute("data-count")) for b in bars] == want["histogram"]["counts"]
    worst = driver.find_elements("css selector", "#worst-table tbody tr")
    assert [w.get_attribute("data-id") for w in worst] == [r.id for r in run.summary.worst()]
    by_id = {r.id: r for r in results}
    first = worst[0]
    assert first.find_element("class name", "matched").text == by_id[first.get_attribute("data-id")].matched_text.strip()
    assert "mini-bench" in driver.find_element("id", "bench-status").text or driver.find_element("id", "bench-status").text
    shot(driver, "contamination")
