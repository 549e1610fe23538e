"""Figures of the web app, measured in a real browser: server start to first image, Segment click to segments
shown (synthetic sample case), peak server memory.

    .venv/bin/python tools/web_bench.py [--repeat 3] [--demo-size 128] [--device auto]

Each repetition starts a fresh server (``python -m GLIMSSegmenterWeb --port 0``) with an empty user folder (the
bundled model) and a fresh headless Chromium (Debian ``chromium`` + ``chromium-driver``, Selenium), then:

* **start to first image**: from starting the server process until the page shows its four views (streamed
  images), with the time until the server printed its address;
* **Segment to segments shown**: the sample case loaded, from the click on *Segment* until the status says
  *Finished* and the axial view shows the segments (its pixels changed);
* **peak server memory**: the server process's peak resident memory (``VmHWM``; the engine runs in a child
  process, reported separately as the largest resident size seen while polling every 0.1 s).

Prints the load average before and after, one table row per repetition and the medians (Markdown).
"""

from __future__ import annotations

import argparse
import os
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


def click(driver, elementId: str) -> None:
    element = waitFor(lambda: (lambda e: e if e.is_displayed() and e.is_enabled() else None)(
        driver.find_element("id", elementId)), 60, f"#{elementId}")
    element.click()


def oneRun(work: Path, demoSize: int, device: str) -> dict[str, float]:
    home = work / "home"
    home.mkdir()
    started = time.monotonic()
    server = WebServer(work / "server.log", ["--home", str(home), "--demo-size", str(demoSize),
                                            "--device", device])
    addressAfter = time.monotonic() - started
    driver = startChromium(work / "downloads", work / "profile")
    try:
        driver.get(server.url)
        waitFor(lambda: len(viewImages(driver)) >= 4, 120, "the four views", interval=0.05)
        firstImage = time.monotonic() - started
        click(driver, "glims-sample-menu")
        click(driver, "glims-sample-synthetic-demo")
        waitFor(lambda: "Loaded 4 volumes" in state(driver, "case_message"), 300, "the sample case")
        waitFor(lambda: elementPixels(viewImages(driver)[0]).std() > 10, 60, "the FLAIR in the axial view")
        time.sleep(1.0)
        before = elementPixels(viewImages(driver)[0])
        watch = ChildMemoryWatch(server.process.pid)
        clicked = time.monotonic()
        click(driver, "glims-segment")
        waitFor(lambda: state(driver, "seg_status").startswith("Finished"), 600, "the segmentation", interval=0.05)
        finished = time.monotonic() - clicked
        waitFor(lambda: changedFraction(before, elementPixels(viewImages(driver)[0])) > 0.005, 60,
                "the segments in the axial view", interval=0.05)
        shown = time.monotonic() - clicked
        engineMb = watch.stop()
        return {"address": addressAfter, "first_image": firstImage, "finished": finished, "shown": shown,
                "server_mb": peakResidentMb(server.process.pid), "engine_mb": engineMb}
    finally:
        driver.quit()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--demo-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    rows = []
    print("load average before (1, 5, 15 min): " + ", ".join(f"{v:.1f}" for v in os.getloadavg()))
    print("| run | server address (s) | first image (s) | Segment → Finished (s) | Segment → segments shown (s) "
          "| peak server RSS (MB) | peak engine RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for run in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory(prefix="glims-web-bench-") as work:
            row = oneRun(Path(work), args.demo_size, args.device)
        rows.append(row)
        print(f"| {run} | {row['address']:.1f} | {row['first_image']:.1f} | {row['finished']:.1f} | "
              f"{row['shown']:.1f} | {row['server_mb']:.0f} | {row['engine_mb']:.0f} |", flush=True)
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    print(f"| median | {median['address']:.1f} | {median['first_image']:.1f} | {median['finished']:.1f} | "
          f"{median['shown']:.1f} | {median['server_mb']:.0f} | {median['engine_mb']:.0f} |")
    print("load average after (1, 5, 15 min): " + ", ".join(f"{v:.1f}" for v in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
