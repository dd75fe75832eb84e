"""Hostile inputs for `cargo xtask fuzz replay fuzz/hostile`: files written by hand to attack
each reader where such files have hurt others (declared sizes past memory, paths out of the
model's folder, pickles that run code, decompression bombs, cycles, slow and huge requests).
They are kept apart from the fuzzer's seeds: no mutation starts from them, so they test what
the fuzzer did not see. Each must end in a clear error. Standard library only.

    python3 scripts/make_hostile.py fuzz/hostile
"""

import json
import os
import struct
import sys
import zipfile
import zlib


def safetensors(header, data=b""):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def png(width, height, color_type=2, depth=8, idat=None):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    body = chunk(b"IHDR", ihdr)
    body += chunk(b"IDAT", idat if idat is not None else zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + varint(payload)


def tensor(name, dims, location=None, raw=None):
    t = b"".join(field(1, 0, d) for d in dims) + field(2, 0, 1) + field(8, 2, name.encode())
    if raw is not None:
        t += field(9, 2, raw)
    if location is not None:
        t += field(13, 2, field(1, 2, b"location") + field(2, 2, location.encode()))
        t += field(14, 0, 1)  # data_location = EXTERNAL
    return t


def node(op, inputs, outputs):
    return b"".join(field(1, 2, i.encode()) for i in inputs) + b"".join(
        field(2, 2, o.encode()) for o in outputs
    ) + field(4, 2, op.encode())


def onnx(nodes, inits, inputs=("x",)):
    graph = b"".join(field(1, 2, n) for n in nodes) + field(2, 2, b"g")
    graph += b"".join(field(5, 2, t) for t in inits)
    graph += b"".join(field(11, 2, field(1, 2, i.encode())) for i in inputs)
    return field(1, 0, 8) + field(7, 2, graph) + field(8, 2, field(2, 0, 17))


def stem(w):
    """A Conv reading `x` with weight `w`, as a ResNet's first layer."""
    return node("Conv", ["x", w], ["c"])


def pth_zip(entries):
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            # A fixed date: the same bytes on every run.
            z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


# A pickle (protocol 2) of {"w": torch._utils._rebuild_tensor_v2(storage, 0, size, stride)}
# whose storage is persistent id ("storage", FloatStorage, "0", "cpu", numel).
def torch_pickle(size, numel, stride=None):
    stride = stride or [1] * len(size)
    p = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02("
    p += b"(X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
    p += b"J" + struct.pack("<i", numel) if numel < 2**31 else b"\x8a\x08" + struct.pack("<Q", numel)
    p += b"tQK\x00" + b"(" + b"".join(b"J" + struct.pack("<i", s) for s in size) + b"t"
    p += b"(" + b"".join(b"J" + struct.pack("<i", s) for s in stride) + b"t\x89ccollections\nOrderedDict\n)Rt"
    p += b"Rq\x05s."
    return p


def main(out):
    files = {
        # safetensors: sizes past memory, offsets past the end, overlapping, a lying length.
        "safetensors/huge_shape.safetensors": safetensors(
            {"conv1.weight": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4]}}, b"\0" * 4
        ),
        "safetensors/shape_overflow.safetensors": safetensors(
            {"conv1.weight": {"dtype": "F32", "shape": [1 << 32, 1 << 32, 16], "data_offsets": [0, 0]}}
        ),
        "safetensors/offsets_past_end.safetensors": safetensors(
            {"conv1.weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 40]}}, b"\0" * 16
        ),
        "safetensors/offsets_reversed.safetensors": safetensors(
            {"conv1.weight": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, b"\0" * 8
        ),
        "safetensors/header_len_max.safetensors": b"\xff" * 8 + b"{}",
        "safetensors/header_len_past_end.safetensors": struct.pack("<Q", 1 << 20) + b'{"a":1}',
        "safetensors/negative_shape.safetensors": safetensors(
            {"conv1.weight": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4
        ),
        "safetensors/deep_json.safetensors": struct.pack("<Q", 20002) + b"{" + b"[" * 10000 + b"]" * 10000 + b"}",
        # PyTorch: a pickle that would run a shell command if loaded by pickle.load; a storage
        # of 2^40 floats in a tiny file; a zip entry whose sizes lie; an empty archive.
        "pth/os_system.pth": b"\x80\x02cposix\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.",
        "pth/huge_storage.pth": pth_zip(
            {"archive/data.pkl": torch_pickle([1 << 20, 1 << 20], 1 << 40), "archive/data/0": b"\0" * 16, "archive/version": b"3\n"}
        ),
        "pth/storage_shorter_than_view.pth": pth_zip(
            {"archive/data.pkl": torch_pickle([64, 64], 4), "archive/data/0": b"\0" * 16, "archive/version": b"3\n"}
        ),
        "pth/empty_zip.pth": pth_zip({}),
        "pth/truncated_zip.pth": pth_zip({"archive/data.pkl": b"\x80\x02}q\x00.", "archive/version": b"3\n"})[:40],
        # ONNX: weights read from outside the graph's folder, a tensor of 2^40 elements,
        # nodes missing their inputs, Identity nodes feeding each other.
        "onnx/external_etc_passwd.onnx": onnx([stem("w")], [tensor("w", [4, 3, 3, 3], location="/etc/passwd")]),
        "onnx/external_dotdot.onnx": onnx([stem("w")], [tensor("w", [4, 3, 3, 3], location="../../../../etc/hostname")]),
        "onnx/huge_dims.onnx": onnx([stem("w")], [tensor("w", [1 << 40, 3, 3, 3], raw=b"\0" * 16)]),
        "onnx/dims_overflow.onnx": onnx([stem("w")], [tensor("w", [1 << 62, 1 << 62, 4, 4], raw=b"")]),
        "onnx/conv_without_weight.onnx": onnx([node("Conv", ["x"], ["c"])], []),
        "onnx/identity_cycle.onnx": onnx(
            [stem("a"), node("Identity", ["b"], ["a"]), node("Identity", ["a"], ["b"])], []
        ),
        "onnx/no_graph.onnx": field(1, 0, 8),
        # Images: headers declaring sizes far past any limit, a decompression bomb, zero sizes.
        "png/100000x100000.png": png(100000, 100000),
        "png/zero_width.png": png(0, 10),
        "png/bomb_12000x12000.png": png(12000, 12000, color_type=0, idat=zlib.compress(b"\0" * (12001 * 12000), 9)),
        "png/16bit_rgba_huge.png": png(30000, 30000, color_type=6, depth=16),
        "jpeg/sof_65535x65535.jpg": bytes.fromhex("ffd8ffc0001108ffffffff03012200021101031101ffd9"),
        "jpeg/truncated.jpg": bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffdb0043"),
        # Train configs: numbers past every range, a nesting bomb, a path out of the tree.
        "config/huge_numbers.toml": b"[train]\nepochs = 18446744073709551615\nbatch_size = 99999999999999\nlr = 1e999\n",
        "config/nested_arrays.toml": b"[loss]\nclass_weights = " + b"[" * 5000 + b"]" * 5000 + b"\n",
        "config/zero_sizes.toml": b"[train]\nepochs = 0\nbatch_size = 0\n[data]\nresize = 0\ncrop = 0\n",
        "config/nan_lr.toml": b"[train]\nlr = nan\nbackbone_lr_mult = -inf\n",
        # Requests: lengths past memory, a chunk size past memory, 10,000 headers, a token
        # of the wrong length, a multipart form without its boundary.
        "request/content_length_huge.http": b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token-0123456789\r\nContent-Length: 99999999999999\r\n\r\nabc",
        "request/chunk_huge.http": b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token-0123456789\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        "request/many_headers.http": b"GET /v1/model HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(10000)) + b"\r\n",
        "request/token_prefix.http": b"GET /v1/model HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz\r\n\r\n",
        "request/multipart_no_boundary.http": b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token-0123456789\r\nContent-Type: multipart/form-data\r\nContent-Length: 0\r\n\r\n",
        "request/top_k_overflow.http": b"POST /v1/predict?top_k=99999999999999999999999 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token-0123456789\r\nContent-Length: 0\r\n\r\n",
        "request/dotdot_path.http": b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    }
    for name, data in files.items():
        path = os.path.join(out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    print(f"{len(files)} hostile files in {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fuzz/hostile")
