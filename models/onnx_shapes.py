"""Free the spatial input dims of a fixed-shape ONNX graph, without the `onnx` package (not a runtime dependency).

A detector exported at a square size (YOLOX-Nano's official `[1,3,416,416]`) is fully convolutional: it runs at
any height and width that are multiples of its largest stride, but ONNX Runtime refuses inputs whose size differs
from the declared one. `free_spatial_dims` rewrites the serialized ModelProto so that the first input's height and
width are symbolic, so are the outputs' dims after the batch (an anchor count depends on the input size), and the recorded intermediate shapes (`value_info`, which pin the export size) are dropped. Everything else —
nodes, weights, opsets, metadata — is copied byte for byte.

Only the protobuf wire format is touched (varints and length-delimited fields); the field numbers are those of
onnx.proto3, which are frozen by ONNX's compatibility rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from vigil.errors import ModelError

# onnx.proto3 field numbers.
_MODEL_GRAPH = 7
_GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_VALUE_INFO = 11, 12, 13
_VALUE_INFO_TYPE = 2
_TYPE_TENSOR = 1
_TENSOR_SHAPE = 2
_SHAPE_DIM = 1
_DIM_PARAM = 2

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ModelError("ONNX model is truncated (a varint runs past the end)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes, bytes]]:
    """(field number, wire type, the field's whole encoding, its payload) for each field of a message."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, pos = _varint(data, pos)
            payload = b""
        elif wire == _FIXED64:
            pos += 8
            payload = b""
        elif wire == _FIXED32:
            pos += 4
            payload = b""
        elif wire == _BYTES:
            length, pos = _varint(data, pos)
            payload = data[pos : pos + length]
            pos += length
        else:
            raise ModelError(f"ONNX model has a protobuf field of wire type {wire}, which ONNX never uses")
        if pos > len(data):
            raise ModelError("ONNX model is truncated (a field runs past the end)")
        yield number, wire, data[start:pos], payload


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _BYTES) + _encode_varint(len(payload)) + payload


def _replace(data: bytes, number: int, change: Callable[[bytes], bytes | None]) -> bytes:
    """`data` with each length-delimited field `number` replaced by `change(payload)` (None drops it)."""
    out = bytearray()
    for field, wire, whole, payload in _fields(data):
        if field == number and wire == _BYTES:
            changed = change(payload)
            if changed is not None:
                out += _field(number, changed)
        else:
            out += whole
    return bytes(out)


def _free_dims(shape: bytes, name: Callable[[int], str | None]) -> tuple[bytes, int]:
    """A TensorShapeProto whose dim i becomes symbolic, named `name(i)`, where that is not None; and its rank."""
    out = bytearray()
    index = 0
    for field, wire, whole, _ in _fields(shape):
        if field == _SHAPE_DIM and wire == _BYTES:
            if (symbol := name(index)) is not None:
                whole = _field(_SHAPE_DIM, _field(_DIM_PARAM, symbol.encode()))
            index += 1
        out += whole
    return bytes(out), index


def _input_shape(shape: bytes) -> bytes:
    edited, rank = _free_dims(shape, {2: "height", 3: "width"}.get)
    if rank != 4:
        raise ModelError(f"the model's input has {rank} dims; a detector's is [B, 3, H, W]")
    return edited


def _output_shape(shape: bytes) -> bytes:
    # Every dim after the batch: which one counts anchors differs by family ([B, N, 85] or [B, 84, N]).
    return _free_dims(shape, lambda i: f"output_dim{i}" if i > 0 else None)[0]


def _on_tensor_shape(value_info: bytes, change: Callable[[bytes], bytes | None]) -> bytes:
    """A ValueInfoProto with its tensor type's shape passed through `change`."""

    def tensor(payload: bytes) -> bytes:
        return _replace(payload, _TENSOR_SHAPE, change)

    return _replace(value_info, _VALUE_INFO_TYPE, lambda t: _replace(t, _TYPE_TENSOR, tensor))


def free_spatial_dims(model: bytes) -> bytes:
    """The serialized model with input 0's dims 2 and 3 named `height` and `width`, every output dim after
    the batch symbolic, and no `value_info`. Raises `ModelError` when the bytes are not a model with a graph."""
    graphs = 0
    inputs = 0

    def graph(payload: bytes) -> bytes:
        nonlocal graphs
        graphs += 1

        def first_input(value_info: bytes) -> bytes:
            nonlocal inputs
            inputs += 1
            if inputs > 1:  # initializers listed as inputs (IR < 4) and further inputs stay as they are
                return value_info
            return _on_tensor_shape(value_info, _input_shape)

        edited = _replace(payload, _GRAPH_INPUT, first_input)
        edited = _replace(edited, _GRAPH_OUTPUT, lambda value_info: _on_tensor_shape(value_info, _output_shape))
        return _replace(edited, _GRAPH_VALUE_INFO, lambda _: None)

    result = _replace(model, _MODEL_GRAPH, graph)
    if graphs != 1 or inputs == 0:
        raise ModelError("not an ONNX model with a graph and an input; check the file (`vigil models verify`)")
    return result
