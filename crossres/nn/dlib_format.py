"""A reader for dlib's binary serialisation of DNNs (``serialize(net)`` in ``dlib/dnn/core.h``), in plain Python.

What the reader knows of the format (dlib's ``serialize.h``, ``dnn/core.h``, ``dnn/layers.h``, ``cuda/tensor.h``):

* Integers: one control byte (low 4 bits: the number of bytes that follow, bit 7: negative), then the magnitude
  in that many little-endian bytes. Booleans are the ASCII bytes ``'0'``/``'1'``. Strings: length, then bytes.
* Scalars ``float``/``double``: a mantissa (int64) and an exponent (int16), both as integers: ``m * 2**e``
  (exponents 32000/32001/32002 stand for +inf, -inf and NaN).
* ``resizable_tensor``: version 2, ``num_samples, k, nr, nc``, then the values as little-endian IEEE float32.
  ``alias_tensor`` (a view into a layer's ``params``): version 1 and the four dimensions only.
* A network is nested: ``add_loss_layer`` (version 1, loss details, subnetwork), ``add_layer`` (version 1-2, its
  subnetwork, *then* its details, three flags and three tensors), ``add_tag_layer``/``add_skip_layer`` (version 1,
  subnetwork), and at the bottom the ``add_layer`` over the input layer (version 2-3: input details, its layer's
  details, flags, tensors). Versions go from the loss down to the input, details come back up from the input.
  The wrappers do not name their type, so :func:`read_network` is told the network's layers, top-down.

Nothing in a file is executed; every value is checked as it is read, and an error names the file, the byte
offset and what was expected there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["LAYER_KINDS", "DlibFormatError", "DlibLayer", "DlibReader", "read_network"]

LAYER_KINDS = ("con", "fc", "affine", "relu", "add_prev", "avg_pool", "max_pool", "tag", "skip")
"""Layer kinds :func:`read_network` reads (``tag``/``skip`` are wrappers without details)."""

_FLOAT_SPECIAL = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
_MAX_STRING = 256  # version strings are short; a longer one means a foreign file
_MAX_ELEMENTS = 1 << 31


class DlibFormatError(ValueError):
    """A file that is not (or not wholly) the dlib network expected, with the byte offset of the problem."""


@dataclass
class DlibLayer:
    """One layer read from a dlib network file.

    Args:
        kind: One of :data:`LAYER_KINDS`, ``"input"`` or ``"loss_metric"``.
        version: The version string of its details in the file (``"con_4"``, ``"affine_"``, ...); ``""`` for
            ``tag``/``skip``.
        offset: Byte offset of its details in the file.
        attrs: Its scalar settings (``num_filters``, ``nr``, ``stride_y``, ``padding_y``, ...).
        tensors: Its weights as float32 arrays in PyTorch's layout (``weight``, ``bias`` for ``con``; ``weight``
            ``(out, in)`` for ``fc``; ``gamma``, ``beta`` for ``affine``).
    """

    kind: str
    version: str
    offset: int
    attrs: dict[str, float | int | bool] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


class DlibReader:
    """Reads dlib's primitive encodings from bytes, tracking the offset for error messages.

    Args:
        data: The file's bytes.
        source: The file's name, used in error messages.
    """

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self.data = memoryview(data)
        self.source = source
        self.offset = 0

    def error(self, what: str, found: str, offset: int | None = None) -> DlibFormatError:
        """An error naming the file, the byte offset, what was expected and what was found there."""
        at = self.offset if offset is None else offset
        return DlibFormatError(f"{self.source}: expected {what} at byte {at}, found {found}")

    def take(self, count: int, what: str) -> memoryview:
        """The next ``count`` bytes, or an error if the file ends first."""
        if count > len(self.data) - self.offset:
            raise self.error(what, f"the end of the file (at byte {len(self.data)}: truncated?)")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def integer(self, what: str = "an integer") -> int:
        """A dlib integer (signed or unsigned: the same encoding for non-negative values)."""
        start = self.offset
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            raise self.error(what, f"byte 0x{control:02x}, not a dlib integer control byte", start)
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def expect_integer(self, allowed: Sequence[int], what: str) -> int:
        """An integer that must be one of ``allowed`` (versions, flags)."""
        start = self.offset
        value = self.integer(what)
        if value not in allowed:
            raise self.error(f"{what} in {list(allowed)}", str(value), start)
        return value

    def scalar(self, what: str = "a float") -> float:
        """A dlib ``float``/``double``: mantissa and exponent as two integers."""
        start = self.offset
        if self.offset < len(self.data) and self.data[self.offset] & 0x70:
            raise self.error(what, "dlib's pre-2013 text float format, which crossres does not read", start)
        mantissa = self.integer(what)
        exponent = self.integer(what)
        if exponent in _FLOAT_SPECIAL:
            return _FLOAT_SPECIAL[exponent]
        if not -1200 < exponent < 1200:
            raise self.error(what, f"exponent {exponent}", start)
        return float(np.ldexp(float(mantissa), exponent))

    def boolean(self, what: str = "a bool") -> bool:
        """A dlib bool: the ASCII byte ``'0'`` or ``'1'``."""
        start = self.offset
        byte = self.take(1, what)[0]
        if byte not in (0x30, 0x31):
            raise self.error(f"{what} ('0' or '1')", f"byte 0x{byte:02x}", start)
        return byte == 0x31

    def string(self, what: str = "a string") -> str:
        """A dlib string: its length, then its bytes."""
        start = self.offset
        length = self.integer(what)
        if not 0 <= length <= _MAX_STRING:
            raise self.error(what, f"a string length of {length}", start)
        raw = bytes(self.take(length, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(what, f"non-ASCII bytes {raw[:16]!r}", start) from None

    def version(self, allowed: Sequence[str], what: str) -> str:
        """A layer's version string, which must be one of ``allowed``."""
        start = self.offset
        value = self.string(f"the version of {what}")
        if value not in allowed:
            raise self.error(f"{what} (version {' or '.join(repr(a) for a in allowed)})", repr(value), start)
        return value

    def _dims(self, what: str) -> tuple[int, int, int, int]:
        dims = tuple(self.integer(what) for _ in range(4))
        if any(d < 0 for d in dims) or int(np.prod(dims, dtype=np.int64)) > _MAX_ELEMENTS:
            raise self.error(what, f"dimensions {dims}")
        return dims  # type: ignore[return-value]

    def tensor(self, what: str = "a tensor") -> np.ndarray:
        """A ``resizable_tensor``: version 2, four dimensions, little-endian float32 values."""
        self.expect_integer((2,), f"the version of {what}")
        dims = self._dims(what)
        count = int(np.prod(dims, dtype=np.int64))
        raw = self.take(4 * count, f"{count} float32 values of {what} {dims}")
        return np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32).reshape(dims)

    def alias_tensor(self, what: str = "an alias tensor") -> tuple[int, int, int, int]:
        """An ``alias_tensor``: version 1 and four dimensions, no values."""
        self.expect_integer((1,), f"the version of {what}")
        return self._dims(what)


# ------------------------------------------------------------------------------------------ layer details
def _learning_rates(reader: DlibReader, what: str) -> None:
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_lr_multiplier", "bias_wd_multiplier"):
        reader.scalar(f"{what}'s {name}")


def _split(reader: DlibReader, params: np.ndarray, shapes: Sequence[tuple[int, ...]], what: str) -> list[np.ndarray]:
    flat = params.reshape(-1)
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    if sum(sizes) != flat.size:
        raise reader.error(f"{what}'s params to hold {' + '.join(map(str, sizes))} values", f"{flat.size}")
    parts, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        parts.append(flat[start : start + size].reshape(shape))
        start += size
    return parts


def _read_con(reader: DlibReader, layer: DlibLayer) -> None:
    what = f"con layer ({layer.version})"
    params = reader.tensor(f"{what}'s params")
    attrs = layer.attrs
    for name in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
        attrs[name] = reader.integer(f"{what}'s {name}")
    filters = reader.alias_tensor(f"{what}'s filter shape")
    biases = reader.alias_tensor(f"{what}'s bias shape")
    _learning_rates(reader, what)
    attrs["use_bias"] = reader.boolean(f"{what}'s use_bias") if layer.version in ("con_5", "con_6") else True
    attrs["use_relu"] = reader.boolean(f"{what}'s use_relu") if layer.version == "con_6" else False
    if filters[0] != attrs["num_filters"] or filters[2:] != (attrs["nr"], attrs["nc"]):
        raise reader.error(f"{what}'s filters of {attrs['num_filters']}x?x{attrs['nr']}x{attrs['nc']}", f"{filters}")
    shapes: list[tuple[int, ...]] = [filters]
    if attrs["use_bias"]:
        if int(np.prod(biases)) != filters[0]:
            raise reader.error(f"{what}'s {filters[0]} biases", f"bias shape {biases}")
        shapes.append((filters[0],))
    parts = _split(reader, params, shapes, what)
    layer.tensors["weight"] = parts[0]  # (out, in, nr, nc): PyTorch's Conv2d layout (dlib also correlates)
    layer.tensors["bias"] = parts[1] if attrs["use_bias"] else np.zeros(filters[0], np.float32)


def _read_fc(reader: DlibReader, layer: DlibLayer) -> None:
    what = f"fc layer ({layer.version})"
    outputs = reader.integer(f"{what}'s num_outputs")
    inputs = reader.integer(f"{what}'s num_inputs")
    params = reader.tensor(f"{what}'s params")
    reader.alias_tensor(f"{what}'s weight shape")
    reader.alias_tensor(f"{what}'s bias shape")
    bias_mode = reader.expect_integer((0, 1), f"{what}'s bias mode (0: bias, 1: no bias)")
    _learning_rates(reader, what)
    use_bias = reader.boolean(f"{what}'s use_bias") if layer.version == "fc_3" else True
    has_bias = bias_mode == 0 and use_bias
    layer.attrs.update(num_outputs=outputs, num_inputs=inputs, has_bias=has_bias)
    # dlib's params are a (num_inputs [+ 1 bias row], num_outputs) matrix: output = input @ weights.
    weights = _split(reader, params, [(inputs + int(has_bias), outputs)], what)[0]
    layer.tensors["weight"] = np.ascontiguousarray(weights[:inputs].T)
    if has_bias:
        layer.tensors["bias"] = weights[inputs].copy()


def _read_affine(reader: DlibReader, layer: DlibLayer) -> None:
    what = f"affine layer ({layer.version})"
    params = reader.tensor(f"{what}'s params")
    gamma_shape = reader.alias_tensor(f"{what}'s gamma shape")
    reader.alias_tensor(f"{what}'s beta shape")
    if layer.version in ("bn_con2", "bn_fc2"):  # a batch norm, folded into an affine as dlib does on loading
        means = [reader.tensor(f"{what}'s {name}") for name in ("means", "invstds", "running_means", "running_vars")]
        reader.integer(f"{what}'s num_updates")
        reader.integer(f"{what}'s running_stats_window_size")
        _learning_rates(reader, what)
        eps = reader.scalar(f"{what}'s eps")
        gamma, beta = _split(reader, params, [gamma_shape, gamma_shape], what)
        scale = gamma.reshape(-1) / np.sqrt(means[3].reshape(-1) + eps)
        layer.tensors["gamma"] = scale.astype(np.float32)
        layer.tensors["beta"] = (beta.reshape(-1) - scale * means[2].reshape(-1)).astype(np.float32)
        layer.attrs["mode"] = 0 if layer.version == "bn_con2" else 1
        return
    layer.attrs["mode"] = reader.expect_integer((0, 1), f"{what}'s mode (0: conv, 1: fc)")
    if layer.version == "affine_2" and reader.boolean(f"{what}'s disabled flag"):
        raise reader.error(f"{what} to be enabled", "a disabled affine layer")
    gamma, beta = _split(reader, params, [gamma_shape, gamma_shape], what)
    layer.tensors["gamma"] = gamma.reshape(-1).copy()
    layer.tensors["beta"] = beta.reshape(-1).copy()


def _read_relu(reader: DlibReader, layer: DlibLayer) -> None:
    if layer.version == "relu_2" and reader.boolean("the relu layer's disabled flag"):
        raise reader.error("an enabled relu layer", "a disabled one")


def _read_pool(reader: DlibReader, layer: DlibLayer) -> None:
    for name in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
        layer.attrs[name] = reader.integer(f"the {layer.kind} layer's {name}")


def _read_nothing(reader: DlibReader, layer: DlibLayer) -> None:
    del reader, layer


_DETAILS = {
    "con": (("con_4", "con_5", "con_6"), _read_con),
    "fc": (("fc_2", "fc_3"), _read_fc),
    "affine": (("affine_", "affine_2", "bn_con2", "bn_fc2"), _read_affine),
    "relu": (("relu_", "relu_2"), _read_relu),
    "add_prev": (("add_prev_",), _read_nothing),
    "avg_pool": (("avg_pool_2",), _read_pool),
    "max_pool": (("max_pool_2",), _read_pool),
}


def _read_details(reader: DlibReader, kind: str, index: int) -> DlibLayer:
    versions, read = _DETAILS[kind]
    offset = reader.offset
    layer = DlibLayer(kind, reader.version(versions, f"layer {index} ({kind})"), offset)
    read(reader, layer)
    return layer


def _read_input(reader: DlibReader) -> DlibLayer:
    offset = reader.offset
    version = reader.version(("input_rgb_image_sized", "input_rgb_image"), "the input layer")
    layer = DlibLayer("input", version, offset)
    for name in ("avg_red", "avg_green", "avg_blue"):
        layer.attrs[name] = reader.scalar(f"the input layer's {name}")
    if version == "input_rgb_image_sized":
        layer.attrs["nr"] = reader.integer("the input layer's rows")
        layer.attrs["nc"] = reader.integer("the input layer's columns")
    return layer


def _read_loss_metric(reader: DlibReader) -> DlibLayer:
    offset = reader.offset
    layer = DlibLayer("loss_metric", reader.version(("loss_metric_2", "loss_metric_"), "the loss layer"), offset)
    if layer.version == "loss_metric_2":
        layer.attrs["margin"] = reader.scalar("loss_metric's margin")
        layer.attrs["distance_threshold"] = reader.scalar("loss_metric's distance threshold")
    return layer


def _read_layer_state(reader: DlibReader, index: int, tensors: int) -> None:
    # add_layer's bookkeeping after its details: three flags, then x_grad, cached_output and params_grad/grad_final.
    for name in ("setup_called", "gradient_input_is_stale", "output_and_gradient_disabled"):
        reader.boolean(f"layer {index}'s {name} flag")
    for name in ("x_grad", "cached_output", "params_grad")[:tensors]:
        reader.tensor(f"layer {index}'s {name}")


def read_network(data: bytes, kinds: Sequence[str], source: str = "<bytes>") -> list[DlibLayer]:
    """Read a ``loss_metric`` network whose layers, from the loss down to the input, are ``kinds``.

    Args:
        data: The bytes of a file written by dlib's ``serialize(net)``.
        kinds: The layers below the loss, top-down, each one of :data:`LAYER_KINDS`; the last one sits on
            the input layer and must not be ``tag`` or ``skip`` (e.g. ``["fc", "avg_pool", ..., "con"]``).
        source: The file's name, used in error messages.

    Returns:
        ``[loss, *layers, input]``: the loss layer, one :class:`DlibLayer` per entry of ``kinds`` in the same
        order, and the input layer.

    Raises:
        DlibFormatError: (a ``ValueError``) if the bytes are not such a network, are truncated, or have bytes
            left over; the message names ``source``, the byte offset and what was expected.
    """
    unknown = sorted(set(kinds) - set(LAYER_KINDS))
    if unknown or not kinds or kinds[-1] in ("tag", "skip"):
        raise ValueError(f"kinds must be layers of {LAYER_KINDS} ending with a layer over the input, got {kinds}")
    reader = DlibReader(data, source)
    reader.expect_integer((1,), "the loss layer's version (a dlib network file starts with 0x01 0x01)")
    loss = _read_loss_metric(reader)
    layer_versions: dict[int, int] = {}
    for index, kind in enumerate(kinds[:-1]):
        if kind in ("tag", "skip"):
            reader.expect_integer((1,), f"the version of layer {index} ({kind})")
        else:
            layer_versions[index] = reader.expect_integer((1, 2), f"the version of layer {index} ({kind})")
    bottom = len(kinds) - 1
    bottom_version = reader.expect_integer((2, 3), f"the version of layer {bottom} ({kinds[-1]} over the input)")
    layers: list[DlibLayer | None] = [None] * len(kinds)
    input_layer = _read_input(reader)
    layers[bottom] = _read_details(reader, kinds[-1], bottom)
    _read_layer_state(reader, bottom, tensors=3)
    if bottom_version == 3:
        reader.integer(f"layer {bottom}'s sample expansion factor")
    for index in reversed(range(bottom)):
        if kinds[index] in ("tag", "skip"):
            layers[index] = DlibLayer(kinds[index], "", reader.offset)
            continue
        layers[index] = _read_details(reader, kinds[index], index)
        _read_layer_state(reader, index, tensors=3 if layer_versions[index] == 2 else 2)
    if reader.offset != len(data):
        raise reader.error("the end of the file", f"{len(data) - reader.offset} more bytes")
    return [loss, *(layer for layer in layers if layer is not None), input_layer]


def read_network_file(path: str | Path, kinds: Sequence[str]) -> list[DlibLayer]:
    """:func:`read_network` on a file.

    Args:
        path: A ``.dat`` file written by dlib (not bz2-compressed).
        kinds: As :func:`read_network`.

    Returns:
        As :func:`read_network`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        DlibFormatError: As :func:`read_network`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dlib network file {str(path)!r} not found")
    data = path.read_bytes()
    if data[:3] == b"BZh":
        raise DlibFormatError(f"{path}: expected a dlib network at byte 0, found bzip2 data: decompress it first")
    return read_network(data, kinds, str(path))
