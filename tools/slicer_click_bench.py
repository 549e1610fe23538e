"""Figures of the Slicer module's Segment click, measured through its logic on a real MRML scene (the slicer-core
wheel, no Qt): each click until the result is a segmentation node in the scene, then its 3D surfaces.

    .venv/bin/python tools/slicer_click_bench.py --case ../shared/data/brats/tcga_fg_6692 [--repeat 3] [--clicks 3]

Each repetition makes a fresh headless Slicer scene (``Testing/slicer/headless_slicer.py``) and a fresh module logic
with an empty user folder (the bundled model) and its own warm engine worker, which it starts as the panel does when
the module is shown (``prestartWorker``), loads the case's image files as volumes (as Add Data does), then clicks
*Segment* ``--clicks`` times on the same volumes, the first ``--pause`` seconds after the volumes are loaded (default
0; ``--cold``: no worker started before it, the first click starts one). A click is what the
panel does: ``segmentFromParameterNode``'s ``startSegmentation`` with the matched inputs, the job polled every
``GLIMSSegmenterLib.job.POLL_INTERVAL_S`` (the panel's timer), until the result is in the scene. Not included:
Slicer's own rendering of the views, which the desktop application does after the click's handler returns, and the
3D surfaces (*Show 3D*, on by default), which the panel builds after the slice views have drawn the result; their
time is given in a column of its own.

Prints the load average before and after, one table row per click (click to result, the front end's input writing
and result import, the engine's job time and threads from its log) and the medians per click (Markdown).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Testing" / "slicer"))
sys.path.insert(0, str(REPO / "GLIMSSegmenter"))

from glims.cpu_threads import threads_in_log_line  # noqa: E402


def loadAverage() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def click(logic, modelId: str, inputs: dict, poll: float) -> dict:
    """One Segment click to its result in the scene; its figures."""
    logs: list[str] = []
    start = time.perf_counter()
    job = logic.startSegmentation(modelId, inputs, onLog=logs.append)
    while not job.poll():
        time.sleep(poll)
    if job.errorMessage:
        raise RuntimeError(job.errorMessage)
    elapsed = time.perf_counter() - start
    surfacesStart = time.perf_counter()
    logic.setShowIn3D(job.segmentationNode, True)
    surfaces = time.perf_counter() - surfacesStart
    threads = next((n for line in logs if (n := threads_in_log_line(line)) is not None), None)
    return {
        "click to result (s)": elapsed,
        "inputs written (s)": job.timings.get("write inputs", float("nan")),
        "engine job (s)": float((job.summary.get("timings_s") or {}).get("total", float("nan"))),
        "engine threads": threads,
        "result imported (s)": job.timings.get("import", float("nan")),
        "3D surfaces after it (s)": surfaces,
    }


def repetition(case: Path, clicks: int, poll: float, prestart: bool = True, pause: float = 0.0) -> list[dict]:
    from headless_slicer import HeadlessSlicer, terminology_folder

    app = HeadlessSlicer(terminology_folder())
    app.install()  # before the logic is imported: it needs slicer.ScriptedLoadableModule
    from GLIMSSegmenterLib.logic import GLIMSSegmenterLogic
    from GLIMSSegmenterLib.warmworker import WarmWorker

    with tempfile.TemporaryDirectory(prefix="glims-click-bench-") as home:
        logic = GLIMSSegmenterLogic(glimsHome=home)
        logic.warmWorker = WarmWorker()
        try:
            if prestart:
                logic.prestartWorker()  # the module shown
            volumes = [app.load_volume(path) for path in sorted(case.glob("*.nii*"))]
            modelId = logic.defaultModelId()
            inputs = logic.matchInputVolumes(modelId, volumes)
            time.sleep(pause)  # a person looking at the case before the first click
            return [click(logic, modelId, inputs, poll) for _ in range(clicks)]
        finally:
            logic.releaseWorker()
            app.clear()


def main() -> int:
    from GLIMSSegmenterLib.job import POLL_INTERVAL_S

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", type=Path, required=True, help="folder of one case's image files")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions, each with a fresh scene and worker")
    parser.add_argument("--clicks", type=int, default=3, help="Segment clicks per repetition")
    parser.add_argument("--cold", action="store_true",
                        help="no worker started before the first click (the first click starts it)")
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds between loading the volumes and the first click (default 0)")
    args = parser.parse_args()
    print(f"load average before (1, 5, 15 min): {loadAverage()}\n")
    rows = [(run + 1, number + 1, figures) for run in range(args.repeat)
            for number, figures in enumerate(repetition(args.case, args.clicks, POLL_INTERVAL_S, not args.cold,
                                                             args.pause))]
    columns = list(rows[0][2])
    print("| run | click | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))

    def cell(value) -> str:
        return "" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))

    for run, number, figures in rows:
        print(f"| {run} | {number} | " + " | ".join(cell(figures[c]) for c in columns) + " |")
    for number in range(1, args.clicks + 1):
        same = [figures for _, n, figures in rows if n == number]
        medians = [statistics.median(f[c] for f in same) if c != "engine threads" else None for c in columns]
        print(f"| median | {number} | " + " | ".join(cell(m) for m in medians) + " |")
    print(f"\nload average after (1, 5, 15 min): {loadAverage()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
