"""The data formats' public names, re-exported from ``codec``, ``recordio``, ``bin``, ``folder`` and ``lfw``."""

from crossres.data.bin import export_pair_set, load_bin, write_bin
from crossres.data.codec import IMAGE_EXTENSIONS, ImageFiles, LazyJPEGImages, decode_image_bytes, encode_jpeg_bytes
from crossres.data.folder import ImageFolderFaces, export_dataset, folder_pairs, write_image_folder
from crossres.data.lfw import load_lfw_pairs
from crossres.data.recordio import RECORDIO_MAGIC, CorruptRecordError, RecordIOFaces, write_recordio

__all__ = [
    "IMAGE_EXTENSIONS",
    "RECORDIO_MAGIC",
    "CorruptRecordError",
    "ImageFiles",
    "ImageFolderFaces",
    "LazyJPEGImages",
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
]
