"""The web app in a real browser: the user flow click by click, on the synthetic sample case.

sample case -> Segment -> the three segment names appear -> a second Segment keeps the slice and the 3D view the
user chose, and the surfaces off when the user turned them off -> a paint stroke changes the view -> undo reverts it ->
switching between two results shows each with its own edits ->
the exported .seg.nrrd reads back with slicerio on the reference grid with terminology -> Cancel mid-run adds no
segmentation -> a one-epoch fine-tune of a tiny model offers the new version. Pixel checks are thresholded
differences of the same view, never comparisons with stored images.

The tests share one browser and server (starting them takes a while), in this order; each one first brings the
page to what it needs (the sample case loaded, a result, a second training case, the tiny model chosen) where an
earlier test has not, so any of them also runs alone.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from browser import DEMO_SIZE, changedFraction, elementPixels, viewImages, waitFor

pytestmark = pytest.mark.usefixtures("browser_available")

SEGMENT_NAMES = ("Necrotic tumour core (NCR)", "Peritumoral edema (ED)", "Enhancing tumour (ET)")
JOB_TIMEOUT_S = 120


def _click(chrome, elementId: str) -> None:
    element = waitFor(lambda: chrome.find_element("id", elementId), 20, f"#{elementId}")
    waitFor(lambda: element.is_enabled() and element.is_displayed(), 30, f"#{elementId} enabled")
    chrome.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def _text(chrome, elementId: str) -> str:
    return chrome.find_element("id", elementId).text


def _state(chrome, name: str):
    """A value of the page's state (what the widgets show)."""
    return chrome.execute_script("return window.trame.state.get(arguments[0])", name)


def _shownListItems(chrome) -> list[str]:
    """The text of the list items on show, with the values of their text fields (the segment list shows each
    name in a field that renames the segment)."""
    return chrome.execute_script(
        "return Array.from(document.querySelectorAll('.v-list-item')).filter(e => e.offsetParent !== null)"
        ".map(e => e.textContent + ' ' + Array.from(e.querySelectorAll('input')).map(i => i.value).join(' '))")


def _tab(chrome, name: str) -> None:
    _click(chrome, f"glims-tab-{name}")
    time.sleep(0.6)  # the panel slides in (Vuetify's window transition); clicks during it may miss


def _save(chrome, folder: Path, name: str) -> None:
    time.sleep(0.5)  # let the last view images arrive
    chrome.save_screenshot(str(folder / name))


def _type(chrome, elementId: str, text: str) -> None:
    """Replace the text of the field ``elementId`` as a user does (select all, type)."""
    from selenium.webdriver.common.keys import Keys

    field = waitFor(lambda: (lambda f: f if f.is_displayed() and f.is_enabled() else None)(
        chrome.find_element("id", elementId)), 20, f"#{elementId}")
    field.click()
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(text)


def _choose(chrome, selectId: str, text: str) -> None:
    """Open the drop-down list ``selectId`` and click its item containing ``text``."""
    from selenium.webdriver.common.action_chains import ActionChains

    field = waitFor(lambda: [f for f in chrome.find_elements(
        "xpath", f"//input[@id='{selectId}']/ancestor::div[contains(@class, 'v-field')][1]") if f.is_displayed()],
        20, f"the list #{selectId}")[0]
    ActionChains(chrome).move_to_element(field).click().perform()
    item = waitFor(lambda: [o for o in chrome.find_elements("css selector", ".v-overlay .v-list-item")
                            if text in o.text and o.is_displayed()], 20, f"'{text}' in #{selectId}")
    item[0].click()


def _iconButton(chrome, icon: str):
    """The shown button with the Material Design icon ``icon`` (e.g. ``mdi-brush``)."""
    found = waitFor(lambda: [b for b in chrome.find_elements("css selector", "button")
                             if b.find_elements("css selector", f".{icon}") and b.is_displayed()], 20, icon)
    return found[0]


def _putBrushAway(chrome) -> None:
    """Choose "No tool", so that the brush outline is no longer drawn in the view."""
    _iconButton(chrome, "mdi-cursor-default").click()


def _axialPixels(chrome) -> np.ndarray:
    return elementPixels(viewImages(chrome)[0])


def _threeDView(chrome):
    """The 3D view's image: the top one of the three small views."""
    return min(viewImages(chrome)[1:], key=lambda img: img.location["y"])


def _threeDPixels(chrome) -> np.ndarray:
    return elementPixels(_threeDView(chrome))


def _tinyModelChosen(chrome) -> bool:
    """The tiny model (``tiny-brats``, any version) is the chosen one."""
    return str(_state(chrome, "seg_model")).split("@")[0] == "tiny-brats"


def _chooseTinyModel(chrome) -> None:
    _choose(chrome, "glims-model", "(yours: tiny-brats)")
    waitFor(lambda: _tinyModelChosen(chrome), 20, "the tiny model selected")


def _loadSample(chrome) -> None:
    """Load the synthetic sample case (anew: the scene is emptied first, earlier results go)."""
    _tab(chrome, "segment")
    _click(chrome, "glims-sample-menu")
    _click(chrome, "glims-sample-synthetic-demo")
    waitFor(lambda: "Loaded 4 volumes" in _text(chrome, "glims-case-message"), 60, "the case to load")


@pytest.fixture
def sample_case(chrome) -> None:
    """The synthetic sample case is the page's case (loaded here unless it already is)."""
    waitFor(lambda: len(viewImages(chrome)) >= 4, 60, "the four views")
    if not _state(chrome, "case_title").startswith("Synthetic brain MRI"):
        _loadSample(chrome)


def _segment(chrome) -> None:
    """Click Segment and wait for the job to finish."""
    _tab(chrome, "segment")
    _click(chrome, "glims-segment")
    waitFor(lambda: _state(chrome, "seg_status").startswith("Finished"), JOB_TIMEOUT_S, "the segmentation")


@pytest.fixture
def segmented_sample(sample_case, chrome) -> None:
    """The sample case has a result of the default model (made here unless there is one)."""
    if not _state(chrome, "edit_segmentations"):
        _segment(chrome)


@pytest.fixture
def two_training_cases(segmented_sample, chrome) -> None:
    """The training set holds two cases, enough to fine-tune (the sample's result added here unless it holds
    two), and the tiny model is the one chosen."""
    if len(_state(chrome, "train_cases")) < 2:
        _tab(chrome, "train")
        _click(chrome, "glims-add-case")
        waitFor(lambda: len(_state(chrome, "train_cases")) == 2, 60, "the case to be stored")
    if not _tinyModelChosen(chrome):
        _tab(chrome, "segment")
        _chooseTinyModel(chrome)


def test_token_is_required(web_server):
    plain = web_server.url.split("?")[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(plain, timeout=10)
    assert refused.value.code == 403
    with urllib.request.urlopen(web_server.url, timeout=10) as answer:
        assert answer.status == 200
        assert "glims_web_token" in answer.headers.get("Set-Cookie", "")


def _engineWorkers(server) -> list:
    """The server's ``glims worker`` child processes."""
    import psutil

    found = []
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if "worker" in child.cmdline():
                found.append(child)
        except psutil.Error:  # it ended while being looked at
            pass
    return found


def test_sample_case_loads(chrome, web_server, screenshot_folder):
    waitFor(lambda: len(viewImages(chrome)) >= 4, 60, "the four views")
    _loadSample(chrome)
    # the engine worker starts with the case, so that its imports are done before the first Segment
    waitFor(lambda: _engineWorkers(web_server), 30, "the engine worker")
    assert [_state(chrome, f"seg_input_{slot}") for slot in range(1, 5)] == [
        v["value"] for v in sorted(_state(chrome, "seg_volumes"), key=lambda v: ["flair", "t1ce", "t1", "t2"].index(
            v["title"].rsplit("_", 1)[1]))]
    waitFor(lambda: _axialPixels(chrome).std() > 10, 30, "the FLAIR image in the axial view")
    _save(chrome, screenshot_folder, "web_case_loaded.png")


def test_segment_shows_named_segments(chrome, screenshot_folder):
    waitFor(lambda: len(viewImages(chrome)) >= 4, 60, "the four views")
    _loadSample(chrome)  # anew: the view shows the case without any earlier result
    waitFor(lambda: _axialPixels(chrome).std() > 10, 30, "the FLAIR image in the axial view")
    time.sleep(0.5)  # the last image of the case alone has arrived
    before, emptyThreeD = _axialPixels(chrome), _threeDPixels(chrome)
    _segment(chrome)
    _tab(chrome, "edit")
    shown = waitFor(lambda: (lambda items: items if all(any(n in i for i in items) for n in SEGMENT_NAMES) else None)(
        _shownListItems(chrome)), 30, "the segment names in the segment list")
    assert [next(i for i in shown if n in i) for n in SEGMENT_NAMES]
    assert len(_state(chrome, "edit_segmentations")) == 1
    waitFor(lambda: changedFraction(before, _axialPixels(chrome)) > 0.005, 30, "the segments drawn in the view")
    waitFor(lambda: changedFraction(emptyThreeD, _threeDPixels(chrome)) > 0.02, 30, "the surfaces in the 3D view")
    _save(chrome, screenshot_folder, "web_result.png")


def test_a_new_result_keeps_the_views_where_the_user_left_them(sample_case, chrome):
    """The slice the user scrolled to and the 3D view they turned stay as they are when the next result arrives
    (the same model on the same case: the same segments, so the views must look the same as before the run)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    _segment(chrome)
    time.sleep(1.0)  # the result's images have arrived
    framed, axial = _threeDPixels(chrome), _axialPixels(chrome)
    for _ in range(6):
        ActionChains(chrome).scroll_from_origin(ScrollOrigin.from_element(viewImages(chrome)[0]), 0, 120).perform()
        time.sleep(0.1)
    ActionChains(chrome).move_to_element(_threeDView(chrome)).click_and_hold().move_by_offset(80, 0).release().perform()
    waitFor(lambda: changedFraction(axial, _axialPixels(chrome)) > 0.02, 30, "another slice in the axial view")
    waitFor(lambda: changedFraction(framed, _threeDPixels(chrome)) > 0.02, 30, "the 3D view turned")
    time.sleep(1.0)  # the last images of the user's views have arrived
    scrolled, turned = _axialPixels(chrome), _threeDPixels(chrome)

    _segment(chrome)
    time.sleep(1.5)  # the new result's images have arrived
    assert changedFraction(scrolled, _axialPixels(chrome)) < 0.002
    assert changedFraction(turned, _threeDPixels(chrome)) < 0.002


SHOW_3D = "SegmentEditorState__segment_display__SegmentDisplayState__show_3d"
"""The page state of the segment editor's *Toggle 3D* (in its *Rendering* settings)."""


def _toggleShow3D(chrome) -> None:
    """Click *Toggle 3D* in the Edit tab's *Rendering* settings (opened first if closed); the views' own 3D
    buttons are right of the panel."""
    _tab(chrome, "edit")
    panelRight = viewImages(chrome)[0].location["x"]
    toggles = lambda: [b for b in chrome.find_elements("css selector", "button")  # noqa: E731
                       if b.find_elements("css selector", ".mdi-video-3d") and b.is_displayed()
                       and b.location["x"] < panelRight]
    if not toggles():
        heading = waitFor(lambda: [t for t in chrome.find_elements("xpath", "//span[normalize-space()='Rendering']")
                                   if t.is_displayed()], 20, "the Rendering settings")[0]
        chrome.execute_script("arguments[0].scrollIntoView({block: 'center'})", heading)
        heading.click()
    toggle = waitFor(toggles, 20, "Toggle 3D")[0]
    chrome.execute_script("arguments[0].scrollIntoView({block: 'center'})", toggle)
    toggle.click()


def test_the_next_result_follows_the_users_3d_choice(segmented_sample, chrome):
    """Surfaces turned off in the editor stay off for the next result; turned on again, they come back."""
    shown = _threeDPixels(chrome)
    _toggleShow3D(chrome)
    waitFor(lambda: _state(chrome, SHOW_3D) is False, 20, "Toggle 3D off")
    waitFor(lambda: changedFraction(shown, _threeDPixels(chrome)) > 0.02, 30, "the surfaces gone from the 3D view")
    time.sleep(1.0)
    without = _threeDPixels(chrome)

    _segment(chrome)
    time.sleep(1.5)  # the editor has taken the new result (and would have built its surfaces)
    assert _state(chrome, SHOW_3D) is False
    assert changedFraction(without, _threeDPixels(chrome)) < 0.002

    _toggleShow3D(chrome)
    waitFor(lambda: _state(chrome, SHOW_3D) is True, 20, "Toggle 3D on")
    waitFor(lambda: changedFraction(without, _threeDPixels(chrome)) > 0.02, 30, "the surfaces back in the 3D view")


def _paintStroke(chrome, below: float = 0.25) -> np.ndarray:
    """Paint one stroke across the axial view with the current segment, ``below`` the view's height under its
    centre (negative: above); the view's pixels before it (taken before Paint is chosen: no brush outline)."""
    from selenium.webdriver.common.action_chains import ActionChains

    _tab(chrome, "edit")
    view = viewImages(chrome)[0]
    before = elementPixels(view)
    _iconButton(chrome, "mdi-brush").click()
    time.sleep(1.0)
    width, height = view.size["width"], view.size["height"]
    actions = ActionChains(chrome)
    actions.move_to_element_with_offset(view, -width // 6, int(height * below)).click_and_hold()
    for step in range(1, 11):
        actions.move_by_offset(width // 30, 0).pause(0.05)
    actions.release().perform()
    return before


def test_paint_changes_view_and_undo_reverts(segmented_sample, chrome, screenshot_folder):
    before = _paintStroke(chrome)
    _save(chrome, screenshot_folder, "web_editing.png")
    _putBrushAway(chrome)
    [painted] = waitFor(lambda: (lambda now: (now,) if changedFraction(before, now) > 0.002 else None)(
        _axialPixels(chrome)), 30, "the paint stroke in the view")
    assert changedFraction(before, painted) > 0.002

    undo = _iconButton(chrome, "mdi-undo")
    waitFor(lambda: undo.is_enabled(), 20, "Undo enabled")
    undo.click()
    waitFor(lambda: changedFraction(before, _axialPixels(chrome)) < 0.0005, 30, "the view after undo")
    assert changedFraction(before, _axialPixels(chrome)) < changedFraction(before, painted) / 4


def test_switching_results_shows_each_with_its_own_edits(segmented_sample, chrome):
    """Two results of the same case: a stroke painted on the newer one is not on the older one, and is there again
    when the newer one is chosen back (the editor follows the choice; nothing is replaced)."""
    if len(_state(chrome, "edit_segmentations")) < 2:
        _segment(chrome)
    results = _state(chrome, "edit_segmentations")  # oldest first
    newer, older = _state(chrome, "edit_segmentation"), results[-2]
    assert newer == results[-1]["value"]
    time.sleep(1.0)
    unpainted = _paintStroke(chrome, below=-0.25)  # not where the Paint test paints: it may run after this one
    _putBrushAway(chrome)
    [painted] = waitFor(lambda: (lambda now: (now,) if changedFraction(unpainted, now) > 0.002 else None)(
        _axialPixels(chrome)), 30, "the paint stroke in the view")

    _choose(chrome, "glims-result", older["title"])
    waitFor(lambda: _state(chrome, "edit_segmentation") == older["value"], 20, "the older result chosen")
    waitFor(lambda: changedFraction(unpainted, _axialPixels(chrome)) < 0.0005, 30, "the older result, unpainted")
    _choose(chrome, "glims-result", results[-1]["title"])
    waitFor(lambda: changedFraction(painted, _axialPixels(chrome)) < 0.0005, 30, "the newer result with its stroke")


def test_export_reads_back_on_reference_grid(segmented_sample, chrome, tmp_path):
    import SimpleITK as sitk
    import slicerio
    from GLIMSSegmenterWeb.cases import SAMPLE_DEMO, prepareSample

    _tab(chrome, "train")
    _click(chrome, "glims-export")
    name = waitFor(lambda: _text(chrome, "glims-export-message").split(" as ")[-1].rstrip(".")
                   if "Exported" in _text(chrome, "glims-export-message") else "", 60, "the export")
    assert name.endswith(".seg.nrrd")
    path = waitFor(lambda: (chrome.downloads / name) if (chrome.downloads / name).is_file() and not list(
        chrome.downloads.glob("*.crdownload")) else None, 60, f"the download of {name}")
    segmentation = slicerio.read_segmentation(str(path))
    assert [s["name"] for s in segmentation["segments"]] == list(SEGMENT_NAMES)
    for segment in segmentation["segments"]:
        assert segment["terminology"]["category"], segment
        assert segment["terminology"]["type"], segment
    assert sorted({int(v) for v in np.unique(segmentation["voxels"])} - {0}) <= [1, 2, 3]
    sample = prepareSample(SAMPLE_DEMO, tmp_path, DEMO_SIZE)  # the same generated case as the server's
    flair = sitk.ReadImage(str(sample.files[0]))
    assert segmentation["voxels"].shape == flair.GetSize()
    assert np.allclose(segmentation["ijkToLPS"][:3, 3], flair.GetOrigin(), atol=1e-3)
    spacing = np.linalg.norm(segmentation["ijkToLPS"][:3, :3], axis=0)
    assert np.allclose(spacing, flair.GetSpacing(), atol=1e-4)


def _overlapSlider(chrome):
    """The thumb of the *Window overlap* slider in the open *Device and quality* panel (it takes arrow keys)."""
    return waitFor(lambda: [t for t in chrome.find_elements(
        "xpath", "//div[@id='glims-run-options']//div[contains(@class, 'v-input')][.//label[contains(., 'Window "
        "overlap')]]//div[contains(@class, 'v-slider-thumb')]") if t.is_displayed()], 20, "the overlap slider")[0]


def _toggleRunOptions(chrome) -> None:
    """Open (or close) the *Device and quality* panel."""
    chrome.find_element("css selector", "#glims-run-options .v-expansion-panel-title").click()


def _tickWholeImage(chrome, ticked: bool) -> None:
    """Click the *Whole image* box (its label) and wait for the page to hold ``ticked``."""
    label = waitFor(lambda: [e for e in chrome.find_elements(
        "xpath", "//div[@id='glims-run-options']//label[contains(., 'Whole image')]") if e.is_displayed()],
        20, "the Whole image box")[0]
    label.click()
    waitFor(lambda: _state(chrome, "seg_wholeImage") is ticked, 10, f"Whole image {'on' if ticked else 'off'}")


def _setOverlap(chrome, key: str, presses: int, expected: float) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    thumb = _overlapSlider(chrome)
    ActionChains(chrome).move_to_element(thumb).click().perform()
    for _ in range(presses):
        thumb.send_keys(key)
    waitFor(lambda: abs(float(_state(chrome, "seg_overlap")) - expected) < 1e-6, 10, f"overlap {expected}")


def _transitionSeconds(chrome, selector: str) -> list[float]:
    """The longest CSS transition of each element matching ``selector``, in seconds (as the browser computes it)."""
    durations = chrome.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(e => getComputedStyle(e).transitionDuration)", selector)
    return [max(float(d.strip().rstrip("ms")) / (1000 if d.strip().endswith("ms") else 1) for d in text.split(","))
            for text in durations]


def test_cancel_leaves_no_segmentation(sample_case, chrome):
    from selenium.webdriver.common.keys import Keys

    _tab(chrome, "segment")
    count = len(_state(chrome, "edit_segmentations"))
    # A job long enough to cancel on any machine (a repeated Segment of the sample with the bundled model takes a
    # fraction of a second): the tiny model on its 1 mm grid, over the whole image, at overlap 0.9 (1,728 windows).
    _chooseTinyModel(chrome)
    _toggleRunOptions(chrome)
    _tickWholeImage(chrome, True)
    _setOverlap(chrome, Keys.END, 1, 0.9)
    try:
        _click(chrome, "glims-segment")
        waitFor(lambda: _text(chrome, "glims-segment").strip().lower() == "cancel", 20, "the Cancel button")
        # the progress bar steps without Vuetify's animation, which kept the browser busy while the engine worked
        assert _transitionSeconds(chrome, "#glims-seg-progress .v-progress-linear__determinate") == [0.0]
        _click(chrome, "glims-segment")
        waitFor(lambda: _text(chrome, "glims-seg-status").startswith("Cancelled"), JOB_TIMEOUT_S, "the cancel")
        assert len(_state(chrome, "edit_segmentations")) == count
        assert _text(chrome, "glims-segment").strip().lower() == "segment"
    finally:  # the page's settings as the other tests expect them
        _setOverlap(chrome, Keys.ARROW_LEFT, 8, 0.5)
        _tickWholeImage(chrome, False)
        _toggleRunOptions(chrome)
        _choose(chrome, "glims-model", "GLIMS BraTS, small default model")


def test_a_failing_job_leaves_the_page_usable(sample_case, chrome):
    _tab(chrome, "segment")
    count = len(_state(chrome, "edit_segmentations"))
    _choose(chrome, "glims-model", "(yours: tiny-broken)")
    _click(chrome, "glims-segment")
    status = waitFor(lambda: (lambda s: s if s.startswith("Failed") else None)(_state(chrome, "seg_status")),
                     JOB_TIMEOUT_S, "the failure")
    assert "sha256" in status or "checksum" in status or "weights" in status, status
    assert len(_state(chrome, "edit_segmentations")) == count
    _choose(chrome, "glims-model", "GLIMS BraTS, small default model")
    waitFor(lambda: _state(chrome, "seg_button_enabled"), 20, "Segment enabled again")


def test_fine_tune_offers_the_new_model(segmented_sample, chrome, screenshot_folder):
    _tab(chrome, "train")
    _click(chrome, "glims-add-case")
    message = waitFor(lambda: _text(chrome, "glims-train-message"), 60, "the case to be stored")
    assert message.startswith("Added"), message
    cases = [case["id"] for case in _state(chrome, "train_cases")]
    # the stored case of the test home and the sample's (added once, however often its result is added)
    assert len(cases) == 2 and "stored-synthetic-7" in cases and any(c.startswith("GLIMS-SYN-DEMO") for c in cases)

    _tab(chrome, "segment")
    _chooseTinyModel(chrome)

    _tab(chrome, "train")
    _type(chrome, "glims-train-epochs", "1")
    waitFor(lambda: str(_state(chrome, "train_epochs")) == "1", 10, "one epoch")
    _click(chrome, "glims-finetune")
    waitFor(lambda: _state(chrome, "train_busy"), 20, "the fine-tuning to start")
    assert _state(chrome, "seg_button_enabled") is False  # one engine job at a time
    assert not _state(chrome, "train_interrupted")
    waitFor(lambda: _text(chrome, "glims-train-status").startswith("Finished"), 240, "the fine-tuning")
    use = chrome.find_element("id", "glims-use-model")
    assert "tiny-brats@1.1.0" in use.text.lower()  # a model you added gets a new version
    chart = chrome.find_element("id", "glims-train-chart")
    assert chart.find_elements("css selector", "svg polyline")
    chrome.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
    _save(chrome, screenshot_folder, "web_finetune.png")
    use.click()
    waitFor(lambda: "version 1.1.0" in _state(chrome, "seg_model_summary"), 20, "the new version selected")
    assert _state(chrome, "seg_model") == "tiny-brats"


def test_stopping_fine_tuning_registers_nothing(two_training_cases, chrome, web_home):
    from glims.catalog import load_catalog

    _tab(chrome, "train")
    versions = [m.ref for m in load_catalog(web_home).models]
    _type(chrome, "glims-train-epochs", "20")
    waitFor(lambda: str(_state(chrome, "train_epochs")) == "20", 10, "twenty epochs")
    _click(chrome, "glims-finetune")
    waitFor(lambda: _state(chrome, "train_busy"), 20, "the fine-tuning to start")
    _click(chrome, "glims-finetune")  # now "Stop"
    waitFor(lambda: _state(chrome, "train_status").startswith("Stopped"), JOB_TIMEOUT_S, "the stop")
    assert [m.ref for m in load_catalog(web_home).models] == versions  # the catalog on disk is unchanged
    assert _state(chrome, "seg_button_enabled")


def test_upload_loads_files_and_refuses_other_types(chrome, tmp_path):
    from GLIMSSegmenterWeb.cases import SAMPLE_DEMO, prepareSample

    _tab(chrome, "segment")
    files = prepareSample(SAMPLE_DEMO, tmp_path, 32).files
    upload = chrome.find_element("css selector", "#glims-upload-files")
    upload.send_keys("\n".join(str(path) for path in files))
    waitFor(lambda: "Loaded 4 volumes" in _text(chrome, "glims-case-message"), 60, "the uploaded case")
    title = _state(chrome, "case_title")
    assert title.startswith("Uploaded: ") and title.endswith("_t2.nii.gz") and "_flair.nii.gz, " in title
    assert all(_state(chrome, f"seg_input_{slot}") for slot in range(1, 5))
    assert _state(chrome, "edit_segmentations") == []  # a new case starts without results

    note = tmp_path / "notes.nii.gz"
    note.write_text("not an image")
    upload.send_keys(str(note))
    message = waitFor(lambda: (lambda m: m if m.startswith("Not loaded") else None)(
        _text(chrome, "glims-case-message")), 60, "the refusal")
    assert "not a readable image file" in message
