"""The web console in a real browser: headless Chromium, driven by Selenium, on a real mesh.

One mesh (the seed agents and a slow specialist, their cassettes extended with the
runs below), one console and one browser serve the whole module. The page is used
as a person would: a task started from its form, a run cancelled with its button,
the page reloaded mid-run; what it shows is checked against the API's records.
Waits are on conditions the page exposes (``data-state`` of each node,
``data-stream`` of the tree), never sleeps. Every test ends by reading the
browser's console: any SEVERE entry (a script error, a refused resource) fails
it. Screenshots are kept in ``$MESH_TEST_ARTIFACTS`` (else tests/artifacts/console/).

Chromium and its driver are Debian's (``make browser``, scripts/ensure_browser.sh);
without them this module is skipped, saying so.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from mesh.console import ConsoleServer
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from tests.mesh_setup import ROOT, SEED_TASK, SLOW_TASK, cassette_lines
from tests.support import code, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="the browser tests need Debian's chromium and chromium-driver "
    "(/usr/bin/chromium, /usr/bin/chromedriver): `make browser` installs them",
)

SEED_ANSWER = "gRPC was open-sourced in 2015; the smallest prime factor of 2015 is 5."
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
HOSTILE_TASK = f"Ask the math specialist to repeat this: {HOSTILE}"
HOSTILE_MATH_TASK = "Answer with the markup you were given."
PARALLEL_TASK = "Ask both specialists at once."
RESEARCH_TASK = (
    "Find the year gRPC was open-sourced and remember it in the memo under the key "
    "'grpc_year'. Answer with the year only."
)
MATH_TASK = "What is the smallest prime factor of 2015? Answer with the number only."
MANY_TASK = "Compute a thousand factorials."
MANY_CALLS = 1000
"""Tool calls of the long run: two events each, over 2,000 events in one step."""

ARTIFACTS = Path(os.environ.get("MESH_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts" / "console")

# What the page shows of its tree, read in one call: each node with its parent node, state,
# figures, and its own (not its children's) code, tool calls, results and answer.
TREE_JS = """
const own = (node, selector) => [...node.querySelectorAll(selector)]
  .filter((el) => el.closest('.run-node') === node);
return [...document.querySelectorAll('#tree .run-node')].map((node) => {
  const head = (cls) => node.querySelector(':scope > .node-head > ' + cls);
  const parent = node.parentElement.closest('.run-node');
  const answer = node.querySelector(':scope > .node-body > .node-outcome .final-answer pre');
  return {
    run_id: node.dataset.runId, agent: node.dataset.agent, state: node.dataset.state,
    parent: parent ? parent.dataset.agent : null,
    own: [+head('.node-tokens').dataset.inputTokens, +head('.node-tokens').dataset.outputTokens],
    total: [+head('.node-total-tokens').dataset.inputTokens,
            +head('.node-total-tokens').dataset.outputTokens],
    cost: head('.node-cost').textContent,
    code: own(node, '.code').map((el) => el.textContent),
    highlighted: own(node, '.code span[class^="tok-"]').length,
    tools: own(node, '.tool-call').map((el) => el.dataset.name),
    results: own(node, '.tool-result').map((el) => el.textContent),
    answer: answer ? answer.textContent : null,
  };
});
"""

# Long tasks (over 50 ms of the main thread at once), recorded from the start of every page.
LONG_TASKS_JS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
}).observe({type: 'longtask', buffered: true});
"""


# Fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def console_dir(mesh_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test mesh's config and cassettes, with the runs of this module added."""
    directory = tmp_path_factory.mktemp("console-mesh")
    for path in mesh_dir.iterdir():
        if path.is_file():
            shutil.copy(path, directory / path.name)
    calls = [{"tool": "research_specialist", "arguments": {"task": RESEARCH_TASK}},
             {"tool": "math_specialist", "arguments": {"task": MATH_TASK}}]  # fmt: skip
    with (directory / "manager.jsonl").open("a") as manager:
        manager.write(cassette_lines(
            PARALLEL_TASK,
            code(f"results = run_parallel(calls={calls!r})"),
            code('final_answer([r["result"] for r in results])'),
        ))  # fmt: skip
        manager.write(cassette_lines(
            HOSTILE_TASK,
            code(f"reply = math_specialist(task={HOSTILE_MATH_TASK!r})\nprint(reply)", HOSTILE),
            code("final_answer(reply)"),
        ))  # fmt: skip
    with (directory / "math_specialist.jsonl").open("a") as math:
        math.write(cassette_lines(HOSTILE_MATH_TASK, code(f"final_answer({HOSTILE!r})", HOSTILE)))
        loop = f"for n in range({MANY_CALLS}):\n    factorial(n=n % 10)"
        math.write(cassette_lines(MANY_TASK, code(loop), code('final_answer("done")')))
    return directory


@pytest.fixture(scope="module")
def console_mesh(console_dir: Path) -> Iterator[MeshProcesses]:
    config = load_mesh_config(console_dir / "mesh.toml")
    env = {"MESH_MEMO_PATH": str(console_dir / "memo.sqlite3"),
           "MESH_AUDIT_DIR": str(console_dir / "audit"),
           "MESH_TRACE_DIR": str(console_dir / "traces")}  # fmt: skip
    with MeshProcesses(config, log_dir=console_dir / "logs", env=env) as processes:
        yield processes


@pytest.fixture(scope="module")
def console(console_mesh: MeshProcesses, console_dir: Path) -> Iterator[str]:
    """The console of that mesh, on a free port of loopback: its URL."""
    config = load_mesh_config(console_dir / "mesh.toml")
    server = ConsoleServer(config, "127.0.0.1:0", token=None, jaeger_url=None,
                           addresses=console_mesh.addresses, audit_dir=console_dir / "audit",
                           trace_dir=console_dir / "traces")  # fmt: skip
    with server:
        yield server.url.rstrip("/")


@pytest.fixture(scope="module")
def browser(console: str) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": LONG_TASKS_JS})
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def no_console_errors(browser: WebDriver) -> Iterator[None]:
    """A test fails on any error the page's console shows (scripts, refused resources)."""
    console_log(browser)  # what earlier tests left
    yield
    severe = [e["message"] for e in console_log(browser) if e["level"] == "SEVERE"]
    assert not severe, f"the browser's console shows errors: {severe}"


def console_log(browser: WebDriver) -> list[dict[str, Any]]:
    """The browser console's entries since the last call."""
    return list(browser.get_log("browser"))  # type: ignore[no-untyped-call]


# Helpers ---------------------------------------------------------------------------------


def api(console: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The console's API, as the page calls it (a POST with the session's CSRF token)."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        headers.update({"Content-Type": "application/json", "X-CSRF-Token": csrf(console)})
        data = json.dumps(body).encode()
    request = urllib.request.Request(console + path, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def csrf(console: str) -> str:
    return str(api(console, "/api/session")["csrf"])


def start_run(console: str, agent: str, task: str) -> str:
    return str(api(console, "/api/runs", {"agent": agent, "task": task})["run_id"])


def wait(browser: WebDriver, condition: Callable[[WebDriver], Any], timeout_s: float = 20) -> Any:
    """``condition``'s first truthy value; an element the page replaced meanwhile (a list it
    refreshed) makes it try again."""
    ignored = (StaleElementReferenceException,)
    return WebDriverWait(browser, timeout_s, poll_frequency=0.05,
                         ignored_exceptions=ignored).until(condition)  # fmt: skip


def open_page(browser: WebDriver, console: str, route: str) -> None:
    browser.get(f"{console}/{route}")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "body[data-ready]"))


def tree(browser: WebDriver) -> list[dict[str, Any]]:
    return list(browser.execute_script(TREE_JS))


def events_applied(browser: WebDriver) -> int:
    return int(browser.execute_script("return document.getElementById('tree').dataset.events"))


def click(browser: WebDriver, selector: str) -> bool:
    browser.find_element(By.CSS_SELECTOR, selector).click()
    return True


def stream_state(browser: WebDriver) -> str:
    return str(browser.find_element(By.ID, "tree").get_attribute("data-stream"))


def nodes_where(browser: WebDriver, **match: Any) -> list[dict[str, Any]]:
    return [n for n in tree(browser) if all(n[k] == v for k, v in match.items())]


def shot(browser: WebDriver, name: str, *, whole: bool = True) -> Path:
    """The whole page (up to 5,000 px down), or what the window shows, as a PNG among the
    test artifacts."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if not whole:
        browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))
        return ARTIFACTS / f"{name}.png"
    height = min(5000, int(browser.execute_script("return document.body.scrollHeight")))
    clip = {"x": 0, "y": 0, "width": 1280, "height": max(height, 900), "scale": 1}
    image = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(base64.b64decode(image["data"]))
    return path


def row_agents(browser: WebDriver) -> set[str]:
    script = "return [...document.querySelectorAll('.run-row')].map((row) => row.dataset.agent)"
    return set(browser.execute_script(script))


def run_of_page(browser: WebDriver) -> tuple[str, str]:
    """The (agent, run id) the page shows, from its address."""
    route = wait(browser, lambda b: b.execute_script("return location.hash").startswith("#/run/")
                 and b.execute_script("return location.hash"))  # fmt: skip
    _, _, agent, run_id = route.split("/", 3)
    return agent, run_id


# The tests -------------------------------------------------------------------------------


def test_the_seed_task_started_from_the_page(browser: WebDriver, console: str) -> None:
    open_page(browser, console, "#/runs")
    assert (
        Select(browser.find_element(By.ID, "start-agent")).first_selected_option.text == "manager"
    )
    assert browser.find_element(By.ID, "start-task").get_attribute("value") == SEED_TASK
    browser.find_element(By.ID, "start").click()
    agent, run_id = run_of_page(browser)
    assert agent == "manager"
    wait(browser, lambda b: nodes_where(b, agent="manager", parent=None, run_id=run_id))
    wait(browser, lambda b: stream_state(b) == "ended")
    nodes = {n["agent"]: n for n in tree(browser)}
    assert [(n["agent"], n["parent"]) for n in tree(browser)] == [
        ("manager", None),
        ("research_specialist", "manager"),
        ("math_specialist", "manager"),
    ]
    assert {n["state"] for n in nodes.values()} == {"succeeded"}
    manager, research, math = (
        nodes[a] for a in ("manager", "research_specialist", "math_specialist")
    )
    assert any("research_specialist(task=" in c for c in manager["code"])
    assert manager["highlighted"] > 0 and math["highlighted"] > 0  # the code is highlighted
    assert research["tools"] == ["web_search", "memo", "final_answer"]
    assert "open-sourced in 2015" in research["results"][0]
    assert math["code"][0].startswith("report = smallest_prime_factor(2015)")
    assert "smallest_prime_factor" in math["tools"]
    assert (research["answer"], math["answer"], manager["answer"]) == ("2015", "5", SEED_ANSWER)
    assert browser.find_element(By.ID, "run-status").get_attribute("data-status") == "succeeded"
    # Each node's own tokens are its run's, and the root's total is the whole tree's.
    for node in nodes.values():
        record = api(console, f"/api/runs/{node['agent']}/{node['run_id']}")
        assert node["own"] == [record["usage"]["input_tokens"], record["usage"]["output_tokens"]]
    root = api(console, f"/api/runs/manager/{run_id}")
    by_agent = root["usage_by_agent"]
    assert manager["total"] == [sum(u["input_tokens"] for u in by_agent.values()),
                                sum(u["output_tokens"] for u in by_agent.values())]  # fmt: skip
    assert manager["total"] == [a + b + c for a, b, c in zip(manager["own"], research["own"],
                                                             math["own"], strict=True)]  # fmt: skip
    assert manager["cost"] == f"${root['cost_usd']:.5f}"
    shot(browser, "seed-run")


def test_runs_list_filters_and_opens_a_run(browser: WebDriver, console: str) -> None:
    open_page(browser, console, "#/runs")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".run-row[data-agent=manager]"))
    Select(browser.find_element(By.ID, "filter-agent")).select_by_value("research_specialist")
    wait(browser, lambda b: row_agents(b) == {"research_specialist"})
    Select(browser.find_element(By.ID, "filter-state")).select_by_value("failed")
    wait(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, ".run-row"))
    Select(browser.find_element(By.ID, "filter-state")).select_by_value("succeeded")
    script = "const row = document.querySelector('.run-row'); return row && row.dataset.runId"
    run_id = wait(browser, lambda b: b.execute_script(script))
    shot(browser, "runs")
    selector = f'.run-row[data-run-id="{run_id}"]'
    wait(browser, lambda b: click(b, selector))
    assert run_of_page(browser) == ("research_specialist", run_id)
    wait(browser, lambda b: stream_state(b) == "ended")
    assert [(n["agent"], n["state"]) for n in tree(browser)] == [
        ("research_specialist", "succeeded")
    ]
    # Any run by its id, whichever agent ran it.
    manager_run = api(console, "/api/runs?agent=manager&limit=1")["runs"][0]["run_id"]
    for agent, run in (("research_specialist", run_id), ("manager", manager_run)):
        open_page(browser, console, "#/runs")
        field = browser.find_element(By.ID, "open-run-id")
        field.clear()
        field.send_keys(run)
        browser.find_element(By.ID, "open-run").click()
        assert run_of_page(browser) == (agent, run)
        wait(browser, lambda b: stream_state(b) == "ended")


def test_agents_show_cards_tools_and_health(browser: WebDriver, console: str) -> None:
    open_page(browser, console, "#/agents")
    cards = wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".agent-card"))
    assert {c.get_attribute("data-agent") for c in cards} == {
        "manager", "research_specialist", "math_specialist", "slow_specialist",
    }  # fmt: skip
    assert {c.get_attribute("data-healthy") for c in cards} == {"true"}
    research = browser.find_element(By.CSS_SELECTOR, ".agent-card[data-agent=research_specialist]")
    assert research.find_element(By.CLASS_NAME, "agent-kind").text == "tool-calling"
    assert (
        research.find_element(By.CLASS_NAME, "agent-model").text
        == "replay:research_specialist.jsonl"
    )
    memo = research.find_element(By.CSS_SELECTOR, ".tool[data-tool=memo]")
    memo.find_element(By.TAG_NAME, "summary").click()
    action = memo.find_element(By.XPATH, ".//tr[td/code[text()='action']]")
    assert '"set"' in action.text and "string" in action.text
    manager = browser.find_element(By.CSS_SELECTOR, ".agent-card[data-agent=manager]")
    managed = [a.text for a in manager.find_elements(By.CSS_SELECTOR, ".managed-agents a")]
    assert managed == ["research_specialist", "math_specialist", "slow_specialist"]
    shot(browser, "agents")
    # Works offline: the page loaded nothing from anywhere but the console.
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map((entry) => entry.name)"
    )
    assert loaded and all(url.startswith(console + "/") for url in loaded)


def test_audit_records_and_local_trace_one_click_away(browser: WebDriver, console: str) -> None:
    run_id = start_run(console, "manager", SEED_TASK)
    open_page(browser, console, f"#/run/manager/{run_id}")
    wait(browser, lambda b: stream_state(b) == "ended")
    root = browser.find_element(By.CSS_SELECTOR, f'.run-node[data-run-id="{run_id}"]')
    root.find_element(By.CSS_SELECTOR, ":scope > .node-head .audit-button").click()
    records = wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#panel .audit-record"))
    agents = {r.get_attribute("data-agent") for r in records}  # the run's and those beneath it
    assert agents == {"manager", "research_specialist", "math_specialist"}
    browser.find_element(By.ID, "panel-close").click()
    # No Jaeger here: the trace comes from the services' trace files (written within a moment).
    button = root.find_element(By.CSS_SELECTOR, ":scope > .node-head .trace-button")

    def spans(b: WebDriver) -> list[Any]:
        found = b.find_elements(By.CSS_SELECTOR, "#panel .span")
        if not found and b.find_elements(By.CSS_SELECTOR, "#panel-body .error-text"):
            button.click()  # not written yet: ask again
        return found if len(found) >= 3 else []

    button.click()
    names = {s.find_element(By.CLASS_NAME, "span-label").text for s in wait(browser, spans)}
    assert any("manager" in n for n in names) and any("math_specialist" in n for n in names)
    shot(browser, "trace", whole=False)
    browser.find_element(By.ID, "panel-close").click()


def test_parallel_branches_side_by_side(browser: WebDriver, console: str) -> None:
    run_id = start_run(console, "manager", PARALLEL_TASK)
    open_page(browser, console, f"#/run/manager/{run_id}")
    wait(browser, lambda b: stream_state(b) == "ended")
    assert sorted((n["agent"], n["parent"], n["state"]) for n in tree(browser)) == [
        ("manager", None, "succeeded"),
        ("math_specialist", "manager", "succeeded"),
        ("research_specialist", "manager", "succeeded"),
    ]
    # Both delegations of the step in one row, beside each other (in the order they started).
    row, tops, lefts = browser.execute_script("""
        const [a, b] = document.querySelectorAll('.run-node:not(.root)');
        const [one, two] = [a.getBoundingClientRect(), b.getBoundingClientRect()];
        return [a.parentElement === b.parentElement && a.parentElement.className,
                [one.top, two.top], [one.left, two.left]];""")
    assert row == "node-children"
    assert tops[0] == tops[1] and lefts[0] < lefts[1]
    shot(browser, "parallel-branches")


def test_with_jaeger_each_node_links_to_its_trace(
    browser: WebDriver, console_mesh: MeshProcesses, console_dir: Path, console: str
) -> None:
    run_id = start_run(console, "manager", SEED_TASK)
    wait_until(lambda: api(console, f"/api/runs/manager/{run_id}")["status"] == "succeeded")
    jaeger = "http://127.0.0.1:16686"
    config = load_mesh_config(console_dir / "mesh.toml")
    beside = ConsoleServer(config, "127.0.0.1:0", token=None, jaeger_url=jaeger,
                           addresses=console_mesh.addresses)  # fmt: skip
    with beside:
        open_page(browser, beside.url.rstrip("/"), f"#/run/manager/{run_id}")
        wait(browser, lambda b: stream_state(b) == "ended")
        links = browser.execute_script("""
            return [...document.querySelectorAll('.run-node')].map((node) => [node.dataset.agent,
              node.querySelector(':scope > .node-head .trace-link').href]);""")
        trace_id = links[0][1].rsplit("/", 1)[1]
        assert links == [[agent, f"{jaeger}/trace/{trace_id}"] for agent in
                         ("manager", "research_specialist", "math_specialist")]  # fmt: skip
        assert browser.find_element(By.ID, "run-trace").get_attribute("href") == links[0][1]
        started = [r for r in api(console, f"/api/audit/{run_id}")["records"]
                   if r["event"] == "RunStarted" and r["run_id"] == run_id]  # fmt: skip
        assert started[0]["trace_id"] == trace_id
        assert not browser.find_elements(By.CSS_SELECTOR, ".trace-button")
        browser.get("about:blank")  # its event streams closed before the console stops


def test_cancel_from_the_page_ends_every_node_cancelled(browser: WebDriver, console: str) -> None:
    open_page(browser, console, "#/runs")
    Select(browser.find_element(By.ID, "start-agent")).select_by_value("manager")
    task = browser.find_element(By.ID, "start-task")
    task.clear()
    task.send_keys(SLOW_TASK)
    browser.find_element(By.ID, "start-session").send_keys("browser-session-1")
    browser.find_element(By.ID, "start").click()
    _, run_id = run_of_page(browser)
    assert api(console, f"/api/runs/manager/{run_id}")["session_id"] == "browser-session-1"
    wait(
        browser,
        lambda b: nodes_where(b, agent="slow_specialist", parent="manager", state="running"),
    )
    shot(browser, "slow-running")
    browser.find_element(By.ID, "cancel").click()
    wait(browser, lambda b: stream_state(b) == "ended")
    assert [(n["agent"], n["state"]) for n in tree(browser)] == [
        ("manager", "cancelled"),
        ("slow_specialist", "cancelled"),
    ]
    assert browser.find_element(By.ID, "run-status").get_attribute("data-status") == "cancelled"
    assert not browser.find_elements(By.ID, "cancel")
    assert api(console, f"/api/runs/manager/{run_id}")["status"] == "cancelled"
    shot(browser, "slow-cancelled")


def test_reloading_mid_run_rejoins_the_run(browser: WebDriver, console: str) -> None:
    run_id = start_run(console, "manager", SLOW_TASK)
    open_page(browser, console, f"#/run/manager/{run_id}")
    wait(browser, lambda b: nodes_where(b, agent="slow_specialist", state="running"))
    seen = events_applied(browser)
    browser.refresh()
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "body[data-ready]"))
    # The page reads the run's events again from the first, rebuilding the tree, then goes on.
    wait(
        browser,
        lambda b: nodes_where(b, agent="slow_specialist", parent="manager", state="running"),
    )
    wait(browser, lambda b: stream_state(b) == "live")
    assert events_applied(browser) >= seen
    assert [(n["agent"], n["state"]) for n in tree(browser)] == [
        ("manager", "running"),
        ("slow_specialist", "running"),
    ]
    shot(browser, "reloaded-mid-run")
    api(console, f"/api/runs/manager/{run_id}/cancel", {})
    wait(browser, lambda b: stream_state(b) == "ended")  # the live part arrived after the reload
    assert {n["state"] for n in tree(browser)} == {"cancelled"}


def test_hostile_output_renders_as_text(browser: WebDriver, console: str) -> None:
    run_id = start_run(console, "manager", HOSTILE_TASK)
    open_page(browser, console, f"#/run/manager/{run_id}")
    wait(browser, lambda b: stream_state(b) == "ended")
    nodes = {n["agent"]: n for n in tree(browser)}
    assert nodes["manager"]["answer"] == nodes["math_specialist"]["answer"] == HOSTILE
    assert HOSTILE in nodes["manager"]["results"]  # the delegate's answer, as a tool result
    assert browser.find_element(By.CSS_SELECTOR, "#run-answer").text == HOSTILE
    assert HOSTILE in browser.find_element(By.CSS_SELECTOR, "#run-summary .task-text").text
    open_page(browser, console, "#/runs")  # the task, in the runs table
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f'.run-row[data-run-id="{run_id}"]'))
    browser.back()
    wait(browser, lambda b: stream_state(b) == "ended")
    model_texts = browser.find_elements(By.CSS_SELECTOR, ".model-text, .model-output-text")
    assert any(HOSTILE in t.text for t in model_texts)
    assert browser.execute_script(
        "return document.querySelectorAll('main img, main script, main iframe').length"
    ) == 0  # fmt: skip
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    shot(browser, "hostile-as-text")


def test_two_thousand_events_render_without_freezing(browser: WebDriver, console: str) -> None:
    run_id = start_run(console, "math_specialist", MANY_TASK)
    path = f"/api/runs/math_specialist/{run_id}"
    wait_until(lambda: api(console, path)["status"] == "succeeded", 60)
    # Opened once the run is over, its whole record arrives at once: the page's worst case.
    browser.get("about:blank")  # a page of its own: its long tasks are this run's
    open_page(browser, console, f"#/run/math_specialist/{run_id}")
    wait(browser, lambda b: stream_state(b) == "ended", 30)
    events = events_applied(browser)
    assert events > 2 * MANY_CALLS
    long_tasks = browser.execute_script("return window.__longTasks")
    assert max(long_tasks, default=0) < 200, f"the page froze: tasks of {long_tasks} ms"
    # The step shows its latest calls; earlier ones are one click away, the oldest not kept.
    shown = browser.find_elements(By.CSS_SELECTOR, ".step .tool-call")
    assert 0 < len(shown) <= 60
    earlier = browser.find_element(By.CSS_SELECTOR, ".step-items > button.earlier")
    assert "earlier items" in earlier.text and "not kept" in earlier.text
    shot(browser, "two-thousand-events")
    earlier.click()
    assert len(browser.find_elements(By.CSS_SELECTOR, ".step .tool-call")) == len(shown) + 50
    heap = browser.execute_script("return performance.memory.usedJSHeapSize")
    assert heap < 64 * 2**20
    [node] = tree(browser)
    assert node["state"] == "succeeded" and node["answer"] == "done"
