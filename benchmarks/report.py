"""How long `postmortem report` takes on a big dump, how big the page is, and how long
headless Chromium takes to show it.

    python benchmarks/report.py --dump DIR [--runs 3] [--no-browser]
    python benchmarks/report.py --processes 1000 --rounds 5     # builds a synthetic dump

Prints the median of --runs of:

* `postmortem report DUMP -o OUT` as a subprocess (imports, load, analyze, page written);
* the page's size;
* in headless Chromium (Debian's chromium and chromedriver, through selenium): from
  navigation until every figure is drawn (`data-figures` on <html>), whether the verdict is
  visible then, and how long the last process's details take to unpack when opened.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import make_dump  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def write_report(dump: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "postmortem", "report", str(dump), "-o", str(out), "--force"],
        check=True, capture_output=True, text=True,
        env={**os.environ, "POSTMORTEM_CACHE": "off"},  # every run cold (benchmarks/cache.py)
    )
    return time.perf_counter() - start


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="postmortem-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.profile_dir = profile
    return driver


def show(driver: Any, page: Path) -> dict[str, Any]:
    from selenium.webdriver.support.ui import WebDriverWait

    start = time.perf_counter()
    driver.get(page.resolve().as_uri())
    WebDriverWait(driver, 300, poll_frequency=0.05).until(
        lambda d: d.execute_script("return document.documentElement.dataset.figures"))
    drawn = time.perf_counter() - start
    state: dict[str, Any] = driver.execute_script("""
        const v = document.querySelector('#verdict .class');
        const r = v.getBoundingClientRect();
        return {status: document.documentElement.dataset.figures,
                verdict: v.innerText, verdict_on_screen: r.height > 0 && r.top < innerHeight,
                figures: document.querySelectorAll('[data-rendered="true"]').length,
                wanted: document.querySelectorAll('[data-figure]').length};
    """)
    state["drawn_s"] = drawn
    start = time.perf_counter()
    opened = driver.execute_script("""
        const all = document.querySelectorAll('#processes details[data-pid]');
        const d = all[all.length - 1];
        d.open = true;
        return all.length;
    """)
    WebDriverWait(driver, 60, poll_frequency=0.02).until(lambda d: d.execute_script("""
        const all = document.querySelectorAll('#processes details[data-pid]');
        const lazy = all[all.length - 1].querySelector('.pm-lazy');
        return !lazy || lazy.dataset.loaded === 'true';
    """))
    state["details_s"] = time.perf_counter() - start
    state["processes"] = opened
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", type=Path)
    parser.add_argument("--processes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="postmortem-bench-report-"))
    try:
        dump = args.dump
        if dump is None:
            dump = work / "dump"
            make_dump(dump, args.processes, args.rounds, 0)
        page = work / "report.html"
        writes = [write_report(dump, page) for _ in range(args.runs)]
        size = page.stat().st_size
        print(f"report written: median {statistics.median(writes):.2f} s "
              f"({', '.join(f'{w:.2f}' for w in writes)}); {size / 1e6:.2f} MB")
        if args.no_browser or not CHROMIUM.exists() or not CHROMEDRIVER.exists():
            return
        shows = []
        for _ in range(args.runs):
            driver = browser()
            try:
                shows.append(show(driver, page))
            finally:
                driver.quit()
                shutil.rmtree(driver.profile_dir, ignore_errors=True)
        last = shows[-1]
        each = ", ".join(f"{s['drawn_s']:.2f}" for s in shows)
        print(f"chromium: every figure drawn after median "
              f"{statistics.median(s['drawn_s'] for s in shows):.2f} s "
              f"({each}); status {last['status']}, "
              f"{last['figures']} of {last['wanted']} figures, verdict {last['verdict']!r} "
              f"on screen: {last['verdict_on_screen']}; the last of {last['processes']} "
              f"processes' details open in "
              f"{statistics.median(s['details_s'] for s in shows):.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
