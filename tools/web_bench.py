"""Figures of the web app, measured in a real browser: server start to first image, repeated Segment clicks on
one case (click to Finished, click to segments shown, the front end's own stages), peak server memory.

    .venv/bin/python tools/web_bench.py [--repeat 3] [--clicks 3] [--case DIR | --demo-size 128] [--device auto]

Each repetition starts a fresh server (``python -m GLIMSSegmenterWeb --port 0``) with an empty user folder (the
bundled model) and a fresh headless Chromium (Debian ``chromium`` + ``chromium-driver``, Selenium), then:

* **start to first image**: from starting the server process until the page shows its four views (streamed
  images), with the time until the server printed its address;
* the case loaded: the synthetic sample case, or with ``--case DIR`` the image files in ``DIR`` (the server gets
  ``--data DIR`` and the page loads its top-level case, e.g. a real BraTS case; inputs are assigned by name);
* **Segment clicks**: *Segment* clicked ``--clicks`` times in a row on the same case (the warm engine worker starts
  when the case is loaded, and the first click, 1 s after the case is shown, may still wait for its imports; each
  later click comes 1 s after the page showed the last one's result).
  Per click, timed in the page: from the click until the status says *Finished* with the new result selected,
  and until the axial view shows the segments (the first view image after *Finished* whose pixels differ from
  the case's image before the first click: the page shows only the newest result). From the server's log, the
  front end's own stages: writing the engine's input files (or reusing them) and importing the result into the
  scene; and the engine's job (its own total: model, preprocessing, inference, postprocessing, writing) with its
  thread count (from its log). The CPU seconds that the browser (all its processes), the server itself and the
  engine used from the click until the benchmark saw *Finished* (it looks every 0.25 s): what the engine shared
  its cores with;
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

from browser import WebServer, elementPixels, startChromium, viewImages, waitFor  # noqa: E402

from glims.cpu_threads import threads_in_log_line  # noqa: E402

INPUTS_LINE = re.compile(r"segmentation inputs: (\d+) file\(s\) reused, (\d+) written in ([\d.]+) s")
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


def processCpuSeconds(pid: int, children: bool) -> float:
    """CPU seconds (user + system) a process has used, with ``children`` those of its descendants instead."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = root.children(recursive=True) if children else [root]
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:  # ended between listing and reading
                pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


class CpuShares:
    """CPU seconds of the browser (chromedriver's descendants), the server itself and its children (the engine)
    between :meth:`start` and :meth:`stop`."""

    def __init__(self, browserPid: int, serverPid: int) -> None:
        self.sources = {"browser": (browserPid, True), "server": (serverPid, False), "engine": (serverPid, True)}

    def _now(self) -> dict[str, float]:
        return {name: processCpuSeconds(pid, children) for name, (pid, children) in self.sources.items()}

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> dict[str, float]:
        after = self._now()
        return {name: max(0.0, after[name] - self._before[name]) for name in after}


def state(driver, name: str):
    return driver.execute_script("return window.trame.state.get(arguments[0])", name)


def ready(driver, elementId: str):
    """The element, once it is displayed and enabled."""
    return waitFor(lambda: (lambda e: e if e.is_displayed() and e.is_enabled() else None)(
        driver.find_element("id", elementId)), 60, f"#{elementId}")


def click(driver, elementId: str) -> None:
    ready(driver, elementId).click()


def loadCase(driver, case: Path | None) -> None:
    if case is None:
        click(driver, "glims-sample-menu")
        click(driver, "glims-sample-synthetic-demo")
    else:
        click(driver, "glims-data-menu")
        click(driver, "glims-data-data:0")
    waitFor(lambda: state(driver, "case_message").startswith("Loaded "), 300, "the case")


_PAGE_TIMING = """
window.glimsAxialImage = () => Array.from(document.querySelectorAll('img'))
  .filter(img => img.complete && img.naturalWidth > 50)
  .sort((a, b) => b.width * b.height - a.width * a.height)[0];
window.glimsPixels = (img) => {
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  return context.getImageData(0, 0, canvas.width, canvas.height);
};
window.glimsChangedFraction = (before, after) => {
  if (before.width !== after.width || before.height !== after.height) return 0;  // not comparable: not counted
  let changed = 0;
  for (let i = 0; i < before.data.length; i += 4) {
    const d = Math.max(Math.abs(before.data[i] - after.data[i]), Math.abs(before.data[i + 1] - after.data[i + 1]),
                       Math.abs(before.data[i + 2] - after.data[i + 2]));
    if (d > %(threshold)d) changed += 1;
  }
  return changed / (before.data.length / 4);
};
window.glimsBlank = window.glimsPixels(window.glimsAxialImage());
"""

_CLICK_AND_TIME = """
const previous = arguments[0];
const timing = window.glimsBench = {finishedMs: null, shownMs: null};
const clicked = performance.now();
let unwatch = null;
let sourceAtFinished = null;
const lookForSegments = () => {
  const img = window.glimsAxialImage();
  if (img && img.src !== sourceAtFinished
      && window.glimsChangedFraction(window.glimsBlank, window.glimsPixels(img)) > %(fraction)s) {
    timing.shownMs = performance.now() - clicked;
  } else {
    setTimeout(lookForSegments, 10);
  }
};
unwatch = window.trame.state.watch(['seg_status', 'edit_segmentation'], (status, result) => {
  if (timing.finishedMs === null && String(status || '').startsWith('Finished')
      && result !== null && result !== previous) {
    timing.finishedMs = performance.now() - clicked;
    if (unwatch !== null) unwatch();
    sourceAtFinished = window.glimsAxialImage().src;
    lookForSegments();
  }
});
document.getElementById('glims-segment').click();
"""
SHOWN_THRESHOLD = 40
"""A pixel has changed when one of its channels differs by more than this (``browser.changedFraction``'s)."""
SHOWN_FRACTION = 0.005
"""The axial view shows the segments when more than this share of its pixels differ from the case alone."""


def segmentOnce(driver, cpu: CpuShares) -> tuple[float, float, int, dict[str, float]]:
    """Click *Segment*; seconds until *Finished* with a new result, and until the axial view shows segments; the
    engine's thread count (from its log); the CPU seconds of browser, server and engine from the click to
    *Finished* (an engine worker started by the click counts from its start).

    Both times are taken in the page: a trame state watcher set up with the click sees *Finished*, then the axial
    view's images are compared with the case's image before the first click (``markBlank``) every 10 ms until one
    sent after the click differs; the benchmark asks the page only every 0.25 s (asking it often costs the browser
    CPU time the engine would otherwise have)."""
    time.sleep(1.0)  # the page settles (views, 3D surfaces) as it would while a person looks at it
    previous = state(driver, "edit_segmentation")
    ready(driver, "glims-segment")
    cpu.start()
    driver.execute_script(_CLICK_AND_TIME % {"fraction": SHOWN_FRACTION}, previous)
    waitFor(lambda: driver.execute_script("return window.glimsBench.finishedMs"), 600, "the segmentation",
            interval=0.25)
    shares = cpu.stop()
    timing = waitFor(lambda: (lambda t: t if t["shownMs"] is not None else None)(
        driver.execute_script("return window.glimsBench")), 60, "the segments in the axial view", interval=0.25)
    threads = [n for line in state(driver, "seg_log") if (n := threads_in_log_line(line)) is not None]
    return timing["finishedMs"] / 1000, timing["shownMs"] / 1000, threads[-1] if threads else 0, shares


def markBlank(driver) -> None:
    """Keep the axial view's image as it is now (the case without segments) in the page, for ``segmentOnce``."""
    driver.execute_script(_PAGE_TIMING % {"threshold": SHOWN_THRESHOLD})


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
        markBlank(driver)
        watch = ChildMemoryWatch(server.process.pid)
        cpu = CpuShares(driver.service.process.pid, server.process.pid)
        times = [segmentOnce(driver, cpu) for _ in range(clicks)]
        engineMb = watch.stop()
        stages = frontEndStages(server.log())
        if len(stages) != clicks:
            raise RuntimeError(f"the server logged the stages of {len(stages)} of {clicks} clicks")
        perClick = [
            {"finished": finished, "shown": shown, "inputs_s": inputs, "reused": reused, "engine_s": engine,
             "threads": threads, "import_s": imported, **{f"cpu_{name}": value for name, value in shares.items()}}
            for (finished, shown, threads, shares), (inputs, reused, imported, engine)
            in zip(times, stages, strict=True)
        ]
        return {"address": addressAfter, "first_image": firstImage, "server_mb": peakResidentMb(server.process.pid),
                "engine_mb": engineMb, "clicks": perClick}
    finally:
        driver.quit()
        server.stop()


CPU_KEYS = ("cpu_browser", "cpu_server", "cpu_engine")


def cpuShares(click: dict) -> str:
    return " / ".join(f"{click[key]:.2f}" for key in CPU_KEYS)


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
          "| inputs reused | engine job (s) | engine threads | result imported (s) | CPU s to Finished: browser / "
          "server / engine |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [(number, index, c) for number, run in enumerate(runs, start=1)
            for index, c in enumerate(run["clicks"], start=1)]
    for number, index, c in rows:
        print(f"| {number} | {index} | {c['finished']:.2f} | {c['shown']:.2f} | {c['inputs_s']:.2f} | "
              f"{c['reused']} | {c['engine_s']:.2f} | {c['threads']} | {c['import_s']:.2f} | {cpuShares(c)} |")
    for index in range(1, args.clicks + 1):
        same = [c for _, i, c in rows if i == index]
        m = {key: statistics.median(c[key] for c in same)
             for key in ("finished", "shown", "inputs_s", "engine_s", "import_s", *CPU_KEYS)}
        print(f"| median | {index} | {m['finished']:.2f} | {m['shown']:.2f} | {m['inputs_s']:.2f} | "
              f"| {m['engine_s']:.2f} | | {m['import_s']:.2f} | {cpuShares(m)} |")
    print("load average after (1, 5, 15 min): " + ", ".join(f"{v:.1f}" for v in loadAfter))
    return 0


if __name__ == "__main__":
    sys.exit(main())
