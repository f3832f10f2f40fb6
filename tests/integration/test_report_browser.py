"""The HTML report in a real headless Chromium: every figure draws, no JavaScript error,
no network request, hostile strings from a live capture stay text. A screenshot of each
page is saved (to $POSTMORTEM_SCREENSHOTS when set, else the test's tmp dir)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("POSTMORTEM_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("POSTMORTEM_CHROMEDRIVER", "/usr/bin/chromedriver"))
FIGURES = ("cluster", "progress", "threads", "stacks", "timeline", "checkpoint", "steptimes",
           "tracedstep")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
                       reason=f"needs Debian's chromium and chromedriver ({CHROMIUM}, "
                       f"{CHROMEDRIVER}): apt-get install chromium chromium-driver"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install "
                                "selenium) to drive chromium")

from tests.conftest import (  # noqa: E402
    HOSTILE,
    SIX_MB,
    add_recorded_save,
    sample_dumps,
    write_cluster_dump,
)

# Runs before any script of the page: records errors, CSP violations and dialogs.
WATCH = """
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push('error: ' + (e.message || (e.target && e.target.outerHTML) || e.type));
}, true);
window.addEventListener('unhandledrejection', function (e) {
  window.__errors.push('rejection: ' + String(e.reason));
});
document.addEventListener('securitypolicyviolation', function (e) {
  window.__errors.push('csp: ' + e.violatedDirective + ' ' + e.blockedURI);
});
window.alert = window.confirm = window.prompt = function (m) {
  window.__errors.push('dialog: ' + m);
};
"""

HOSTILE_TARGET = """
import logging, sys, threading, time
logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                    format="%(asctime)s %(process)d %(threadName)s %(levelname)s %(message)s")
name = sys.argv[1]
def wait():
    threading.Event().wait()
threading.Thread(target=wait, name=name, daemon=True).start()
logging.info("global_step: 100 loss = 0.5")
logging.error("ERROR %s", name)
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def screenshot_dir(tmp_path: Path) -> Path:
    target = Path(os.environ.get("POSTMORTEM_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture()
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="postmortem-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-default-apps",
                f"--user-data-dir={profile}", "--window-size=1400,3200"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def render(dump: Path, out: Path) -> Path:
    result = subprocess.run([sys.executable, "-m", "postmortem", "report", str(dump), "-o",
                             str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def open_report(driver: Any, report: Path, shot: Path) -> dict[str, Any]:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(report.resolve().as_uri())
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.documentElement.dataset.figures"))
    state: dict[str, Any] = driver.execute_script("""
        const figures = {};
        document.querySelectorAll('[data-figure]').forEach(function (el) {
          figures[el.dataset.figure] = {rendered: el.dataset.rendered,
                                         svg: el.querySelectorAll('.main-svg').length};
        });
        return {status: document.documentElement.dataset.figures, figures: figures,
                errors: window.__errors, pwned: typeof window.__pwned,
                resources: performance.getEntriesByType('resource').map(e => e.name),
                verdict: document.querySelector('#verdict .class').innerText,
                absent: Array.from(document.querySelectorAll('[data-figure-absent]'))
                             .map(e => e.dataset.figureAbsent),
                injected: document.querySelectorAll('main img, main script, main iframe')
                                  .length};
    """)
    driver.save_screenshot(str(shot))
    state["console"] = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    return state


def assert_clean(state: dict[str, Any]) -> None:
    assert state["errors"] == [], state["errors"]
    assert state["console"] == [], state["console"]
    assert state["resources"] == [], "the report made network requests"
    assert state["status"] == "rendered"
    assert state["verdict"].strip()
    for key in FIGURES:
        if key in state["absent"]:
            continue
        assert key in state["figures"], f"figure {key} is neither drawn nor explained"
        assert state["figures"][key]["rendered"] == "true", key
        assert state["figures"][key]["svg"] >= 1, key


@pytest.mark.timeout(180)
def test_cluster_report_draws_every_figure(browser: Any, tmp_path: Path) -> None:
    dump = write_cluster_dump(tmp_path / "cluster")
    add_recorded_save(dump)  # its worker ran the flight recorder: every figure has data
    report = render(dump, tmp_path / "cluster.html")
    state = open_report(browser, report, screenshot_dir(tmp_path) / "cluster.png")
    assert_clean(state)
    assert state["absent"] == []
    assert "oversized-tensor-transfer" in state["verdict"] or state["verdict"]


@pytest.mark.timeout(180)
def test_stack_tree_expands_on_click(browser: Any, tmp_path: Path) -> None:
    report = render(write_cluster_dump(tmp_path / "cluster"), tmp_path / "c.html")
    open_report(browser, report, screenshot_dir(tmp_path) / "before-click.png")
    # Clicking a frame zooms the icicle into it: plotly reports the new level.
    level = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const el = document.getElementById('fig-stacks');
        el.on('plotly_animated', function () { done(el._fullData[0].level || null); });
        const bars = el.querySelectorAll('g.slice');
        bars[1].dispatchEvent(new MouseEvent('click', {bubbles: true}));
        setTimeout(function () { done(el._fullData[0].level || 'no level'); }, 5000);
    """)
    assert level not in (None, "", "no level")


@pytest.mark.live
@pytest.mark.timeout(240)
def test_hostile_strings_from_a_live_capture_stay_text(browser: Any, tmp_path: Path) -> None:
    program = tmp_path / "hostile_target.py"
    program.write_text(HOSTILE_TARGET)
    log = (tmp_path / "target.err").open("w")
    target = subprocess.Popen([sys.executable, str(program), HOSTILE], stdout=subprocess.PIPE,
                              stderr=log, start_new_session=True)
    try:
        assert target.stdout is not None
        assert target.stdout.readline().strip() == b"ready"
        dump = tmp_path / "hostile-dump"
        capture = subprocess.run(
            [sys.executable, "-m", "postmortem", "capture", "--pid", str(target.pid), "-o",
             str(dump), "--samples", "2", "--interval", "0.3"],
            capture_output=True, text=True, timeout=120)
        assert capture.returncode == 0, capture.stderr
    finally:
        os.killpg(target.pid, signal.SIGKILL)
        target.wait(timeout=10)
        log.close()
    report = render(dump, tmp_path / "hostile.html")
    page = report.read_text()
    assert HOSTILE not in page and "<img" not in page
    state = open_report(browser, report, screenshot_dir(tmp_path) / "hostile.png")
    assert state["pwned"] == "undefined"
    assert state["injected"] == 0
    assert_clean(state)
    shown = browser.execute_script("return document.body.innerText")
    assert HOSTILE in shown  # the name is displayed, as text


@pytest.mark.timeout(600)
@pytest.mark.parametrize("sample", sample_dumps(), ids=lambda p: p.name)
def test_sample_reports_render(browser: Any, tmp_path: Path, sample: Path) -> None:
    report = render(sample, tmp_path / f"{sample.name}.html")
    assert report.stat().st_size < SIX_MB, f"{report.stat().st_size} bytes"
    state = open_report(browser, report, screenshot_dir(tmp_path) / f"{sample.name}.png")
    assert_clean(state)


@pytest.mark.timeout(300)
def test_a_big_dump_opens_its_processes_on_demand(browser: Any, tmp_path: Path) -> None:
    # GIVEN the report of a dump of 80 processes (the benchmark's synthetic one: a frozen ps)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from selenium.webdriver.support.ui import WebDriverWait
    from synthetic import make_dump

    truth = make_dump(tmp_path / "big", 80, 2, 3)
    report = render(tmp_path / "big", tmp_path / "big.html")
    state = open_report(browser, report, screenshot_dir(tmp_path) / "big.png")
    assert_clean(state)
    assert set(FIGURES) - set(state["absent"]) == {
        k for k, v in state["figures"].items() if v["rendered"] == "true"}
    # WHEN the filter is given a role
    shown = browser.execute_script("""
        const f = document.getElementById('pm-process-filter');
        f.value = 'ps:'; f.dispatchEvent(new Event('input'));
        return [document.querySelectorAll('#processes details[data-pid]:not([hidden])').length,
                document.getElementById('pm-process-count').innerText];
    """)
    # THEN only the ps remain
    assert shown[0] == truth["params"]["num_ps"], shown
    assert shown[1] == f"{shown[0]} of 80 processes"
    # WHEN the culprit's details (the first) are opened
    browser.execute_script("document.querySelector('#processes details[data-pid]').open = true;")
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(
        "return document.querySelector('#processes details[data-pid] .pm-lazy')"
        ".dataset.loaded === 'true'"))
    # THEN its command line and stacks are unpacked into the page
    text = browser.execute_script(
        "return document.querySelector('#processes details[data-pid]').innerText")
    assert f"pid {truth['culprit_pid']}" in text
    assert "--job_name=ps" in text and "command line" in text
    assert browser.execute_script(
        "return document.querySelectorAll('#processes details[data-pid] pre.stacks').length") == 1
    assert browser.execute_script("return window.__errors") == []
