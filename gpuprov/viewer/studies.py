"""Studies into the viewer's Orthanc: ``gpuprov viewer import PATH | --sample``.

Files go to Orthanc's REST API (``POST /instances``, one DICOM file each) on 127.0.0.1 with the
viewer's generated account; Orthanc answers 400 for a file that is not DICOM, which is counted and
skipped. Orthanc keeps one copy of an instance, so importing twice changes nothing.

The sample is a synthetic CT series written with pydicom: a water cylinder with two denser spheres,
no patient data (the names say "sample").
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from gpuprov.infra.errors import GpuprovError
from gpuprov.viewer.errors import ViewerError
from gpuprov.viewer.render import OrthancCredentials

SAMPLE_STUDY_DESCRIPTION = "gpuprov sample phantom (synthetic, no patient data)"
SAMPLE_PATIENT = "Sample^Phantom"


@dataclass
class ImportResult:
    instances: int = 0
    skipped: list[str] = field(default_factory=list)  # files Orthanc refused as not DICOM
    studies: set[str] = field(default_factory=set)  # Orthanc study ids touched


def dicom_candidates(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every file under a folder, or every member of a zip archive."""
    if path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            yield str(item.relative_to(path)), item.read_bytes()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    yield info.filename, archive.read(info)
    elif path.is_file():
        yield path.name, path.read_bytes()
    else:
        raise GpuprovError(f"{path} does not exist; name a DICOM folder, a .zip of one, or use --sample")


def import_path(orthanc_url: str, creds: OrthancCredentials, path: Path) -> ImportResult:
    """Send every DICOM file under ``path`` to Orthanc."""
    result = ImportResult()
    session = requests.Session()
    session.auth = (creds.user, creds.password)
    for name, data in dicom_candidates(path):
        try:
            r = session.post(f"{orthanc_url}/instances", data=data, timeout=120,
                             headers={"Content-Type": "application/dicom"})
        except requests.RequestException as err:
            raise ViewerError(f"Orthanc at {orthanc_url} did not take {name} ({type(err).__name__}); is the viewer "
                              "up? `gpuprov viewer status`") from None
        if r.status_code == 400:
            result.skipped.append(name)
            continue
        if r.status_code == 401:
            raise ViewerError(f"Orthanc at {orthanc_url} refused the viewer's credentials; run `gpuprov viewer up` again")
        if r.status_code != 200:
            raise ViewerError(f"Orthanc at {orthanc_url} answered HTTP {r.status_code} for {name}")
        answer = r.json()
        for item in answer if isinstance(answer, list) else [answer]:
            result.instances += 1
            if item.get("ParentStudy"):
                result.studies.add(item["ParentStudy"])
    return result


# --- the sample series -----------------------------------------------------------------------------

def _slice_pixels(size: int, z: float) -> bytes:
    """One 16-bit slice (stored value = HU + 1024): air, a water cylinder, two denser spheres."""
    half = size / 2
    out = bytearray()
    for y in range(size):
        for x in range(size):
            dx, dy = (x - half) / half, (y - half) / half
            hu = -1000
            if dx * dx + dy * dy < 0.8:
                hu = 0
            for cx, cy, cz, r, value in ((-0.3, -0.1, 0.0, 0.3, 400), (0.35, 0.2, 0.2, 0.2, 900)):
                if (dx - cx) ** 2 + (dy - cy) ** 2 + (z - cz) ** 2 < r * r:
                    hu = value
            out += struct.pack("<H", hu + 1024)
    return bytes(out)


def write_sample_series(directory: Path, slices: int = 24, size: int = 128) -> list[Path]:
    """Write the synthetic CT series as DICOM files; deterministic UIDs, so a second import adds nothing."""
    from pydicom import dcmwrite
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

    def uid(*parts: object) -> UID:
        return generate_uid(entropy_srcs=["gpuprov-sample", *map(str, parts)])

    study, series, frame = uid("study"), uid("series"), uid("frame")
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = uid("instance", i)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = SAMPLE_PATIENT, "GPUPROV-SAMPLE"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName = ""
        ds.StudyDescription, ds.SeriesDescription = SAMPLE_STUDY_DESCRIPTION, "synthetic CT, 24 slices"
        ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = "CT", "gpuprov", 1, i + 1
        ds.ImagePositionPatient = [-64.0, -64.0, float(i * 2)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceThickness, ds.PixelSpacing, ds.SliceLocation = 2.0, [1.0, 1.0], float(i * 2)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        z = (i - (slices - 1) / 2) / (slices / 2)
        ds.PixelData = _slice_pixels(size, z)
        path = directory / f"slice-{i + 1:03d}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths
