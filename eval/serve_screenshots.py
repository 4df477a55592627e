"""Screenshots of rtv serve's three views (docs/serve-search.png, serve-count.png, serve-contamination.png).

    python eval/serve_screenshots.py demo-index [--out docs]     # the index of examples/demo.sh

Starts `rtv serve` on 127.0.0.1 (a free port), drives Debian's headless chromium through selenium
(/usr/bin/chromium, /usr/bin/chromedriver) with example inputs, saves the pages, stops the server.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"))
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import Select, WebDriverWait

    proc = subprocess.Popen([sys.executable, "-m", "rtv_cli.main", "serve", args.index, "--port", "0", "--no-rerank"],
                            stderr=subprocess.PIPE, text=True)
    url = None
    for line in proc.stderr:
        m = re.search(r"rtv serve: (http://\S+?)/ ", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        sys.exit("rtv serve did not start")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    wait = WebDriverWait(d, 60)
    out = Path(args.out)
    try:
        d.get(url + "/")
        wait.until(lambda d: d.find_element("id", "index").get_attribute("value"))
        d.find_element("id", "q").send_keys('split "From:" header into display name and address')
        Select(d.find_element("id", "rerank")).select_by_value("false")
        d.find_element("id", "k").clear()
        d.find_element("id", "k").send_keys("4")
        d.find_element("id", "search-go").click()
        wait.until(lambda d: " ms" in d.find_element("id", "search-status").text)
        d.save_screenshot(str(out / "serve-search.png"))

        d.find_element("id", "tab-count").click()
        d.find_element("id", "count-text").send_keys("def decode_header(header):")
        d.find_element("id", "count-n").clear()
        d.find_element("id", "count-n").send_keys("12")
        Select(d.find_element("id", "count-unit")).select_by_value("chars")
        d.find_element("id", "count-go").click()
        wait.until(lambda d: d.find_elements("css selector", "#ngram-table tbody tr"))
        d.find_element("css selector", "#ngram-table tbody tr:nth-child(5)").click()
        wait.until(lambda d: d.find_elements("css selector", "#find-results li"))
        d.find_element("css selector", "#find-results li .doc-link").click()
        wait.until(lambda d: d.find_element("id", "doc-view").is_displayed())
        time.sleep(0.3)
        d.save_screenshot(str(out / "serve-count.png"))

        # a small benchmark: docstrings copied from the corpus, some edited, some new
        entries = [{"id": "copied-1", "prompt": "Decode a message header value without converting charset."},
                   {"id": "copied-2", "prompt": "Serialize ``obj`` as a JSON formatted stream to ``fp`` (a ``.write()``-supporting file-like object)."},
                   {"id": "edited", "prompt": "Decode a message header value without converting charset, then print it to the screen twice."},
                   {"id": "new-1", "prompt": "Write a function that returns the n-th Fibonacci number using memoization."},
                   {"id": "new-2", "prompt": "Given a list of integers, return the length of the longest increasing subsequence."}]
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", prefix="mini-bench-", delete=False) as f:
            f.write("".join(json.dumps(e) + "\n" for e in entries))
        d.find_element("id", "tab-contamination").click()
        d.find_element("id", "bench-file").send_keys(f.name)
        d.find_element("id", "bench-fields").send_keys("prompt")
        d.find_element("id", "bench-go").click()
        wait.until(lambda d: d.find_elements("css selector", "#bucket-table tbody tr"))
        d.save_screenshot(str(out / "serve-contamination.png"))
        Path(f.name).unlink()
    finally:
        d.quit()
        proc.terminate()
        proc.wait(30)
    print(f"wrote {out}/serve-search.png, serve-count.png, serve-contamination.png")


if __name__ == "__main__":
    main()
