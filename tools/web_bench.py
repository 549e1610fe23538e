"""Figures of the web app, measured in a real browser: server start to first image, repeated Segment clicks on
one case (click to Finished, click to segments shown, the front end's own stages), peak server memory.

    .venv/bin/python tools/web_bench.py [--repeat 3] [--clicks 3] [--case DIR | --demo-size 128] [--device auto]

Each repetition starts a fresh server (``python -m GLIMSSegmenterWeb --port 0``) with an empty user folder (the
bundled model) and a fresh headless Chromium (Debian ``chromium`` + ``chromium-driver``, Selenium), then:

* **start to first image**: from starting the server process until the page shows its four views (streamed
  images), with the time until the server printed its address;
* the case loaded: the synthetic sample case, or with ``--case DIR`` the image files in ``DIR`` (the server gets
  ``--data DIR`` and the page loads its top-level case, e.g. a real BraTS case; inputs are assigned by name);
* **Segment clicks**: *Segment* clicked ``--clicks`` times in a row on the same case (the first click starts the
  warm engine worker, later ones find it warm; each click comes 1 s after the page showed the last one's result).
  Per click: from the click until the status says *Finished* with the new result selected, and until the axial
  view shows the segments (a view image sent after the click, with its pixels changed from the case's image
  before the first click: the page shows only the newest result). From the server's log, the front end's own
  stages: writing the engine's input files (or reusing them) and importing the result into the scene; and the
  engine's job (its own total: model, preprocessing, inference, postprocessing, writing) with its thread count
  (from its log);
* **peak server memory**: the server process's peak resident memory (``VmHWM``; the engine runs in a child
  process, reported separately as the largest resident size seen while polling every 0.1 s).

Prints the load average before and after, a table of the start figures and one of the clicks (one row per
repetition and click, then the medians per click; Markdown).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Testing" / "web"))
sys.path.insert(0, str(REPO / "GLIMSSegmenter"))
sys.path.insert(0, str(REPO))

from browser import WebServer, changedFraction, elementPixels, startChromium, viewImages, waitFor  # noqa: E402

INPUTS_LINE = re.compile(r"segmentation inputs: (\d+) file\(s\) reused, (\d+) written in ([\d.]+) s")
THREADS_LINE = re.compile(r"CPU threads: (\d+) threads? of")
IMPORT_LINE = re.compile(r"segmentation imported in ([\d.]+) s \(engine: [^)]*total ([\d.]+) s\)")


def peakResidentMb(pid: int) -> float:
    """``VmHWM`` of a process (its peak resident memory so far), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc (Linux only)")


class ChildMemoryWatch:
    """Largest resident size of the server's child processes (the engine), polled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.parent = psutil.Process(pid)
        self.peakMb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for child in self.parent.children(recursive=True):
                    self.peakMb = max(self.peakMb, child.memory_info().rss / 2**20)
            except Exception:  # a child ended between listing and reading
                pass
            time.sleep(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peakMb


def state(driver, name: str):
    return driver.execute_script("return window.trame.state.get(arguments[0])", name)


def ready(driver, elementId: str):
    """The element, once it is displayed and enabled."""
    return waitFor(lambda: (lambda e: e if e.is_displayed() and e.is_enabled() else None)(
        driver.find_element("id", elementId)), 60, f"#{elementId}")


def click(driver, elementId: str) -> None:
    ready(driver, elementId).click()


def imageSource(driver) -> str:
    """The ``src`` of the axial view's image: a new one for every image the server sends."""
    return viewImages(driver)[0].get_attribute("src")


def loadCase(driver, case: Path | None) -> None:
    if case is None:
        click(driver, "glims-sample-menu")
        click(driver, "glims-sample-synthetic-demo")
    else:
        click(driver, "glims-data-menu")
        click(driver, "glims-data-data:0")
    waitFor(lambda: state(driver, "case_message").startswith("Loaded "), 300, "the case")


_WATCH_FINISHED = """
const previous = arguments[0];
const timing = window.glimsBench = {finishedMs: null};
const clicked = performance.now();
let unwatch = null;
unwatch = window.trame.state.watch(['seg_status', 'edit_segmentation'], (status, result) => {
  if (timing.finishedMs === null && String(status || '').startsWith('Finished')
      && result !== null && result !== previous) {
    timing.finishedMs = performance.now() - clicked;
    if (unwatch !== null) unwatch();
  }
});
document.getElementById('glims-segment').click();
"""


def segmentOnce(driver, blank) -> tuple[float, float, int]:
    """Click *Segment*; seconds until *Finished* with a new result, and until the axial view shows segments; the
    engine's thread count (from its log).

    *Finished* is timed in the page (a trame state watcher set up with the click), so the benchmark asks the page
    only every 0.25 s while the engine works (asking it often costs the browser CPU time the engine would
    otherwise have); from *Finished* on it looks at the view every 0.05 s."""
    time.sleep(1.0)  # the page settles (views, 3D surfaces) as it would while a person looks at it
    previous, sourceBefore = state(driver, "edit_segmentation"), imageSource(driver)
    ready(driver, "glims-segment")
    clicked = time.monotonic()
    driver.execute_script(_WATCH_FINISHED, previous)  # the click, with the watcher that times it
    finishedMs = waitFor(lambda: driver.execute_script("return window.glimsBench.finishedMs"), 600,
                         "the segmentation", interval=0.25)
    finished = finishedMs / 1000
    waitFor(lambda: imageSource(driver) != sourceBefore
            and changedFraction(blank, elementPixels(viewImages(driver)[0])) > 0.005, 60,
            "the segments in the axial view", interval=0.05)
    shown = time.monotonic() - clicked
    threads = [int(m.group(1)) for line in state(driver, "seg_log") for m in [THREADS_LINE.search(line)] if m]
    return finished, shown, threads[-1] if threads else 0


def frontEndStages(log: str) -> list[tuple[float, int, float]]:
    """Per finished click, from the server's log: (seconds writing inputs, inputs reused, seconds importing,
    seconds of the engine's job)."""
    inputs = [(float(m.group(3)), int(m.group(1))) for m in INPUTS_LINE.finditer(log)]
    imports = [(float(m.group(1)), float(m.group(2))) for m in IMPORT_LINE.finditer(log)]
    return [(*written, *imported) for written, imported in zip(inputs, imports, strict=False)]


def oneRun(work: Path, demoSize: int, device: str, case: Path | None, clicks: int) -> dict:
    home = work / "home"
    home.mkdir()
    started = time.monotonic()
    arguments = ["--home", str(home), "--demo-size", str(demoSize), "--device", device]
    server = WebServer(work / "server.log", arguments + (["--data", str(case)] if case is not None else []))
    addressAfter = time.monotonic() - started
    driver = startChromium(work / "downloads", work / "profile")
    try:
        driver.get(server.url)
        waitFor(lambda: len(viewImages(driver)) >= 4, 120, "the four views", interval=0.05)
        firstImage = time.monotonic() - started
        loadCase(driver, case)
        waitFor(lambda: elementPixels(viewImages(driver)[0]).std() > 10, 60, "the FLAIR in the axial view")
        time.sleep(1.0)
        blank = elementPixels(viewImages(driver)[0])
        watch = ChildMemoryWatch(server.process.pid)
        times = [segmentOnce(driver, blank) for _ in range(clicks)]
        engineMb = watch.stop()
        stages = frontEndStages(server.log())
        if len(stages) != clicks:
            raise RuntimeError(f"the server logged the stages of {len(stages)} of {clicks} clicks")
        perClick = [
            {"finished": finished, "shown": shown, "inputs_s": inputs, "reused": reused, "engine_s": engine,
             "threads": threads, "import_s": imported}
            for (finished, shown, threads), (inputs, reused, imported, engine) in zip(times, stages, strict=True)
        ]
        return {"address": addressAfter, "first_image": firstImage, "server_mb": peakResidentMb(server.process.pid),
                "engine_mb": engineMb, "clicks": perClick}
    finally:
        driver.quit()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clicks", type=int, default=3, help="Segment clicks per repetition (default 3)")
    parser.add_argument("--case", type=Path, help="a folder of the case's image files (default: the synthetic sample)")
    parser.add_argument("--demo-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.case is not None and not args.case.is_dir():
        parser.error(f"--case {args.case}: not a folder")
    case = args.case.resolve() if args.case is not None else None
    print("load average before (1, 5, 15 min): " + ", ".join(f"{v:.1f}" for v in os.getloadavg()), flush=True)
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="glims-web-bench-") as work:
            runs.append(oneRun(Path(work), args.demo_size, args.device, case, args.clicks))
    loadAfter = os.getloadavg()
    print("\n| run | server address (s) | first image (s) | peak server RSS (MB) | peak engine RSS (MB) |")
    print("|---|---|---|---|---|")
    for number, run in enumerate(runs, start=1):
        print(f"| {number} | {run['address']:.1f} | {run['first_image']:.1f} | {run['server_mb']:.0f} | "
              f"{run['engine_mb']:.0f} |")
    median = {key: statistics.median(r[key] for r in runs) for key in ("address", "first_image", "server_mb",
                                                                       "engine_mb")}
    print(f"| median | {median['address']:.1f} | {median['first_image']:.1f} | {median['server_mb']:.0f} | "
          f"{median['engine_mb']:.0f} |")
    print("\n| run | click | Segment → Finished (s) | Segment → segments shown (s) | inputs written (s) "
          "| inputs reused | engine job (s) | engine threads | result imported (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [(number, index, c) for number, run in enumerate(runs, start=1)
            for index, c in enumerate(run["clicks"], start=1)]
    for number, index, c in rows:
        print(f"| {number} | {index} | {c['finished']:.2f} | {c['shown']:.2f} | {c['inputs_s']:.2f} | "
              f"{c['reused']} | {c['engine_s']:.2f} | {c['threads']} | {c['import_s']:.2f} |")
    for index in range(1, args.clicks + 1):
        same = [c for _, i, c in rows if i == index]
        m = {key: statistics.median(c[key] for c in same)
             for key in ("finished", "shown", "inputs_s", "engine_s", "import_s")}
        print(f"| median | {index} | {m['finished']:.2f} | {m['shown']:.2f} | {m['inputs_s']:.2f} | "
              f"| {m['engine_s']:.2f} | | {m['import_s']:.2f} |")
    print("load average after (1, 5, 15 min): " + ", ".join(f"{v:.1f}" for v in loadAfter))
    return 0


if __name__ == "__main__":
    sys.exit(main())
