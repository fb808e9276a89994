"""How fast the web console shows a run, and whether a big run freezes it.

Run by hand: ``.venv/bin/python bench/console_latency.py`` (needs Debian's chromium and
chromedriver: ``scripts/ensure_browser.sh``). One code agent is served in its own process
(replayed model calls of 50 ms, 60 steps of one tool call each), with the console in this
process and headless Chromium on its page. A script placed in the page before its own
(through the DevTools protocol) notes when each event arrives and when the page's DOM
changes next. It prints:

- per event, the time from the service stamping it to the page's DOM changing after it
  arrived (p50, p90, p99), and to its arrival alone;
- for a finished run of over 2,000 events opened at once: the time until its last node
  says it ended, the longest task that blocked the page, the page's JS heap, and this
  process's (the console's) resident memory before and after.

Asserts nothing. The aim (issue 24): under 100 ms p50 from service to page.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from mesh.console.serve import ConsoleServer
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from tests.mesh_setup import cassette_lines
from tests.support import code

STEPS = 60
BIG_CALLS = 1000
LIVE_TASK = "Compute factorials slowly."
BIG_TASK = "Compute a thousand factorials."
CONFIG = """
[mesh]
entry = "worker"
replay = "always"
replay_latency_ms = 50
[agents.worker]
kind = "code"
description = "Computes."
address = "127.0.0.1:0"
tools = ["factorial"]
cassette = "worker.jsonl"
max_steps = 100
"""
PROBE = """
window.__probe = {arrivals: [], mutations: [], longest: 0};
const Original = window.EventSource;
window.EventSource = function (url, options) {
  const source = new Original(url, options);
  source.addEventListener("message", (m) => {
    try {
      const event = JSON.parse(m.data);
      window.__probe.arrivals.push([performance.timeOrigin + performance.now(), event.time * 1000]);
    } catch (e) {}
  });
  return source;
};
window.EventSource.prototype = Original.prototype;
const now = () => performance.timeOrigin + performance.now();
new MutationObserver(() => window.__probe.mutations.push(now()))
  .observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    window.__probe.longest = Math.max(window.__probe.longest, entry.duration);
  }
}).observe({type: "longtask", buffered: true});
"""


def write_project(directory: Path) -> Path:
    (directory / "mesh.toml").write_text(CONFIG)
    steps = [code("factorial(n=5)") for _ in range(STEPS)]
    loop = f"for n in range({BIG_CALLS}):\n    factorial(n=n % 10)"
    (directory / "worker.jsonl").write_text(
        cassette_lines(LIVE_TASK, *steps, code('final_answer("done")'))
        + cassette_lines(BIG_TASK, code(loop), code('final_answer("done")'))
    )
    return directory / "mesh.toml"


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
    return driver


def start(console: str, task: str) -> str:
    with httpx.Client(base_url=console, timeout=30) as http:
        csrf = http.get("/api/session").json()["csrf"]
        started = http.post("/api/runs", json={"agent": "worker", "task": task},
                            headers={"X-CSRF-Token": csrf})  # fmt: skip
        started.raise_for_status()
        return str(started.json()["run_id"])


def ended(driver: webdriver.Chrome, run_id: str) -> bool:
    nodes = driver.find_elements(By.CSS_SELECTOR, f'.run-node[data-run-id="{run_id}"]')
    return bool(nodes) and nodes[0].get_attribute("data-state") not in ("running", "queued", "")


def latencies(probe: dict[str, Any], opened_ms: float) -> tuple[list[float], list[float]]:
    """(service -> DOM change, service -> arrival) for the events made after the page opened."""
    mutations = sorted(probe["mutations"])
    to_dom, to_page = [], []
    for arrived, stamped in probe["arrivals"]:
        if stamped < opened_ms:
            continue  # recorded before the page was there: a replay, not live
        after = next((m for m in mutations if m >= arrived), None)
        to_page.append(arrived - stamped)
        if after is not None:
            to_dom.append(after - stamped)
    return to_dom, to_page


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    pick = [ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))] for p in (0.9, 0.99)]
    return f"{statistics.median(ordered):7.1f} {pick[0]:7.1f} {pick[1]:7.1f} ms  ({len(values)})"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    with tempfile.TemporaryDirectory() as temp:
        config = load_mesh_config(write_project(Path(temp)))
        with MeshProcesses(config, log_dir=Path(temp) / "logs") as mesh:
            server = ConsoleServer(config, "127.0.0.1:0", token=None, jaeger_url=None,
                                   addresses=mesh.addresses).start()  # fmt: skip
            driver = browser()
            try:
                live(driver, server.url)
                big(driver, server.url)
            finally:
                driver.quit()
                server.stop()


def live(driver: webdriver.Chrome, console: str) -> None:
    driver.get(console)
    run_id = start(console, LIVE_TASK)
    opened_ms = time.time() * 1000
    driver.get(f"{console}#/run/worker/{run_id}")
    WebDriverWait(driver, 120, poll_frequency=0.2).until(lambda d: ended(d, run_id))
    probe = driver.execute_script("return window.__probe")
    to_dom, to_page = latencies(probe, opened_ms)
    print(f"live run, {STEPS} steps of 50 ms:      p50     p90     p99")
    print(f"  service -> page's DOM updated  {percentiles(to_dom)}")
    print(f"  service -> event in the page   {percentiles(to_page)}")


def big(driver: webdriver.Chrome, console: str) -> None:
    run_id = start(console, BIG_TASK)
    with httpx.Client(base_url=console, timeout=60) as http:
        while http.get(f"/api/runs/worker/{run_id}").json()["status"] in ("queued", "running"):
            time.sleep(0.2)
    before = rss_mb()
    driver.get(console)
    began = time.monotonic()
    driver.get(f"{console}#/run/worker/{run_id}")
    WebDriverWait(driver, 120, poll_frequency=0.1).until(lambda d: ended(d, run_id))
    shown_s = time.monotonic() - began
    probe = driver.execute_script("return window.__probe")
    heap = driver.execute_script(
        "return performance.memory ? performance.memory.usedJSHeapSize : 0"
    )
    count = len(probe["arrivals"])
    print(f"finished run of {count} events, opened at once:")
    print(f"  until its node says it ended   {shown_s * 1000:7.0f} ms")
    print(f"  longest task blocking the page {probe['longest']:7.0f} ms")
    print(f"  page's JS heap                 {heap / 2**20:7.1f} MiB")
    print(f"  console process memory         {before:7.1f} -> {rss_mb():.1f} MiB")


if __name__ == "__main__":
    main()
