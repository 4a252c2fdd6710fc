from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.io import encode_jpeg, encode_png

from crossres.data.bin import export_pair_set, load_bin, write_bin
from crossres.data.codec import LazyJPEGImages, decode_image_bytes
from crossres.data.folder import ImageFolderFaces, export_dataset, folder_pairs, write_image_folder
from crossres.data.lfw import load_lfw_pairs
from crossres.data.pairs import PairDataset
from crossres.data.recordio import CorruptRecordError, RecordIOFaces, write_recordio

MAGIC = 0xCED7230A


def shapes_image(seed: int, size: tuple[int, int] = (112, 112)) -> torch.Tensor:
    """A smooth synthetic face stand-in: coloured background, a rectangle and a disc."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    colours = torch.randint(0, 256, (3, 3), generator=g, dtype=torch.uint8)
    image = colours[0].view(3, 1, 1).expand(3, h, w).clone()
    y0, x0 = (int(v) for v in torch.randint(0, min(h, w) // 2, (2,), generator=g))
    image[:, y0 : y0 + h // 3, x0 : x0 + w // 3] = colours[1].view(3, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cy, cx = (int(v) for v in torch.randint(h // 4, 3 * h // 4, (2,), generator=g))
    image[:, (yy - cy) ** 2 + (xx - cx) ** 2 < (h // 6) ** 2] = colours[2].view(3, 1)
    return image


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 4.0) -> bool:
    """JPEG is lossy: compare by mean absolute difference in grey levels."""
    return a.shape == b.shape and float((a.float() - b.float()).abs().mean()) < tol


def naive_records(rec: Path) -> list[tuple[int, bytes]]:
    """Paper-literal sequential dmlc RecordIO scan: (start offset, joined payload) of every logical record."""
    data = rec.read_bytes()
    out, pos, start, parts = [], 0, None, []
    while pos < len(data):
        magic, lrec = struct.unpack("<II", data[pos : pos + 8])
        assert magic == MAGIC
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        if start is None:
            start = pos
        parts.append(data[pos + 8 : pos + 8 + length])
        pos += 8 + (length + 3) // 4 * 4
        if cflag in (0, 3):
            out.append((start, b"".join(parts)))
            start, parts = None, []
        else:
            parts.append(struct.pack("<I", MAGIC))
    return out


def unpack(payload: bytes) -> tuple[int, list[float], bytes]:
    flag, label, _, _ = struct.unpack("<IfQQ", payload[:24])
    if flag == 0:
        return flag, [label], payload[24:]
    labels = list(np.frombuffer(payload[24 : 24 + 4 * flag], dtype="<f4"))
    return flag, labels, payload[24 + 4 * flag :]


@pytest.fixture
def rec_dir(tmp_path: Path) -> tuple[Path, list[tuple[torch.Tensor, int]]]:
    # Labels deliberately interleaved: the writer must group them.
    items = [(shapes_image(i), [2, 0, 1, 0, 2, 1, 0, 2][i % 8]) for i in range(24)]
    write_recordio(tmp_path / "rec", items, image_size=(112, 112))
    return tmp_path / "rec", items


# ----------------------------------------------------------------------------------------------- RecordIO
def test_recordio_round_trip(rec_dir):
    root, items = rec_dir
    ds = RecordIOFaces(root)
    assert len(ds) == 24 and ds.num_classes == 3 and ds.image_size == (112, 112)
    expected = sorted(range(24), key=lambda i: items[i][1])  # stable grouping by label
    for index, source in enumerate(expected):
        item = ds[index]
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 112, 112)
        assert item["label"] == items[source][1]
        assert close(item["image"], items[source][0])
    assert set(ds[0]) == {"image", "label"}


def test_recordio_layout_matches_insightface(rec_dir):
    root, items = rec_dir
    records = naive_records(root / "train.rec")
    idx = dict(tuple(map(int, line.split("\t"))) for line in (root / "train.idx").read_text().splitlines())
    by_offset = dict(records)
    payload = {key: by_offset[offset] for key, offset in idx.items()}
    flag, header, body = unpack(payload[0])
    assert flag == 2 and header == [25.0, 28.0] and body == b""  # (first identity record, end)
    labels = [int(unpack(payload[k])[1][0]) for k in range(1, 25)]
    assert labels == sorted(labels)
    ranges = [tuple(int(v) for v in unpack(payload[k])[1]) for k in range(25, 28)]
    assert ranges == [(1, 10), (10, 16), (16, 25)]  # labels 0, 1, 2: 9, 6 and 9 images
    assert (root / "property").read_text().strip() == "3,112,112"


def test_recordio_multipart_record(tmp_path):
    # A JPEG comment holding the RecordIO magic at 4-byte aligned payload offsets forces multi-part records.
    jpeg = encode_jpeg(shapes_image(1), quality=90).numpy().tobytes()
    magic = struct.pack("<I", MAGIC)
    comment = b"\x00\x00" + magic * 3  # payload offset 24 + 2 (SOI) + 4 (COM hdr) + 2 = 32: aligned
    with_magic = jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]
    write_recordio(tmp_path, [(with_magic, 0), (shapes_image(2), 1)], image_size=(112, 112))
    raw = (tmp_path / "train.rec").read_bytes()
    flags = []
    pos = 0
    while pos < len(raw):
        _, lrec = struct.unpack("<II", raw[pos : pos + 8])
        flags.append(lrec >> 29)
        pos += 8 + ((lrec & ((1 << 29) - 1)) + 3) // 4 * 4
    assert flags.count(1) == 1 and flags.count(2) == 2 and flags.count(3) == 1
    ds = RecordIOFaces(tmp_path)
    assert close(ds[0]["image"], shapes_image(1)) and ds[0]["label"] == 0
    assert [p for _, p in naive_records(tmp_path / "train.rec")][1][24:] == with_magic


def test_recordio_multi_worker_loader(rec_dir):
    root, _ = rec_dir
    ds = RecordIOFaces(root)
    ds[0]  # open in the parent first: workers must not reuse its descriptor
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._fd is None and clone[3]["label"] == ds[3]["label"]
    loader = DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    labels = torch.cat([batch["label"] for batch in loader])
    assert labels.tolist() == [ds[i]["label"] for i in range(len(ds))]


def test_recordio_missing_files(tmp_path, rec_dir):
    root, _ = rec_dir
    (root / "property").unlink()
    with pytest.raises(FileNotFoundError, match=r"property not found .*train\.rec, train\.idx, property"):
        RecordIOFaces(root)
    with pytest.raises(FileNotFoundError, match="train.rec not found"):
        RecordIOFaces(tmp_path / "nothing")


def corrupt_record(root: Path, key: int) -> None:
    offset = int((root / "train.idx").read_text().splitlines()[key].split("\t")[1])
    with open(root / "train.rec", "r+b") as f:
        f.seek(offset + 8 + 24 + 2)  # inside the JPEG, right after SOI
        f.write(b"\x00" * 300)


def test_recordio_corrupt_jpeg_raises_then_skips(rec_dir):
    root, _ = rec_dir
    corrupt_record(root, 5)
    strict = RecordIOFaces(root)
    with pytest.raises(CorruptRecordError, match=r"corrupt record 5 \(item 4\) in .*train\.rec.*skip_corrupt"):
        strict[4]
    assert strict[3]["label"] == 0
    lenient = RecordIOFaces(root, skip_corrupt=True)
    item = lenient[4]
    assert item["corrupt"] == 1 and lenient.num_corrupt == 1
    assert torch.equal(item["image"], lenient[5]["image"])  # the next readable record
    assert lenient[3]["corrupt"] == 0
    loader = DataLoader(lenient, batch_size=6, num_workers=2)
    assert sum(int(b["corrupt"].sum()) for b in loader) == 1  # per-item counts sum over workers


def test_recordio_truncated(rec_dir):
    root, _ = rec_dir
    rec = root / "train.rec"
    last_image = int((root / "train.idx").read_text().splitlines()[24].split("\t")[1])
    rec.write_bytes(rec.read_bytes()[: last_image + 100])
    with pytest.raises(CorruptRecordError, match=r"corrupt record 24 .*truncated"):
        RecordIOFaces(root)[23]
    lenient = RecordIOFaces(root, skip_corrupt=True)
    assert lenient[23]["corrupt"] == 1  # wraps round to item 0
    assert torch.equal(lenient[23]["image"], lenient[0]["image"])


def test_recordio_bad_magic(rec_dir):
    root, _ = rec_dir
    offset = int((root / "train.idx").read_text().splitlines()[2].split("\t")[1])
    with open(root / "train.rec", "r+b") as f:
        f.seek(offset)
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(CorruptRecordError, match="record 2 .*bad magic"):
        RecordIOFaces(root)[1]


def test_write_recordio_refuses_overwrite(rec_dir):
    root, items = rec_dir
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_recordio(root, items[:2])
    write_recordio(root, items[:2], overwrite=True)
    assert len(RecordIOFaces(root)) == 2


# ------------------------------------------------------------------------------------------------- .bin
def test_bin_round_trip(tmp_path):
    images = [shapes_image(i, (112, 96)) for i in range(8)]
    write_bin(tmp_path / "lfw.bin", images, [True, False, True, False])
    pair_set = load_bin(tmp_path / "lfw.bin")
    assert pair_set.name == "lfw" and len(pair_set) == 4
    assert isinstance(pair_set.images, LazyJPEGImages) and len(pair_set.images) == 8
    assert pair_set.pairs.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert pair_set.issame.tolist() == [True, False, True, False]
    assert all(close(pair_set.images[i], images[i]) for i in range(8))
    item = PairDataset(pair_set, {"7px": torch.full((4, 2), 7)})[1]
    assert close(item["image1"], images[2]) and item["issame"].item() is False


def test_bin_python2_and_numpy_variants(tmp_path):
    jpegs = [encode_jpeg(shapes_image(i), quality=90).numpy().tobytes() for i in range(4)]
    # Python 2 protocol-2 pickle: images as BINSTRING (str), issame as NEWTRUE/NEWFALSE (hand-assembled).
    body = b"".join(b"T" + struct.pack("<I", len(j)) + j for j in jpegs)
    py2 = b"\x80\x02]q\x00(" + body + b"e]q\x01(\x88\x89e\x86q\x02."
    (tmp_path / "py2.bin").write_bytes(py2)
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(py2)  # what a plain Python 3 load does with such a file
    ps = load_bin(tmp_path / "py2.bin", name="agedb_30")
    assert ps.name == "agedb_30" and ps.issame.tolist() == [True, False]
    assert close(ps.images[3], shapes_image(3))
    # numpy arrays of JPEG bytes and a numpy bool issame (protocol 2 and 4).
    for protocol in (2, 4):
        content = ([np.frombuffer(j, dtype=np.uint8) for j in jpegs], np.array([False, True]))
        (tmp_path / "np.bin").write_bytes(pickle.dumps(content, protocol=protocol))
        ps = load_bin(tmp_path / "np.bin")
        assert ps.issame.tolist() == [False, True] and close(ps.images[0], shapes_image(0))


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bin_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([_Exploit(marker)], [True])))
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.bin: refused to load global (posix|os)\.system"):
        load_bin(tmp_path / "evil.bin")
    assert not marker.exists()
    (tmp_path / "eval.bin").write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        load_bin(tmp_path / "eval.bin")


def test_bin_bad_content(tmp_path):
    (tmp_path / "odd.bin").write_bytes(pickle.dumps(([b"x"] * 3, [True])))
    with pytest.raises(ValueError, match="3 images for 1 pairs"):
        load_bin(tmp_path / "odd.bin")
    with pytest.raises(FileNotFoundError, match="lfw.bin"):
        load_bin(tmp_path / "lfw.bin")
    with pytest.raises(ValueError, match="2 images per pair"):
        write_bin(tmp_path / "x.bin", [shapes_image(0)], [True])


# --------------------------------------------------------------------------------------- image folders
def test_image_folder_and_pairs(tmp_path):
    items = [(shapes_image(i), i % 12) for i in range(36)]
    counts = write_image_folder(tmp_path / "faces", items)
    assert counts == {"images": 36, "identities": 12}
    ds = ImageFolderFaces(tmp_path / "faces")
    assert ds.num_classes == 12 and ds.classes[:3] == ["0000000", "0000001", "0000002"] and len(ds) == 36
    assert ds[0]["label"] == 0 and close(ds[0]["image"], shapes_image(0))
    assert ds[35]["label"] == 11 and close(ds[35]["image"], shapes_image(35))
    ps = folder_pairs(tmp_path / "faces", num_pairs=40, seed=3)
    again = folder_pairs(tmp_path / "faces", num_pairs=40, seed=3)
    assert torch.equal(ps.pairs, again.pairs) and ps.name == "faces"
    labels = torch.tensor([label for _, label in ds.samples])
    same = labels[ps.pairs[:, 0]] == labels[ps.pairs[:, 1]]
    assert torch.equal(same, ps.issame) and int(ps.issame.sum()) == 20
    assert len({tuple(sorted(p)) for p in ps.pairs.tolist()}) == 40
    assert close(ps.images[int(ps.pairs[0, 0])], ds[int(ps.pairs[0, 0])]["image"], tol=0.01)
    with pytest.raises(ValueError, match="cannot draw"):
        folder_pairs(tmp_path / "faces", num_pairs=1000)
    with pytest.raises(FileNotFoundError, match="identity folder"):
        ImageFolderFaces(tmp_path / "missing")


def test_export_dataset_and_pair_set(tmp_path):
    write_image_folder(tmp_path / "faces", [(shapes_image(i), i % 4) for i in range(12)])
    folder = ImageFolderFaces(tmp_path / "faces")
    export_dataset(folder, tmp_path / "rec", fmt="rec", quality=95)
    rec = RecordIOFaces(tmp_path / "rec")
    assert rec.num_classes == 4 and sorted(rec[i]["label"] for i in range(12)) == sorted(s[1] for s in folder.samples)
    pairs = folder_pairs(tmp_path / "faces", num_pairs=6, seed=0)
    export_pair_set(pairs, tmp_path / "faces.bin")
    back = load_bin(tmp_path / "faces.bin")
    assert torch.equal(back.issame, pairs.issame)
    assert close(back.images[1], pairs.images[int(pairs.pairs[0, 1])])


# ------------------------------------------------------------------------------------------- LFW pairs
def make_lfw(root: Path, people: dict[str, int]) -> None:
    for k, (person, count) in enumerate(people.items()):
        (root / person).mkdir(parents=True)
        for n in range(1, count + 1):
            (root / person / f"{person}_{n:04d}.jpg").write_bytes(
                encode_jpeg(shapes_image(10 * k + n, (250, 250))).numpy().tobytes()
            )


def test_lfw_pairs(tmp_path):
    make_lfw(tmp_path / "lfw", {"Ann_A": 3, "Bob_B": 2, "Cy_C": 1})
    text = "2\t1\nAnn_A\t1\t3\nAnn_A\t2\tCy_C\t1\nBob_B\t1\t2\r\nBob_B\t2\tAnn_A\t1\n\n"
    (tmp_path / "pairs.txt").write_text(text)
    ps = load_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")
    assert ps.issame.tolist() == [True, False, True, False] and ps.name == "lfw"
    assert ps.pairs.tolist() == [[0, 1], [2, 3], [4, 5], [5, 0]]
    assert close(ps.images[1], shapes_image(3, (250, 250)))


def test_lfw_pairs_reads_png_chips(tmp_path):
    """A ``crossres align --ext png`` tree of LFW: ``<Person>/<Person>_0001.png``."""
    make_lfw(tmp_path / "lfw", {"Ann_A": 2, "Bob_B": 1})
    for path in (tmp_path / "lfw").rglob("*.jpg"):
        path.with_suffix(".png").write_bytes(encode_png(decode_image_bytes(path.read_bytes())).numpy().tobytes())
        path.unlink()
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_A\t1\t2\nAnn_A\t2\tBob_B\t1\n")
    ps = load_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")
    assert [p.name for p in ps.images.paths] == ["Ann_A_0001.png", "Ann_A_0002.png", "Bob_B_0001.png"]
    assert ps.images[0].shape == (3, 250, 250)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1\t2\nAnn_A\t1\t3\nAnn_A\t1\nBob_B\t1\t2\nAnn_A\t2\tCy_C\t1\n", r"pairs\.txt:3: expected 'name"),
        ("1\t1\nAnn_A\t1\tx\nAnn_A\t2\tCy_C\t1\n", r"pairs\.txt:2: image number 'x'"),
        ("ten\t300\n", r"pairs\.txt:1: expected a header"),
        ("1\t2\nAnn_A\t1\t3\nAnn_A\t2\tCy_C\t1\n", "announces 4 pairs, found 2"),
    ],
)
def test_lfw_pairs_bad_lines(tmp_path, text, match):
    make_lfw(tmp_path / "lfw", {"Ann_A": 3, "Bob_B": 2, "Cy_C": 1})
    (tmp_path / "pairs.txt").write_text(text)
    with pytest.raises(ValueError, match=match):
        load_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")


def test_lfw_pairs_missing_image(tmp_path):
    make_lfw(tmp_path / "lfw", {"Ann_A": 1})
    (tmp_path / "pairs.txt").write_text("1\nAnn_A\t1\t2\nAnn_A\t1\tZed_Z\t1\n")
    with pytest.raises(FileNotFoundError, match=r"pairs\.txt:2: image .*Ann_A_0002\.jpg"):
        load_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")
    ps = load_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw", check_files=False)
    assert len(ps.images) == 3


def test_data_config_skip_corrupt_counts_the_skipped_records(rec_dir, tmp_path, capsys):
    from crossres.cli import main

    root, _ = rec_dir
    corrupt_record(root, 5)
    common = [
        f"--runs_dir={tmp_path / 'runs'}",
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.logger=null",
        "--model=Baseline",
        "--model.backbone=iresnet18",
        "--model.backbone_kwargs={width: 4, stem_stride: 2}",
        "--model.embedding_size=16",
        "--data.train_format=recordio",
        f"--data.train_root={root}",
        "--data.batch_size=8",
        "--data.num_workers=0",
        "--data.protocols=[14]",
        "--data.degradation.lr_sizes=[14]",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *common, "--name=strict"])
    assert exit_info.value.code == 2 and "skip_corrupt" in capsys.readouterr().err
    cli = main(["fit", *common, "--name=lenient", "--data.skip_corrupt=true"])
    assert cli.trainer.callback_metrics["train_corrupt_skipped"].item() == 1


def test_formats_module_re_exports_the_format_modules() -> None:
    import importlib

    formats = importlib.import_module("crossres.data.formats")
    modules = [
        importlib.import_module(f"crossres.data.{name}") for name in ("bin", "codec", "folder", "lfw", "recordio")
    ]
    for name in (
        "CorruptRecordError",
        "IMAGE_EXTENSIONS",
        "ImageFiles",
        "ImageFolderFaces",
        "LazyJPEGImages",
        "RECORDIO_MAGIC",
        "RecordIOFaces",
        "decode_image_bytes",
        "encode_jpeg_bytes",
        "export_dataset",
        "export_pair_set",
        "folder_pairs",
        "load_bin",
        "load_lfw_pairs",
        "write_bin",
        "write_image_folder",
        "write_recordio",
    ):
        owners = [module for module in modules if name in module.__all__]
        assert len(owners) == 1, name
        assert name in formats.__all__ and getattr(formats, name) is getattr(owners[0], name), name
