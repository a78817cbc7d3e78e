#!/usr/bin/env python3
"""Write the fuzz targets' seed corpora into fuzz/seeds/<target>/: small files made here
(never WIDER FACE data). Needs Pillow, NumPy and SciPy (`pip install pillow numpy scipy`).

The PyTorch seeds are the synthetic checkpoints of crates/retinaface/tests/torch_weights.rs
(`small_checkpoint`), and the checkpoint seed is written by `cargo run -p retinaface-fuzz
--example checkpoint_seed`; both are committed as they are.
"""
import base64, io, json, os, struct, sys
import numpy as np
from PIL import Image, ImageCms
import scipy.io

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def images():
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), "RGB")
    rgba = Image.fromarray(rng.integers(0, 255, (16, 16, 4), dtype=np.uint8), "RGBA")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

    def enc(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()

    put("image", "rgb.jpg", enc(rgb, "JPEG", quality=80))
    put("image", "progressive.jpg", enc(rgb, "JPEG", quality=60, progressive=True))
    put("image", "gray.jpg", enc(rgb.convert("L"), "JPEG"))
    put("image", "cmyk.jpg", enc(rgb.convert("CMYK"), "JPEG"))
    put("image", "icc.jpg", enc(rgb, "JPEG", icc_profile=srgb))
    exif = Image.Exif()
    exif[0x0112] = 6
    put("image", "rotated.jpg", enc(rgb, "JPEG", exif=exif.tobytes()))
    put("image", "rgb.png", enc(rgb, "PNG"))
    put("image", "rgba.png", enc(rgba, "PNG"))
    put("image", "palette.png", enc(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG"))
    put("image", "gray16.png", enc(Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16)), "PNG"))
    put("image", "optimized.png", enc(rgb, "PNG", optimize=True))
    put("image", "lossy.webp", enc(rgb, "WEBP", quality=70))
    put("image", "lossless.webp", enc(rgba, "WEBP", lossless=True))
    put("image", "rgb.bmp", enc(rgb, "BMP"))
    put("image", "palette.bmp", enc(rgb.convert("P"), "BMP"))
    put("image", "rgb.tif", enc(rgb, "TIFF"))
    put("image", "lzw.tif", enc(rgba, "TIFF", compression="tiff_lzw"))


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def onnx():
    """A ModelProto with a Conv node and its weight and bias initializers (raw and float_data)."""
    def tensor(name, dims, values, raw):
        t = b"".join(field(1, 0, d) for d in dims) + field(2, 0, 1)
        if raw:
            t += field(9, 2, struct.pack(f"<{len(values)}f", *values))
        else:
            t += field(4, 2, struct.pack(f"<{len(values)}f", *values))
        return t + field(8, 2, name.encode())

    node = (field(1, 2, b"input") + field(1, 2, b"w") + field(1, 2, b"b") + field(2, 2, b"out")
            + field(4, 2, b"Conv"))
    graph = (field(1, 2, node) + field(2, 2, b"g")
             + field(5, 2, tensor("w", [2, 3, 1, 1], [0.5] * 6, True))
             + field(5, 2, tensor("b", [2], [0.1, -0.1], False)))
    put("onnx", "conv.onnx", field(1, 0, 7) + field(7, 2, graph))


def safetensors():
    config = {"backbone": "mobilenet0.25", "fpn_channels": 64,
              "anchors": {"steps": [8, 16, 32], "sizes": [[16, 32], [64, 128], [256, 512]]},
              "variances": [0.1, 0.2], "mean_bgr": [104.0, 117.0, 123.0],
              "deformable": False, "shared_heads": False}
    for name, meta in [("plain.safetensors", None), ("config.safetensors", {"retinaface.config": json.dumps(config)})]:
        header = {"body.stage1.0.0.weight": {"dtype": "F32", "shape": [8, 3, 3, 3], "data_offsets": [0, 864]},
                  "class.bias": {"dtype": "F16", "shape": [2], "data_offsets": [864, 868]}}
        if meta:
            header["__metadata__"] = meta
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        put("safetensors", name, struct.pack("<Q", len(h)) + h + bytes(868))


def mat():
    b = io.BytesIO()
    events = np.empty((2, 1), dtype=object)
    events[0, 0], events[1, 0] = "0--Example", "1--Other"
    files = np.empty((2, 1), dtype=object)
    for i in range(2):
        inner = np.empty((1, 1), dtype=object)
        inner[0, 0] = f"{i}_example_{i}"
        files[i, 0] = inner
    boxes = np.empty((2, 1), dtype=object)
    for i in range(2):
        inner = np.empty((1, 1), dtype=object)
        inner[0, 0] = np.array([[10.0, 20.0, 30.0, 40.0]])
        boxes[i, 0] = inner
    scipy.io.savemat(b, {"event_list": events, "file_list": files, "face_bbx_list": boxes})
    put("mat", "gt.mat", b.getvalue())
    b = io.BytesIO()
    scipy.io.savemat(b, {"x": np.arange(6.0).reshape(2, 3), "s": "text"}, do_compression=True)
    put("mat", "compressed.mat", b.getvalue())


def texts():
    put("wider_predictions", "two.txt", "0_example_1\n2\n10 20 30 40 0.9\n5.5 6 7.25 8 0.5\n")
    put("wider_predictions", "none.txt", "0_example_2\n0\n")
    put("wider_ground_truth", "gt.txt",
        "0--Example/0_example_1.jpg\n2\n10 20 30 40 0 0 0 0 0 0 \n1 2 3 4 1 1 0 0 1 0 \n"
        "0--Example/0_example_2.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n")
    put("labels", "label.txt",
        "# 0--Example/0_example_1.jpg\n"
        "10 20 30 40 15.5 30.1 0.0 30.2 30.0 0.0 22.0 38.0 0.0 17.0 45.0 0.0 29.0 45.0 0.0 0.9\n"
        "50 60 10 12 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1\n"
        "# 0--Example/0_example_2.jpg\n")


def configs():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in sorted(os.listdir(os.path.join(repo, "configs"))):
        with open(os.path.join(repo, "configs", name), "rb") as f:
            put("train_config", name, f.read())


def requests():
    """The service's requests: form byte, query length, query, body (fuzz_targets/request.rs)."""
    b = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 100, 50)).save(b, "PNG")
    tiny = b.getvalue()
    b64 = base64.b64encode(tiny).decode()

    def req(name, form, query, body):
        q = query.encode()
        put("request", name, bytes([form, len(q)]) + q + body)

    req("raw", 0, "threshold=0.3&limit=2&landmarks=false", tiny)
    req("json", 2, "tta=true", json.dumps({"image": b64, "nms": 0.3, "mode": "pixelate"}).encode())
    req("json_batch", 2, "", json.dumps({"images": [b64, "data:image/png;base64,AAAA", 3]}).encode())
    part = (b'--XB\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + tiny +
            b'\r\n--XB\r\nContent-Disposition: form-data; name="size"\r\n\r\n112\r\n--XB--\r\n')
    req("multipart", 1, "max_size=640", part)


if __name__ == "__main__":
    images(); onnx(); safetensors(); mat(); texts(); configs(); requests()
    print("seeds written under", ROOT, file=sys.stderr)
