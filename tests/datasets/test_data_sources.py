"""Real-format sources built in the tests (NIfTI with nibabel, DICOM series with pydicom, in their
real folder layouts), prepared datasets, the CLI, training samples and every bad-input case.
Without nibabel or pydicom (optional on a bare GPU machine) the module is skipped, never an error
at collection."""
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

nib = pytest.importorskip("nibabel", reason="the data tests need nibabel (pip install nibabel)")
pydicom = pytest.importorskip("pydicom", reason="the data tests need pydicom (pip install pydicom)")
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from benchmark.data import __main__ as cli
from benchmark.data import dataset, degradations, io, prepared, sources
from tests.helpers import counted_cases, prepared_bytes


# --- writers of real formats --------------------------------------------------------------------

def write_nifti(path, volume):
    nib.save(nib.Nifti1Image(np.asarray(volume, dtype=np.float32), np.eye(4)), path)


def write_dicom(path, hu, z, slope=1.0, intercept=-1024.0):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.round((hu - intercept) / slope).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


# --- io -----------------------------------------------------------------------------------------

def test_read_image_in_physical_units(tmp_path):
    volume = np.random.default_rng(0).uniform(0, 4095, (6, 5, 4)).astype(np.float32)
    write_nifti(tmp_path / "a.nii.gz", volume)
    np.testing.assert_allclose(io.read_image(tmp_path / "a.nii.gz"), volume, rtol=1e-6)
    hu = np.array([[-1000.0, 0.0], [40.0, 1200.0]])
    write_dicom(tmp_path / "s.dcm", hu, z=1.0, slope=0.5, intercept=-1024.0)
    np.testing.assert_allclose(io.read_image(tmp_path / "s.dcm"), hu)          # slope and intercept applied
    np.save(tmp_path / "x.npy", hu)
    np.testing.assert_allclose(io.read_image(tmp_path / "x.npy"), hu)


def test_read_image_names_the_bad_file(tmp_path):
    write_nifti(tmp_path / "good.nii.gz", np.zeros((4, 4, 4)))
    data = (tmp_path / "good.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(io.DataError, match="cut.nii.gz: not a readable NIfTI"):
        io.read_image(tmp_path / "cut.nii.gz")
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(io.DataError, match="junk.dcm: not a readable DICOM"):
        io.read_image(tmp_path / "junk.dcm")
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(io.DataError, match="nan.npy: contains 1 NaN"):
        io.read_image(tmp_path / "nan.npy")
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(io.DataError, match="unknown image format"):
        io.read_image(tmp_path / "a.png")
    with pytest.raises(io.DataError, match="no such file"):
        io.read_image(tmp_path / "missing.nii")


# --- IXI ----------------------------------------------------------------------------------------

@pytest.fixture
def small_ixi(monkeypatch):
    monkeypatch.setattr(sources, "IXI_SIZE", 16)
    monkeypatch.setattr(sources, "IXI_SLICES", 4)


def write_ixi(folder, ids, slices=7):
    folder.mkdir(exist_ok=True)
    for i in ids:
        volume = np.zeros((16, 16, slices), dtype=np.float32)
        volume += np.arange(slices, dtype=np.float32) * 100 + i                  # slice k holds 100 k + id
        write_nifti(folder / f"IXI{i:03d}-Guys-{i}-T2.nii.gz", volume)


def test_ixi_takes_the_central_slices_and_splits_by_subject(tmp_path, small_ixi):
    write_ixi(tmp_path / "raw", [12, 2, 30, 7, 5])
    (tmp_path / "raw" / "IXI002-Guys-2-PD.nii.gz").write_bytes(b"")             # other contrasts ignored
    cases = sources.ixi_cases(tmp_path / "raw")
    assert [c.name for split in sources.SPLITS for c in cases[split]] == [
        "IXI002-Guys-2-T2", "IXI005-Guys-5-T2", "IXI007-Guys-7-T2", "IXI012-Guys-12-T2", "IXI030-Guys-30-T2"]
    assert [len(cases[s]) for s in sources.SPLITS] == [3, 1, 1]                  # 405/59/114 proportions
    lq, hq = cases["train"][0].load()
    np.testing.assert_allclose(hq[:, 0, 0], [102, 202, 302, 402])                # slices 1..4 of 7
    np.testing.assert_allclose(lq[0], degradations.mri_kspace_crop(hq[0]), rtol=1e-6)


def test_ixi_split_is_the_papers_for_the_full_set():
    assert sources.split_counts(578, sources.IXI_SPLIT) == (405, 59, 114)
    assert sources.split_counts(10, sources.AAPM_SPLIT) == (8, 1, 1)


def test_ixi_volume_with_too_few_slices(tmp_path, small_ixi):
    write_ixi(tmp_path / "raw", [1], slices=3)
    with pytest.raises(io.DataError, match="has 3 slices, fewer than the 4"):
        sources.ixi_cases(tmp_path / "raw")["train"][0].load()


# --- AAPM ---------------------------------------------------------------------------------------

def write_aapm(root, patients, slices=3, size=8):
    for p, name in enumerate(patients):
        for dose, offset in (("full_3mm", 0.0), ("quarter_3mm", 5.0)):
            folder = root / name / dose
            folder.mkdir(parents=True)
            for k in range(slices):
                z = -100.0 + 3 * k
                hu = np.full((size, size), 10.0 * k + offset + p)
                number = (slices - k) * 7 % 11 if dose.startswith("full") else k     # the series' file
                write_dicom(folder / f"{dose}_{number:04d}.IMA", hu, z)                # orders differ


def test_aapm_pairs_slices_by_position_in_hu(tmp_path):
    write_aapm(tmp_path, ["L067", "L096", "L109"])
    cases = sources.aapm_cases(tmp_path)
    assert [c.name for c in cases["train"]] == ["L067"] and cases["train"][0].slices == 3
    lq, hq = cases["train"][0].load()
    np.testing.assert_allclose(hq[:, 0, 0], [0.0, 10.0, 20.0])                   # sorted by z
    np.testing.assert_allclose(lq[:, 0, 0], [5.0, 15.0, 25.0])                   # quarter dose, same z


def test_aapm_with_two_slice_thicknesses_needs_a_series(tmp_path):
    write_aapm(tmp_path / "a", ["L067"])
    write_aapm(tmp_path / "b", ["L067"])
    for dose in ("full", "quarter"):                                            # add a 1 mm series
        (tmp_path / "a" / "L067" / f"{dose}_3mm").rename(tmp_path / "a" / "L067" / f"{dose}_1mm")
        (tmp_path / "b" / "L067" / f"{dose}_3mm").rename(tmp_path / "a" / "L067" / f"{dose}_3mm")
    case = sources.aapm_cases(tmp_path / "a")["train"][0]
    with pytest.raises(io.DataError, match=r"found full_1mm, full_3mm \(choose one with --series"):
        case.load()
    assert sources.aapm_cases(tmp_path / "a", series="3mm")["train"][0].slices == 3


def test_aapm_patient_without_quarter_dose(tmp_path):
    write_aapm(tmp_path, ["L067"])
    for f in (tmp_path / "L067" / "quarter_3mm").iterdir():
        f.unlink()
    (tmp_path / "L067" / "quarter_3mm").rmdir()
    case = sources.aapm_cases(tmp_path)["train"][0]
    with pytest.raises(io.DataError, match="expected one folder with 'quarter'"):
        case.load()


# --- prepared datasets and the CLI ----------------------------------------------------------------

def write_paired(root, names, shape=(12, 12), bad=None):
    for sub in ("hq", "lq"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        hq = np.full(shape, float(i + 1), dtype=np.float32)
        np.save(root / "hq" / name, hq)
        np.save(root / "lq" / name, hq * 0.5 if name != bad else hq[:-1])


def test_prepare_writes_raw_splits_and_a_manifest(tmp_path, capsys):
    write_paired(tmp_path / "raw", [f"case{i:02d}.npy" for i in range(10)])
    out = tmp_path / "prepared"
    assert cli.main(["prepare", "pet_synthesis", "--src", str(tmp_path / "raw"), "--out", str(out), "--quiet"]) == 0
    manifest = prepared.read_manifest(out)
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {"train": 8, "val": 1, "test": 1}
    lq, hq = prepared.open_split(out, "train")
    assert hq.shape == (8, 12, 12) and len(hq) == 8
    lq, hq = (np.stack([a[i] for i in range(len(a))]) for a in (lq, hq))
    np.testing.assert_allclose(hq[:, 0, 0], np.arange(1, 9)) and np.testing.assert_allclose(lq, hq * 0.5)
    assert prepared.verify(out) == []
    assert cli.main(["info", str(out)]) == 0
    assert "train       8 slices" in capsys.readouterr().out
    with open(out / "train" / "hq.f32", "r+b") as f:                            # a flipped byte
        f.seek(10)
        f.write(b"\x01")
    assert prepared.verify(out) == ["train/hq.f32"]


def test_bad_pair_fails_or_is_skipped_and_listed(tmp_path, capsys):
    write_paired(tmp_path / "raw", [f"c{i}.npy" for i in range(10)], bad="c3.npy")
    out = tmp_path / "p"
    assert cli.main(["prepare", "pet_synthesis", "--src", str(tmp_path / "raw"), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "c3.npy: a pair with different shapes" in err and "the same command resumes after them" in err
    assert not out.exists()                                                     # nothing that looks complete
    assert cli.main(["prepare", "pet_synthesis", "--src", str(tmp_path / "raw"), "--out", str(out), "--quiet",
                     "--skip-bad"]) == 0
    assert "3 cases already prepared are not read again" in capsys.readouterr().err      # c0-c2, written before c3
    assert not list(tmp_path.glob(".p.partial*"))
    manifest = prepared.read_manifest(out)
    assert manifest["splits"]["train"]["count"] == 7 and manifest["skipped"][0]["case"] == "c3.npy"


def test_an_interrupted_preparation_resumes_without_reading_finished_cases(tmp_path, capsys):
    clean = prepared.write(tmp_path / "clean", counted_cases([]), task="x", modality="ct", source="t", progress=False)
    calls = []
    with pytest.raises(KeyboardInterrupt):
        prepared.write(tmp_path / "out", counted_cases(calls, fail_at="s5"), task="x", modality="ct", source="t",
                       progress=False)
    assert not (tmp_path / "out").exists() and calls == ["s0", "s1", "s2", "s3", "s4", "s5"]
    with open(tmp_path / ".out.partial" / "train" / "hq.f32", "ab") as f:        # a torn write of the killed case
        f.write(b"\x7f" * 100)
    calls.clear()
    resumed = prepared.write(tmp_path / "out", counted_cases(calls), task="x", modality="ct", source="t", progress=False)
    assert calls == ["s5", "s6", "s7", "s8", "s9"]                                # s0-s4 are not read again
    assert "5 cases already prepared are not read again" in capsys.readouterr().err
    assert prepared_bytes(tmp_path / "out") == prepared_bytes(tmp_path / "clean")
    assert {k: resumed[k] for k in ("splits", "skipped")} == {k: clean[k] for k in ("splits", "skipped")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "out"]      # no partial folder left
    assert prepared.verify(tmp_path / "out") == []


def test_a_killed_preparation_resumes_from_its_last_whole_case(tmp_path):
    """SIGKILL (no Python cleanup at all) in the middle of a preparation, then the same preparation
    again: identical files to an uninterrupted one."""
    script = tmp_path / "slow.py"
    script.write_text(f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.helpers import counted_cases
from benchmark.data import prepared
cases = counted_cases([])
for split in cases.values():
    for case in split:
        case.load = lambda load=case.load: (time.sleep(0.3), load())[1]
prepared.write({str(tmp_path / "out")!r}, cases, task="x", modality="ct", source="t", progress=False)
""")
    process = subprocess.Popen([sys.executable, str(script)])
    journal = tmp_path / ".out.partial" / prepared.JOURNAL
    deadline = time.time() + 120
    while not (journal.is_file() and len(json.loads(journal.read_text())["splits"].get("train", {"cases": []})["cases"]) >= 3):
        assert process.poll() is None and time.time() < deadline, "the preparation ended before it was killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(json.loads(journal.read_text())["splits"]["train"]["cases"])
    assert 3 <= written < 10 and not (tmp_path / "out").exists()
    calls = []
    prepared.write(tmp_path / "out", counted_cases(calls), task="x", modality="ct", source="t", progress=False)
    assert calls == [f"s{i}" for i in range(written, 10)]
    prepared.write(tmp_path / "clean", counted_cases([]), task="x", modality="ct", source="t", progress=False)
    assert prepared_bytes(tmp_path / "out") == prepared_bytes(tmp_path / "clean")


def test_a_second_preparation_of_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    with prepared._held(tmp_path / ".out.partial"):                                # the first, still running
        with pytest.raises(io.DataError, match=r"\.out\.partial: another process is preparing this dataset now"):
            prepared.write(tmp_path / "out", counted_cases([]), task="x", modality="ct", source="t", progress=False)


def test_bad_folders_and_options(tmp_path, capsys):
    assert cli.main(["prepare", "mri_sr", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope: no such folder" in capsys.readouterr().err
    (tmp_path / "raw").mkdir()
    assert cli.main(["prepare", "pet_synthesis", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "o")]) == 2
    assert "expected the sub-folders hq/ and lq/" in capsys.readouterr().err
    assert cli.main(["prepare", "paired", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "o")]) == 2
    assert "needs --modality" in capsys.readouterr().err
    assert cli.main(["info", str(tmp_path)]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err


def test_phantom_task_needs_no_files_and_trains_on_crops(tmp_path):
    out = tmp_path / "ph"
    assert cli.main(["prepare", "phantom-mri", "--out", str(out), "--count", "3", "1", "1", "--size", "32",
                     "--quiet"]) == 0
    train = dataset.open_dataset(str(out), "train", crop=16, seed=1)
    first = train[0]
    assert first["lq"].shape == (1, 16, 16) and first["task"] == "phantom-mri"
    assert 0.0 <= float(first["hq"].min()) and float(first["hq"].max()) <= 1.0   # normalised
    again = train[0]
    assert np.array_equal(first["lq"].numpy(), again["lq"].numpy())              # same epoch, same crop
    train.set_epoch(1)
    evaluation = dataset.open_dataset(str(out), "test")
    assert evaluation[0]["hq"].shape == (1, 32, 32)
    memory = dataset.open_dataset("phantom-mri", "val", phantom_size=32)
    assert len(memory) == 4                                                     # default counts 32/4/8


def test_all_in_one_labels_every_sample(tmp_path):
    for task in ("phantom-mri", "phantom-pet"):
        cli.main(["prepare", task, "--out", str(tmp_path / task), "--count", "2", "1", "1", "--size", "32", "--quiet"])
    out = tmp_path / "all"
    assert cli.main(["prepare", "all_in_one", "--from", str(tmp_path / "phantom-mri"), str(tmp_path / "phantom-pet"),
                     "--out", str(out)]) == 0
    data = dataset.open_dataset(str(out), "train", crop=16)
    assert len(data) == 4 and [data[i]["task"] for i in range(4)] == ["phantom-mri"] * 2 + ["phantom-pet"] * 2
    assert json.loads((out / "manifest.json").read_text())["splits"]["train"]["count"] == 4


def test_gzip_magic_is_not_enough(tmp_path):
    (tmp_path / "fake.nii.gz").write_bytes(gzip.compress(b"garbage"))
    with pytest.raises(io.DataError, match="fake.nii.gz"):
        io.read_image(tmp_path / "fake.nii.gz")


def test_score_inputs_reports_the_input_quality(tmp_path, capsys):
    out = tmp_path / "ph"
    cli.main(["prepare", "phantom-ct", "--out", str(out), "--count", "1", "1", "2", "--size", "32", "--quiet"])
    assert cli.main(["score-inputs", str(out)]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| phantom-ct")][0]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[:3] == ["phantom-ct", "test", "2"] and 0 < float(cells[4]) < 1


# --- bad data: clear errors, --skip-bad, checked values (issue 18, case 8) ----------------------------

def test_ct_series_with_mixed_slice_sizes_fails_clearly_or_is_skipped(tmp_path, capsys):
    write_aapm(tmp_path / "raw", ["L001", "L002", "L003", "L004"])
    odd = tmp_path / "raw" / "L001" / "full_3mm"
    first = sorted(odd.iterdir())[0]
    z = float(pydicom.dcmread(first).ImagePositionPatient[2])
    for dose in ("full_3mm", "quarter_3mm"):                          # one pair of 10x10 among 8x8 slices
        folder = tmp_path / "raw" / "L001" / dose
        target = next(p for p in folder.iterdir() if float(pydicom.dcmread(p).ImagePositionPatient[2]) == z)
        write_dicom(target, np.zeros((10, 10)), z)
    argv = ["prepare", "ct_denoise", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "p"), "--quiet"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(r"L001/full_3mm/\S+: a slice of \(\d+, \d+\) in a series of \(\d+, \d+\) slices", err)
    assert cli.main(argv + ["--skip-bad"]) == 0
    manifest = prepared.read_manifest(tmp_path / "p")
    assert manifest["skipped"][0]["case"] == "L001" and manifest["splits"]["train"]["count"] == 3


def test_zero_byte_npy_fails_clearly_or_is_skipped(tmp_path, capsys):
    write_paired(tmp_path / "raw", [f"c{i}.npy" for i in range(10)])
    (tmp_path / "raw" / "hq" / "c2.npy").write_bytes(b"")
    argv = ["prepare", "pet_synthesis", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "p"), "--quiet"]
    assert cli.main(argv) == 2
    assert "c2.npy: not a readable .npy file" in capsys.readouterr().err
    assert cli.main(argv + ["--skip-bad"]) == 0
    assert [s["case"] for s in prepared.read_manifest(tmp_path / "p")["skipped"]] == ["c2.npy"]


def test_implausible_values_and_too_few_subjects_are_refused_at_prepare_time(tmp_path, capsys):
    write_paired(tmp_path / "raw", [f"c{i}.npy" for i in range(10)])
    np.save(tmp_path / "raw" / "lq" / "c4.npy", np.full((12, 12), 1e30, dtype=np.float32))
    argv = ["prepare", "pet_synthesis", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "p"), "--quiet"]
    assert cli.main(argv) == 2
    assert "c4.npy: the lq slices hold values in [1e+30, 1e+30], outside the plausible range" in capsys.readouterr().err
    write_paired(tmp_path / "one", ["only.npy"])
    assert cli.main(["prepare", "pet_synthesis", "--src", str(tmp_path / "one"), "--out", str(tmp_path / "q"), "--quiet"]) == 2
    assert "1 subjects/cases give no val or test split" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_a_prepared_file_changed_or_truncated_while_in_use_gives_a_clear_error(tmp_path):
    write_paired(tmp_path / "raw", [f"c{i}.npy" for i in range(10)])
    out = tmp_path / "p"
    assert cli.main(["prepare", "pet_synthesis", "--src", str(tmp_path / "raw"), "--out", str(out), "--quiet"]) == 0
    data = dataset.open_dataset(str(out), "train")
    assert float(data[3]["hq"].max()) > 0
    path = out / "train" / "hq.f32"
    with open(path, "r+b") as f:                                      # a planted 1e30 in slice 1
        f.seek(1 * 12 * 12 * 4)
        f.write(np.float32(1e30).tobytes())
    with pytest.raises(io.DataError, match=r"hq.f32: slice 1 holds values in \[.*1e\+30\], outside the range"):
        data[1]
    with open(path, "r+b") as f:                                      # truncated after it was opened
        f.truncate(5 * 12 * 12 * 4)
    with pytest.raises(io.DataError, match=r"hq.f32: truncated while in use \(slice 6: 0 of 576 bytes\)"):
        data[6]


def test_a_partial_preparation_of_other_inputs_is_removed_by_the_next(tmp_path, capsys):
    write_paired(tmp_path / "raw", [f"c{i}.npy" for i in range(10)])
    stale = tmp_path / ".p.partial"
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "hq.f32").write_bytes(b"\0" * 1000)
    (stale / prepared.JOURNAL).write_text(json.dumps({"plan": "another", "splits": {}, "skipped": []}))
    assert cli.main(["prepare", "pet_synthesis", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    assert f"{stale}: an interrupted preparation of other inputs; removed" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "raw"]
    assert prepared.read_manifest(tmp_path / "p")["splits"]["train"]["count"] == 8
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask                                             # 0644 under the usual umask 022
    assert all(p.stat().st_mode & 0o777 == mode for p in (tmp_path / "p").rglob("*") if p.is_file())


def write_regions(root, names, shape=(12, 12)):
    """Indexed masks whose label is the pixel's row band (rows 0-3: 0, 4-7: 1, 8-11: 2) plus 3 x case."""
    (root / "regions").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        np.save(root / "regions" / name, (np.arange(shape[0])[:, None] // 4 + 3 * i).repeat(shape[1], 1).astype(np.int16))


def test_region_masks_are_prepared_with_their_pairs_and_cropped_with_them(tmp_path, capsys):
    names = [f"case{i:02d}.npy" for i in range(10)]
    write_paired(tmp_path / "raw", names, shape=(12, 12))
    for i, name in enumerate(names):                 # hq = case + 1 + row / 100: each pixel knows its row
        hq = (i + 1 + np.arange(12)[:, None] / 100).repeat(12, 1).astype(np.float32)
        np.save(tmp_path / "raw" / "hq" / name, hq)
        np.save(tmp_path / "raw" / "lq" / name, hq * 0.5)
    write_regions(tmp_path / "raw", names)
    out = tmp_path / "prepared"
    assert cli.main(["prepare", "pet_synthesis", "--src", str(tmp_path / "raw"), "--out", str(out), "--quiet"]) == 0
    manifest = prepared.read_manifest(out)
    assert manifest["splits"]["train"]["files"]["regions"] == "train/regions.f32" and prepared.verify(out) == []
    data = dataset.open_dataset(str(out), "train", crop=8, augment=True, seed=3)
    for index in range(len(data)):
        sample = data[index]
        hq = dataset.denormalize(sample["hq"][0].double().numpy(), "pet")
        case, row = np.floor(hq + 1e-6) - 1, np.round((hq - np.floor(hq + 1e-6)) * 100)
        assert sample["regions"].dtype == torch.int64 and sample["regions"].shape == (8, 8)
        # the mask was cropped, rotated and flipped with the images: every pixel keeps its label
        np.testing.assert_array_equal(sample["regions"].numpy(), row // 4 + 3 * case)
    assert dataset.open_dataset(str(out), "test")[0]["regions"].shape == (12, 12)
    # a pair without a mask, and a mask that is not labels, are named
    (tmp_path / "raw" / "regions" / names[4]).unlink()
    assert cli.main(["prepare", "pet_synthesis", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "p2")]) == 2
    assert f"regions/ has no mask for {names[4]}" in capsys.readouterr().err
    np.save(tmp_path / "raw" / "regions" / names[4], np.full((12, 12), 0.5))
    assert cli.main(["prepare", "pet_synthesis", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "p3")]) == 2
    assert "a region mask must hold non-negative integer labels" in capsys.readouterr().err


def test_phantom_pairs_are_cached_by_code_version_and_remade_when_unreadable(tmp_path, monkeypatch):
    from benchmark.data import cache
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    made = []

    def make():
        made.append(1)
        return np.zeros((2, 4, 4), np.float32), np.ones((2, 4, 4), np.float32)
    lq, hq = cache.arrays("mri-test", make)
    again = cache.arrays("mri-test", make)
    assert len(made) == 1 and np.array_equal(again[0], lq) and np.array_equal(again[1], hq)
    (path,) = tmp_path.glob("mri-test-*.npz")
    assert path.name == f"mri-test-{cache.code_version()}.npz" and not list(tmp_path.glob("*.partial*"))
    path.write_bytes(b"not a zip")                                            # corrupt: made again, said
    with pytest.warns(UserWarning, match="unreadable cached phantom file"):
        cache.arrays("mri-test", make)
    assert len(made) == 2 and np.array_equal(cache.arrays("mri-test", make)[1], hq) and len(made) == 2
    monkeypatch.setenv(cache.CACHE_ENV, "off")
    cache.arrays("mri-test", make)
    assert len(made) == 3
    # what a run reads is what the generator makes
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "runs"))
    dataset.phantom_split.cache_clear()
    lq, hq = dataset.phantom_split("mri", "val", 32, 0)
    expected = [sources.phantom_pair("mri", 32, seed) for seed in range(100_000, 100_004)]   # the val split
    assert np.array_equal(lq, np.stack([e[0] for e in expected])) and np.array_equal(hq, np.stack([e[1] for e in expected]))
    dataset.phantom_split.cache_clear()


def test_noise_scaling_prints_measured_against_physics(capsys, monkeypatch):
    from benchmark.data import noise_scaling
    monkeypatch.setattr(noise_scaling, "rows", lambda: [("CT noise, dose 0.5 / dose 0.25", 0.72, 0.7071),
                                                        ("CT level (HU)", 15.9, float("nan"))])
    assert cli.main(["noise-scaling"]) == 0
    out = capsys.readouterr().out
    assert "| CT noise, dose 0.5 / dose 0.25 | 0.720 | 0.707 | 1.018 |" in out and "| CT level (HU) | 15.900 | - | - |" in out


def test_each_prepared_slice_names_its_subject_and_a_skipped_case_leaves_no_slice(tmp_path, small_ixi):
    """Ten IXI-named volumes of 4 central slices prepared (7 / 1 / 2 subjects): every test slice
    names the volume it was cut from, in the order they were written (4 slices per subject); a case
    whose second array is bad is skipped whole (its first array's slices are not written)."""
    write_ixi(tmp_path / "raw", list(range(1, 11)))
    out = tmp_path / "mri"
    assert cli.main(["prepare", "mri_sr", "--src", str(tmp_path / "raw"), "--out", str(out), "--quiet"]) == 0
    test = dataset.open_dataset(str(out), "test")
    names = [c["name"] for c in prepared.read_manifest(out)["splits"]["test"]["cases"]]
    assert len(names) == 2 and [test[i]["subject"] for i in range(len(test))] == [n for n in names for _ in range(4)]
    writer = prepared._SplitWriter(tmp_path / "split", "mri")
    good = np.ones((2, 4, 4), dtype=np.float32)
    with pytest.raises(io.DataError, match="the hq slices contain NaN"):
        writer.add("bad", good, np.full((2, 4, 4), np.nan, dtype=np.float32))
    writer.add("fine", good, good)
    entry = writer.close()
    assert entry["count"] == 2 and entry["cases"] == [{"name": "fine", "slices": 2}]
    assert (tmp_path / "split" / "lq.f32").stat().st_size == 2 * 4 * 4 * 4          # no slice of "bad"
