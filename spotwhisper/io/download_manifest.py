"""Manifests of downloadable data sets: which files, from where, with which size and sha256.

A manifest is a JSON file ``spotwhisper/resources/<name>_manifest.json``: a header (``name``,
``url_template``, ``default_ref``, ``dest_subdir``, provenance notes) and ``files``, one entry per
file with ``path`` (relative to the data set folder), ``url`` (``{ref}`` is replaced by a git
ref), ``size`` (bytes), ``sha256``, ``kind`` and ``section``.

The her2st manifest is rebuilt from a local copy of the data with
``python -m spotwhisper.io.download_manifest --make-manifest DIR`` (:func:`make_manifest`); its sizes and
hashes are those of that copy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

from ..atomic import atomic_file

#: Folder holding the shipped manifests.
RESOURCES = Path(__file__).resolve().parent.parent / "resources"


#: The her2st files the data README describes: (glob under the her2st folder, kind, section pattern).
HER2ST_LAYOUT = [
    ("data/ST-cnts/*.tsv.gz", "counts", r"^([A-Z]\d+)\.tsv\.gz$"),
    ("data/ST-spotfiles/*_selection.tsv", "spots", r"^([A-Z]\d+)_selection\.tsv$"),
    ("data/ST-imgs/*/*/*.jpg", "image", None),  # section = the image's folder name
    ("data/ST-pat/lbl/*_labeled_coordinates.tsv", "pathology_labels", r"^([A-Z]\d+)_labeled"),
    ("res/ST-cluster/lbl/*-cluster-annotation.tsv.gz", "clusters", r"^([A-Z]\d+)-cluster"),
    ("res/ST-cluster/motivation.csv", "cluster_motivation", None),
    ("res/ST-deconv/props/major.zip", "deconvolution", None),
    ("res/ST-deconv/props/minor.zip", "deconvolution", None),
    ("res/TLS-pred/tls-signature.tsv.gz", "tls_signature", None),
]
HER2ST_HEADER = {
    "name": "her2st",
    "description": "HER2-positive breast cancer, Spatial Transcriptomics (Andersson et al., Nat Commun 12, 6012, 2021)",
    "homepage": "https://github.com/almaan/her2st",
    "url_template": "https://raw.githubusercontent.com/almaan/her2st/{ref}/{path}",
    "default_ref": "master",
    "dest_subdir": "her2st",
    "zenodo": (
        "https://zenodo.org/record/3957257 holds full-resolution images and counts of all 36 sections as "
        "7z archives encrypted with AES; the passwords are in the almaan/her2st README. Fetched and unpacked by "
        "`spotwhisper data fetch her2st-zenodo --dest DIR --password PW` (spotwhisper.io.zenodo)."
    ),
}


@dataclass
class ManifestEntry:
    """One file: ``path`` relative to the data set folder, ``url`` (may hold ``{ref}``), ``size`` bytes."""

    path: str
    url: str
    sha256: str
    size: int | None = None
    kind: str = "file"
    section: str | None = None
    unpack: str | None = None  #: "zip" or "tar": extract after download
    unpack_to: str | None = None  #: folder (relative to the data set folder); default the archive's folder


@dataclass
class DownloadManifest:
    """A data set: its files and where they go (``dest/<dest_subdir>``)."""

    name: str
    entries: list[ManifestEntry]
    dest_subdir: str = ""
    default_ref: str = "master"
    extra: dict = field(default_factory=dict)


def load_manifest(source: str | Path) -> DownloadManifest:
    """A manifest by name (``"her2st"`` → ``resources/her2st_manifest.json``) or by path."""
    path = Path(source)
    if not path.exists():
        path = RESOURCES / f"{source}_manifest.json"
    if not path.exists():
        known = sorted(p.name.removesuffix("_manifest.json") for p in RESOURCES.glob("*_manifest.json"))
        raise FileNotFoundError(f"no manifest {source!r} (known data sets: {', '.join(known)})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = [ManifestEntry(**e) for e in data["files"]]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a valid manifest ({err})") from err
    for e in entries:
        safe_relpath(e.path, where=str(path))
    extra = {k: v for k, v in data.items() if k not in {"name", "files", "dest_subdir", "default_ref"}}
    return DownloadManifest(data.get("name", path.stem), entries, data.get("dest_subdir", ""), data.get("default_ref", "master"), extra)


def select(manifest: DownloadManifest, only: list[str] | None) -> list[ManifestEntry]:
    """Entries matching any token of ``only`` (section ``C2``, patient ``C``, kind ``counts``, or a
    path glob); files shared by all sections (no section) always come along. ``None`` = all."""
    if not only:
        return list(manifest.entries)
    sections = {e.section for e in manifest.entries if e.section}
    valid = sections | {s[0] for s in sections} | {e.kind for e in manifest.entries}
    unknown = [t for t in only if t not in valid and not any(fnmatch(e.path, t) for e in manifest.entries)]
    if unknown:
        raise ValueError(f"--only {unknown}: not a section, patient, kind or file of {manifest.name} (known: {sorted(valid)})")

    def wanted(e: ManifestEntry) -> bool:
        if e.section is None:
            return True
        return any(t in (e.section, e.section[0], e.kind) or fnmatch(e.path, t) for t in only)

    return [e for e in manifest.entries if wanted(e)]


def hash_file(path: Path, algorithm: str = "sha256", chunk_bytes: int = 1 << 20) -> str:
    """Hex digest of a file with a :mod:`hashlib` ``algorithm`` (``"sha256"``, ``"md5"`` …)."""
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    return hash_file(path, "sha256", chunk_bytes)


def safe_relpath(rel: str, where: str) -> PurePosixPath:
    """``rel`` as a relative POSIX path; ``ValueError`` naming ``where`` when absolute or with ``..``."""
    p = PurePosixPath(rel.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts or re.match(r"^[A-Za-z]:", rel):
        raise ValueError(f"{where}: unsafe path {rel!r} (must be relative, without '..')")
    return p


def make_manifest(root: str | Path, header: dict | None = None, layout: list | None = None) -> dict:
    """Manifest of a local copy of a data set (default: her2st): every file of ``layout`` with size and sha256."""
    root = Path(root)
    header = dict(HER2ST_HEADER if header is None else header)
    layout = HER2ST_LAYOUT if layout is None else layout
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    files = []
    for pattern, kind, section_re in layout:
        for p in sorted(root.glob(pattern)):
            rel = p.relative_to(root).as_posix()
            if section_re is None:
                section = p.parent.name if kind == "image" else None
            else:
                m = re.search(section_re, p.name)
                section = m.group(1) if m else None
            files.append(
                {
                    "path": rel,
                    "url": header["url_template"].replace("{path}", rel),
                    "size": p.stat().st_size,
                    "sha256": sha256_file(p),
                    "kind": kind,
                    "section": section,
                }
            )
    if not files:
        raise FileNotFoundError(f"{root}: none of the expected files ({layout[0][0]}, …) is there")
    header["hashes"] = (
        "sizes and sha256 are those of the project's reference copy of this data set, computed with "
        "`python -m spotwhisper.io.download_manifest --make-manifest DIR`"
    )
    return {**header, "files": files}


def write_json_atomic(data: dict, path: str | Path) -> Path:
    """Write ``data`` as indented JSON to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m spotwhisper.io.download_manifest --make-manifest DIR [--out FILE]``."""
    parser = argparse.ArgumentParser(
        prog="python -m spotwhisper.io.download_manifest", description="Write a data set manifest (sizes, sha256) from a local copy."
    )
    parser.add_argument("--make-manifest", metavar="DIR", required=True, help="her2st folder to describe")
    parser.add_argument("--out", default=str(RESOURCES / "her2st_manifest.json"), help="manifest file to write")
    args = parser.parse_args(argv)
    manifest = make_manifest(args.make_manifest)
    write_json_atomic(manifest, args.out)
    print(f"{args.out}: {len(manifest['files'])} files, {sum(f['size'] for f in manifest['files']):,} bytes")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
