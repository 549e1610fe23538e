"""The synthetic case generator: labels agree with the images, tissues have their sequence contrasts, seeds are
reproducible, the site shift changes the appearance only, and cases are written in BraTS naming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from glims.cli import main
from glims.errors import ConfigError
from glims.synth import (
    LABEL_ED,
    LABEL_ET,
    LABEL_NCR,
    MODALITIES,
    NORMAL_TISSUES,
    SITE_PROFILES,
    GENERATOR_VERSIONS,
    SynthParams,
    dataset_case_seed,
    generate_case,
    shifted_site,
    synth_params,
    write_case,
)

SHAPE = (64, 64, 64)
SPACING = 2.5
SEEDS = tuple(range(6))
WM, GM, CSF = (NORMAL_TISSUES.index(t) + 1 for t in ("wm", "gm", "csf"))


@pytest.fixture(scope="module")
def cases():
    return {seed: generate_case(seed, SHAPE, SPACING) for seed in SEEDS}


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """6-connected binary dilation, ``steps`` times (no wrap-around)."""
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        for axis in range(3):
            for shift in (1, -1):
                moved = np.zeros_like(out)
                src = [slice(None)] * 3
                dst = [slice(None)] * 3
                src[axis] = slice(0, -1) if shift == 1 else slice(1, None)
                dst[axis] = slice(1, None) if shift == 1 else slice(0, -1)
                moved[tuple(dst)] = out[tuple(src)]
                grown |= moved
        out = grown
    return out


def white_matter_near_tumour(case) -> np.ndarray:
    """Unlabelled white matter within 6 voxels of the tumour: the reference a compartment's contrast is read against."""
    return dilate(case.label > 0, 6) & (case.label == 0) & (case.tissue == WM)


def test_cases_have_brats_structure(cases):
    for case in cases.values():
        assert list(case.images) == list(MODALITIES)
        assert case.label.dtype == np.uint8 and case.label.shape == SHAPE
        assert set(np.unique(case.label)) <= {0, LABEL_NCR, LABEL_ED, LABEL_ET}
        brain = case.tissue > 0
        assert 0.1 < brain.mean() < 0.8
        assert not case.label[~brain].any(), "tumour labels outside the brain"
        for name, image in case.images.items():
            assert image.dtype == np.float32 and image.shape == SHAPE
            assert np.all(image[~brain] == 0), f"{name}: background is not exactly 0 (skull-stripped)"
            assert np.array_equal(image, np.round(image)) and image.min() >= 0, f"{name}: not integer intensities"
            assert (image[brain] > 0).mean() > 0.99
        assert case.stack().shape == (4, *SHAPE)


def test_same_seed_same_case_and_other_seeds_differ(cases):
    again = generate_case(3, SHAPE, SPACING)
    assert np.array_equal(again.label, cases[3].label)
    for name in MODALITIES:
        assert np.array_equal(again.images[name], cases[3].images[name])
    assert again.info == cases[3].info
    assert not np.array_equal(cases[3].label, cases[4].label)
    assert not np.array_equal(cases[3].images["t1ce"], cases[4].images["t1ce"])


def test_normal_tissue_contrast_per_sequence(cases):
    for seed, case in cases.items():
        normal = case.label == 0
        mean = {name: {code: float(img[normal & (case.tissue == code)].mean()) for code in (WM, GM, CSF)}
                for name, img in case.images.items()}
        assert mean["t1"][WM] > mean["t1"][GM] > mean["t1"][CSF], seed
        assert mean["t1ce"][WM] > mean["t1ce"][CSF], seed
        assert mean["t2"][CSF] > mean["t2"][GM] > mean["t2"][WM], seed
        assert mean["flair"][CSF] < mean["flair"][WM], seed


def test_enhancing_tumour_is_bright_on_t1ce_against_its_surroundings(cases):
    checked = 0
    for seed, case in cases.items():
        et = case.label == LABEL_ET
        if et.sum() < 30:
            continue
        brain = case.tissue > 0
        around = dilate(et, 2) & ~et & brain & (case.label != LABEL_NCR)
        t1ce = case.images["t1ce"]
        assert t1ce[et].mean() > 1.1 * t1ce[around].mean(), seed
        ncr = case.label == LABEL_NCR
        if ncr.sum() >= 10:
            assert t1ce[ncr].mean() < t1ce[et].mean(), seed
        checked += 1
    assert checked >= 3


def test_oedema_is_bright_on_flair_and_t2_against_nearby_white_matter(cases):
    checked = 0
    for seed, case in cases.items():
        ed = case.label == LABEL_ED
        if ed.sum() < 50:
            continue
        near_wm = white_matter_near_tumour(case)
        for name in ("flair", "t2"):
            img = case.images[name]
            assert img[ed].mean() > 1.15 * img[near_wm].mean(), (seed, name)
        checked += 1
    assert checked >= 5


def test_necrosis_is_dark_on_t1ce_and_bright_on_t2(cases):
    checked = 0
    for seed, case in cases.items():
        ncr = case.label == LABEL_NCR
        if ncr.sum() < 40 or not (case.label == LABEL_ET).any():
            continue  # a necrosis of a few voxels is mostly partial volume with the bright rim around it
        near_wm = white_matter_near_tumour(case)
        assert case.images["t1ce"][ncr].mean() < case.images["t1ce"][near_wm].mean(), seed
        assert case.images["t2"][ncr].mean() > case.images["t2"][near_wm].mean(), seed
        checked += 1
    assert checked >= 2


def test_tumour_types_follow_the_probabilities():
    low_grade = generate_case(11, (48, 48, 48), 3.0, SynthParams(p_no_enhancement=1.0))
    assert low_grade.info["tumour"] == "non-enhancing"
    assert not (low_grade.label == LABEL_ET).any()
    assert (low_grade.label == LABEL_NCR).sum() > 20 and (low_grade.label == LABEL_ED).any()
    high_grade = generate_case(11, (48, 48, 48), 3.0, SynthParams(p_no_enhancement=0.0))
    assert (high_grade.label == LABEL_ET).sum() > 20
    healthy = generate_case(11, (48, 48, 48), 3.0, SynthParams(p_no_tumour=1.0))
    assert not healthy.label.any() and healthy.info["lesions"] == 0


def test_site_shift_changes_the_appearance_not_the_anatomy(cases):
    base = cases[2]
    shifted = generate_case(2, SHAPE, SPACING, SynthParams(site=shifted_site(1.0)))
    assert np.array_equal(shifted.label, base.label)
    assert np.array_equal(shifted.tissue, base.tissue)
    normal = base.label == 0

    def csf_to_wm(case):
        flair = case.images["flair"]
        return flair[normal & (case.tissue == CSF)].mean() / flair[normal & (case.tissue == WM)].mean()

    # incomplete CSF suppression on the new site's FLAIR: the drawn CSF mean is multiplied, and the image shows it
    assert shifted.info["contrast"]["flair"]["csf"] == pytest.approx(base.info["contrast"]["flair"]["csf"] * 2.6,
                                                                     abs=2e-3)
    assert csf_to_wm(shifted) > 1.1 * csf_to_wm(base)
    assert shifted.info["acquisition"]["flair"]["slice_factor"] >= 2
    assert shifted.info["site"] == "shifted-site-1"
    with pytest.raises(ConfigError):
        shifted_site(5.0)


def test_site_profiles_differ_in_whether_the_enhancement_survives(tmp_path):
    """low-contrast erases the rim's enhancement over the necrosis; other-scanner keeps it (and its own CLI name)."""
    params = dict(p_no_enhancement=0.0, p_no_tumour=0.0)

    def rim_over_necrosis(site):
        case = generate_case(3, (48, 48, 48), 3.0, SynthParams(site=site, **params))
        t1ce, label = case.images["t1ce"], case.label
        brain = t1ce[(label == 0) & (case.tissue > 0)]
        return (t1ce[label == LABEL_ET].mean() - t1ce[label == LABEL_NCR].mean()) / brain.std(), case

    plain, base = rim_over_necrosis(None)
    kept, scanner = rim_over_necrosis(shifted_site(1.5, "other-scanner"))
    lost, _ = rim_over_necrosis(shifted_site(1.5, "low-contrast"))
    assert np.array_equal(scanner.label, base.label)
    assert plain > 1.0 and kept > 1.0, "the enhancing rim stands out from the necrosis"
    assert lost < 0.5 * min(plain, kept)
    assert scanner.info["site"] == "other-scanner-1.5"
    assert scanner.info["acquisition"]["t1ce"]["gamma"] > 1.3 * base.info["acquisition"]["t1ce"]["gamma"]
    with pytest.raises(ConfigError, match="profile"):
        shifted_site(1.0, "vendor-x")
    for profile in SITE_PROFILES:  # every profile can be written from the command line
        out = tmp_path / profile
        assert main(["synth", "--progress", "none", "--out", str(out), "--n", "1", "--shape", "32", "32", "32",
                     "--spacing", "4", "--site-shift", "1", "--site-profile", profile]) == 0
        assert len(list(out.glob("*/*_t1ce.nii.gz"))) == 1


def test_generator_version_2_draws_larger_cores_that_can_outshine_the_oedema_on_flair():
    # Version 2's reason (docs/SYNTHETIC_DATA.md): in the real cases the tumour core is often as bright on FLAIR as
    # the oedema or brighter, which version 1 never drew, and BraTS cores are larger than version 1's.
    assert SynthParams() == synth_params(max(GENERATOR_VERSIONS))
    brighter, core_voxels = {}, {}
    for version in (1, 2):
        brighter[version], core_voxels[version] = 0, []
        for seed in range(8):
            case = generate_case(seed, (48, 48, 48), 4.0, synth_params(version))
            core = (case.label == LABEL_NCR) | (case.label == LABEL_ET)
            oedema = case.label == LABEL_ED
            core_voxels[version].append(int(core.sum()))
            if case.info["tumour"] == "enhancing" and core.sum() >= 20 and oedema.sum() >= 20:
                flair = case.images["flair"]
                brighter[version] += int(flair[core].mean() > flair[oedema].mean())
    assert brighter[1] == 0 and brighter[2] >= 1
    assert all(v2 > v1 for v1, v2 in zip(core_voxels[1], core_voxels[2]))  # same draws, larger ranges
    # the versions differ in ranges only: a seed draws the same kind of case in the same brain (the tumour's mass
    # effect, larger in version 2, moves the tissue around it)
    v1, v2 = (generate_case(3, (48, 48, 48), 4.0, synth_params(v)) for v in (1, 2))
    for key in ("tumour", "lesions", "brain_scale"):
        assert v1.info[key] == v2.info[key]
    assert not np.array_equal(v1.images["flair"], v2.images["flair"])
    with pytest.raises(ConfigError, match="generator version"):
        synth_params(0)


def test_invalid_arguments_are_refused():
    with pytest.raises(ConfigError):
        generate_case(0, (16, 64, 64))
    with pytest.raises(ConfigError):
        generate_case(-1)
    with pytest.raises(ConfigError):
        SynthParams(p_no_enhancement=1.5)


def test_write_case_uses_brats_2021_names_and_keeps_values(cases, tmp_path):
    case = cases[1]
    paths = write_case(case, tmp_path, "SYN-1")
    assert {p.name for p in paths.values()} == {f"SYN-1_{m}.nii.gz" for m in (*MODALITIES, "seg")}
    seg = sitk.ReadImage(str(paths["seg"]))
    assert seg.GetSpacing() == (SPACING,) * 3 and seg.GetSize() == SHAPE[::-1]
    assert np.array_equal(sitk.GetArrayFromImage(seg), case.label)
    t1ce = sitk.ReadImage(str(paths["t1ce"]))
    assert t1ce.GetPixelID() == sitk.sitkInt16
    assert np.array_equal(sitk.GetArrayFromImage(t1ce), case.images["t1ce"])
    assert not [p for p in (tmp_path / "SYN-1").iterdir() if p.name.startswith(".")], "temporary files left"


def test_cli_writes_a_reproducible_dataset(tmp_path):
    args = ["synth", "--n", "2", "--seed", "5", "--shape", "48", "40", "36", "--spacing", "3", "--progress", "none"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    manifest = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert [c["id"] for c in manifest["cases"]] == ["GLIMS-SYN-5-0000", "GLIMS-SYN-5-0001"]
    assert manifest["cases"][1]["seed"] == dataset_case_seed(5, 1)
    for case in manifest["cases"]:
        for suffix in (*MODALITIES, "seg"):
            name = f"{case['id']}/{case['id']}_{suffix}.nii.gz"
            a = sitk.ReadImage(str(tmp_path / "a" / name))
            b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b" / name)))
            assert a.GetSize() == (48, 40, 36)
            assert np.array_equal(sitk.GetArrayFromImage(a), b)
    # --generator 1 reproduces version 1's data, and the manifest records the ranges that made it
    assert main([*args, "--generator", "1", "--out", str(tmp_path / "v1")]) == 0
    v1_manifest = json.loads((tmp_path / "v1" / "dataset.json").read_text())
    assert v1_manifest["params"] == json.loads(json.dumps(synth_params(1).to_dict()))
    assert manifest["params"] == json.loads(json.dumps(synth_params(2).to_dict()))
    name = "GLIMS-SYN-5-0000/GLIMS-SYN-5-0000_flair.nii.gz"
    expected = generate_case(dataset_case_seed(5, 0), (36, 40, 48), 3.0, synth_params(1)).images["flair"]
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "v1" / name))), expected)
