//! PyTorch checkpoint reading: the two real MobileNet-0.25 files in shared/, synthetic
//! checkpoints written here (ResNet-50 layout, odd dtypes and strides), and damaged input.

use std::collections::HashMap;
use std::io::{Cursor, Write};
use std::path::Path;

use retinaface::weights::torch::read;
use retinaface::weights::{NamedTensors, WeightsError};

/// shared/ lies beside the checkout (`<repo>/../shared`), on developers' machines and CI.
const MODELS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/models/retinaface"
);
const LEGACY_FILE: &str = "mobilenet0.25_biubug6_layout_legacy.pth";
const ZIP_FILE: &str = "mobilenet0.25_biubug6_layout_zip.pth";

fn real_file(name: &str) -> Vec<u8> {
    let path = Path::new(MODELS).join(name);
    // Fail rather than skip: a missing file would otherwise pass unnoticed.
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Real files.

/// (name, shape, [first, middle (index numel/2), last] value, sum of all values in order).
type Reference = (&'static str, &'static [usize], [f64; 3], f64);

// Obtained independently with Python 3.11 (no torch): `pickle.Unpickler` with a
// `find_class`/`persistent_load` that record `_rebuild_tensor_v2` arguments, the storage's
// raw bytes located by hand (zip: `archive/data/<key>`; legacy: walking the key list's
// u64-count-prefixed blocks), values decoded with `struct.unpack('<f')`, summed with `sum()`.
const LEGACY_REFERENCE: &[Reference] = &[
    (
        "body.stage1.0.0.weight",
        &[8, 3, 3, 3],
        [
            0.09556027501821518,
            -0.03913458436727524,
            0.16150620579719543,
        ],
        8.579861370817525,
    ),
    (
        "body.stage1.0.1.running_var",
        &[8],
        [23911.021484375, 74310.484375, 630.161376953125],
        364665.8625488281,
    ),
    (
        "ClassHead.0.conv1x1.weight",
        &[4, 64, 1, 1],
        [0.2509981691837311, 0.1280963271856308, -0.26505136489868164],
        -0.14428926121036056,
    ),
    (
        "fpn.merge2.0.weight",
        &[64, 64, 3, 3],
        [
            -0.014637612737715244,
            -0.030166059732437134,
            -0.030130721628665924,
        ],
        -73.12412975156496,
    ),
    (
        "LandmarkHead.2.conv1x1.bias",
        &[20],
        [
            -0.15997691452503204,
            -0.0626666471362114,
            0.19183559715747833,
        ],
        0.5610488499514759,
    ),
];

// Same method; the zip file holds different weights from the legacy one.
const ZIP_REFERENCE: &[Reference] = &[
    (
        "body.stage1.0.0.weight",
        &[8, 3, 3, 3],
        [
            0.002153528155758977,
            0.002676955424249172,
            0.09296160191297531,
        ],
        6.754387719236547,
    ),
    (
        "body.stage1.0.1.running_var",
        &[8],
        [8698.6318359375, 50892.625, 1124.08349609375],
        252674.03076171875,
    ),
    (
        "ClassHead.0.conv1x1.weight",
        &[4, 64, 1, 1],
        [
            0.2047043740749359,
            0.040619391947984695,
            0.036584287881851196,
        ],
        -0.6466979765100405,
    ),
    (
        "fpn.merge2.0.weight",
        &[64, 64, 3, 3],
        [
            0.008845128118991852,
            0.021925531327724457,
            0.012181703001260757,
        ],
        -77.67212459572238,
    ),
    (
        "LandmarkHead.2.conv1x1.bias",
        &[20],
        [
            -0.14002586901187897,
            -0.04549359530210495,
            0.22860153019428253,
        ],
        0.9007460521534085,
    ),
];

fn check_mobilenet(t: &NamedTensors, reference: &[Reference]) {
    // 300 entries, of which 47 are BatchNorm `num_batches_tracked` int64 scalars.
    assert_eq!(t.len(), 253);
    let count = |p: &str| t.keys().filter(|k| k.starts_with(p)).count();
    assert_eq!(
        (
            count("body."),
            count("fpn."),
            count("ssh"),
            count("ClassHead."),
            count("BboxHead."),
            count("LandmarkHead.")
        ),
        (135, 25, 75, 6, 6, 6)
    );
    assert!(t.keys().all(|k| !k.starts_with("module.")));
    assert!(t.keys().all(|k| !k.ends_with("num_batches_tracked")));
    for (k, v) in t {
        assert_eq!(v.shape.iter().product::<usize>(), v.data.len(), "{k}");
        assert!(v.data.iter().all(|x| x.is_finite()), "{k}");
    }
    assert_eq!(t["ClassHead.0.conv1x1.bias"].shape, [4]);
    assert_eq!(t["BboxHead.1.conv1x1.weight"].shape, [8, 64, 1, 1]);
    assert_eq!(t["LandmarkHead.2.conv1x1.weight"].shape, [20, 64, 1, 1]);
    assert_eq!(t["body.stage1.1.0.weight"].shape, [8, 1, 3, 3]); // depthwise
    assert_eq!(t["fpn.output3.0.weight"].shape, [64, 256, 1, 1]);
    assert_eq!(t["ssh3.conv7x7_3.0.weight"].shape, [16, 16, 3, 3]);
    for &(name, shape, [first, middle, last], sum) in reference {
        let v = &t[name];
        assert_eq!(v.shape, shape, "{name}");
        let n = v.data.len();
        assert_eq!(f64::from(v.data[0]), first, "{name}");
        assert_eq!(f64::from(v.data[n / 2]), middle, "{name}");
        assert_eq!(f64::from(v.data[n - 1]), last, "{name}");
        let s: f64 = v.data.iter().map(|&x| f64::from(x)).sum();
        assert!(
            (s - sum).abs() <= 1e-9 * sum.abs().max(1.0),
            "{name}: sum {s} != {sum}"
        );
    }
}

#[test]
fn real_legacy_file_loads() {
    let bytes = real_file(LEGACY_FILE);
    check_mobilenet(&read(&bytes).expect("legacy file"), LEGACY_REFERENCE);
}

#[test]
fn real_zip_file_loads() {
    let bytes = real_file(ZIP_FILE);
    check_mobilenet(&read(&bytes).expect("zip file"), ZIP_REFERENCE);
}

#[test]
fn real_files_have_the_same_names_and_shapes() {
    let (a, b) = (real_file(LEGACY_FILE), real_file(ZIP_FILE));
    let (a, b) = (read(&a).unwrap(), read(&b).unwrap());
    let shapes = |t: &NamedTensors| {
        t.iter()
            .map(|(k, v)| (k.clone(), v.shape.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(shapes(&a), shapes(&b));
}

#[test]
fn truncated_real_files_are_refused() {
    for name in [LEGACY_FILE, ZIP_FILE] {
        let bytes = real_file(name);
        // Cuts inside the pickle, inside the storages, and just short of the end.
        for len in [
            1,
            10,
            100,
            1000,
            20_000,
            bytes.len() / 2,
            bytes.len() - 1000,
            bytes.len() - 1,
        ] {
            let r = read(&bytes[..len]);
            assert!(r.is_err(), "{name} cut at {len} bytes was accepted");
        }
    }
}

// ---------------------------------------------------------------------------------------
// A tiny pickle writer, enough for torch.save's output.

#[derive(Default)]
struct Pickler {
    out: Vec<u8>,
    /// Memo slots of globals already written, to exercise BINGET like torch's files.
    globals: HashMap<String, u32>,
    next_memo: u32,
    /// Protocol 4 (STACK_GLOBAL, SHORT_BINUNICODE, MEMOIZE, FRAME) instead of 2.
    proto4: bool,
}

impl Pickler {
    fn new(proto4: bool) -> Self {
        let mut p = Pickler {
            proto4,
            ..Default::default()
        };
        p.out.extend([0x80, if proto4 { 4 } else { 2 }]);
        if proto4 {
            // One frame covering everything is legal; the length is not checked by readers
            // that ignore framing, but write it honestly anyway in `finish`.
            p.out.push(0x95);
            p.out.extend([0u8; 8]);
        }
        p
    }

    fn op(&mut self, op: u8) -> &mut Self {
        self.out.push(op);
        self
    }

    fn put(&mut self) -> u32 {
        let slot = self.next_memo;
        self.next_memo += 1;
        if self.proto4 {
            self.out.push(0x94);
        } else if slot < 256 {
            self.out.extend([b'q', slot as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend(slot.to_le_bytes());
        }
        slot
    }

    fn get(&mut self, slot: u32) {
        if slot < 256 {
            self.out.extend([b'h', slot as u8]);
        } else {
            self.out.push(b'j');
            self.out.extend(slot.to_le_bytes());
        }
    }

    fn str(&mut self, s: &str) -> &mut Self {
        if self.proto4 && s.len() < 256 {
            self.out.extend([0x8c, s.len() as u8]);
        } else {
            self.out.push(b'X');
            self.out.extend((s.len() as u32).to_le_bytes());
        }
        self.out.extend(s.as_bytes());
        self
    }

    fn int(&mut self, v: i64) -> &mut Self {
        match v {
            0..=255 => self.out.extend([b'K', v as u8]),
            256..=65535 => {
                self.out.push(b'M');
                self.out.extend((v as u16).to_le_bytes());
            }
            _ if i32::try_from(v).is_ok() => {
                self.out.push(b'J');
                self.out.extend((v as i32).to_le_bytes());
            }
            _ => {
                self.out.extend([0x8a, 8]);
                self.out.extend(v.to_le_bytes());
            }
        }
        self
    }

    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        let key = format!("{module}.{name}");
        if let Some(&slot) = self.globals.get(&key) {
            self.get(slot);
            return self;
        }
        if self.proto4 {
            self.str(module).str(name).op(0x93);
        } else {
            self.out.push(b'c');
            self.out.extend(format!("{module}\n{name}\n").as_bytes());
        }
        let slot = self.put();
        self.globals.insert(key, slot);
        self
    }

    fn usize_tuple(&mut self, items: &[usize]) -> &mut Self {
        match items.len() {
            0 => self.op(b')'),
            1..=3 => {
                for &i in items {
                    self.int(i as i64);
                }
                self.op(0x84 + items.len() as u8)
            }
            _ => {
                self.op(b'(');
                for &i in items {
                    self.int(i as i64);
                }
                self.op(b't')
            }
        }
    }

    /// `collections.OrderedDict()`, as torch writes it (REDUCE of an empty tuple).
    fn ordered_dict(&mut self) -> &mut Self {
        self.global("collections", "OrderedDict").op(b')').op(b'R');
        self.put();
        self
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    fn tensor(
        &mut self,
        t: &TensorSpec,
        storage: &StorageSpec,
        numel: usize,
        view: Option<(usize, usize)>,
        legacy: bool,
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b'(');
        self.op(b'(')
            .str("storage")
            .global("torch", storage.data.class_name());
        self.str(&storage.key).str("cpu").int(numel as i64);
        match view {
            // Legacy storage views: (view_key, offset, size) into the root storage.
            Some((offset, len)) if legacy => {
                let key = format!("{}-view", storage.key);
                self.str(&key).int(offset as i64).int(len as i64).op(0x87);
            }
            _ if legacy => {
                self.op(b'N');
            }
            _ => {}
        }
        self.op(b't').op(b'Q');
        // The zip format has no storage views: the view's offset joins the tensor's.
        let offset = t.offset + if legacy { 0 } else { view.map_or(0, |v| v.0) };
        self.int(offset as i64)
            .usize_tuple(&t.size)
            .usize_tuple(&t.stride);
        self.op(0x89).ordered_dict().op(b't').op(b'R');
        self.put();
        self
    }

    /// The state dict as an OrderedDict filled by SETITEMS in batches of 1000, like pickle.
    fn state_dict(&mut self, ck: &Checkpoint, legacy: bool) -> &mut Self {
        self.ordered_dict();
        for chunk in ck.tensors.chunks(1000) {
            self.op(b'(');
            for t in chunk {
                self.str(&t.name);
                let s = &ck.storages[&t.storage];
                let numel = ck.declared.get(&s.key).copied().unwrap_or(s.data.len());
                let view = ck.views.get(&t.name).copied();
                self.tensor(t, s, numel, view, legacy);
            }
            self.op(b'u');
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.push(b'.');
        if self.proto4 {
            let len = (self.out.len() - 11) as u64;
            self.out[3..11].copy_from_slice(&len.to_le_bytes());
        }
        self.out
    }
}

// ---------------------------------------------------------------------------------------
// Synthetic checkpoints.

#[derive(Clone, Debug)]
enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<u16>),
    Bf16(Vec<u16>),
    I64(Vec<i64>),
    /// Complex float pairs: a type the reader must refuse by name.
    C64(Vec<f32>),
}

impl Data {
    fn class_name(&self) -> &'static str {
        match self {
            Data::F32(_) => "FloatStorage",
            Data::F64(_) => "DoubleStorage",
            Data::F16(_) => "HalfStorage",
            Data::Bf16(_) => "BFloat16Storage",
            Data::I64(_) => "LongStorage",
            Data::C64(_) => "ComplexFloatStorage",
        }
    }

    fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::F16(v) | Data::Bf16(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::C64(v) => v.len() / 2,
        }
    }

    fn bytes(&self, big_endian: bool) -> Vec<u8> {
        fn enc<const N: usize>(out: &mut Vec<u8>, le: [u8; N], big_endian: bool) {
            if big_endian {
                out.extend(le.iter().rev());
            } else {
                out.extend(le);
            }
        }
        let mut out = Vec::new();
        match self {
            Data::F32(v) | Data::C64(v) => v
                .iter()
                .for_each(|x| enc(&mut out, x.to_le_bytes(), big_endian)),
            Data::F64(v) => v
                .iter()
                .for_each(|x| enc(&mut out, x.to_le_bytes(), big_endian)),
            Data::F16(v) | Data::Bf16(v) => v
                .iter()
                .for_each(|x| enc(&mut out, x.to_le_bytes(), big_endian)),
            Data::I64(v) => v
                .iter()
                .for_each(|x| enc(&mut out, x.to_le_bytes(), big_endian)),
        }
        out
    }
}

struct StorageSpec {
    key: String,
    data: Data,
}

struct TensorSpec {
    name: String,
    storage: String,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
    /// The row-major values the reader must return; `None` for skipped (integer) tensors.
    expect: Option<Vec<f32>>,
}

#[derive(Default)]
struct Checkpoint {
    tensors: Vec<TensorSpec>,
    storages: HashMap<String, StorageSpec>,
    /// Storage keys in the order their data is written (legacy: the key list).
    order: Vec<String>,
    /// Element counts to declare in the pickle instead of the real ones (damage tests).
    declared: HashMap<String, usize>,
    /// Legacy storage views by tensor name: (element offset, length) into its storage.
    views: HashMap<String, (usize, usize)>,
}

fn contiguous_strides(size: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * size[i + 1];
    }
    strides
}

/// Deterministic, distinct-looking values: element `i` of tensor number `t`.
fn value(t: usize, i: usize) -> f32 {
    let h = (i as u64)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(t as u64 * 40_503)
        % 20_011;
    h as f32 / 10_005.5 - 1.0
}

impl Checkpoint {
    fn add_storage(&mut self, key: &str, data: Data) {
        self.order.push(key.to_owned());
        self.storages.insert(
            key.to_owned(),
            StorageSpec {
                key: key.to_owned(),
                data,
            },
        );
    }

    /// A contiguous float32 tensor with its own storage.
    fn f32(&mut self, name: &str, size: &[usize]) {
        let n: usize = size.iter().product();
        let t = self.tensors.len();
        let data: Vec<f32> = (0..n).map(|i| value(t, i)).collect();
        let key = self.order.len().to_string();
        self.add_storage(&key, Data::F32(data.clone()));
        self.push(name, &key, 0, size, &contiguous_strides(size), Some(data));
    }

    /// An int64 scalar such as `num_batches_tracked`, which the reader skips.
    fn i64_scalar(&mut self, name: &str, v: i64) {
        let key = self.order.len().to_string();
        self.add_storage(&key, Data::I64(vec![v]));
        self.push(name, &key, 0, &[], &[], None);
    }

    fn push(
        &mut self,
        name: &str,
        storage: &str,
        offset: usize,
        size: &[usize],
        stride: &[usize],
        expect: Option<Vec<f32>>,
    ) {
        self.tensors.push(TensorSpec {
            name: name.to_owned(),
            storage: storage.to_owned(),
            offset,
            size: size.to_vec(),
            stride: stride.to_vec(),
            expect,
        });
    }

    fn conv(&mut self, name: &str, out: usize, inp: usize, k: usize) {
        self.f32(&format!("{name}.weight"), &[out, inp, k, k]);
    }

    fn bn(&mut self, name: &str, c: usize) {
        for p in ["weight", "bias", "running_mean", "running_var"] {
            self.f32(&format!("{name}.{p}"), &[c]);
        }
        let t = self.tensors.len() as i64;
        self.i64_scalar(&format!("{name}.num_batches_tracked"), 1000 + t);
    }

    /// `expected` as the reader should return it: `module.` stripped, integers gone.
    fn expected(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut v: Vec<_> = self
            .tensors
            .iter()
            .filter_map(|t| {
                let name = t.name.strip_prefix("module.").unwrap_or(&t.name).to_owned();
                Some((name, t.size.clone(), t.expect.clone()?))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn zip(
        &self,
        prefix: &str,
        wrap: bool,
        proto4: bool,
        deflate: bool,
        big_endian: bool,
    ) -> Vec<u8> {
        let mut p = Pickler::new(proto4);
        if wrap {
            // {"epoch": 7, "state_dict": OrderedDict(...)} as training scripts save.
            p.op(b'}');
            p.put();
            p.op(b'(').str("epoch").int(7).str("state_dict");
            p.state_dict(self, false).op(b'u');
        } else {
            p.state_dict(self, false);
        }
        let pkl = p.finish();

        let method = if deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
        z.start_file(format!("{prefix}/data.pkl"), opts).unwrap();
        z.write_all(&pkl).unwrap();
        z.start_file(format!("{prefix}/byteorder"), opts).unwrap();
        z.write_all(if big_endian { b"big" } else { b"little" })
            .unwrap();
        for key in &self.order {
            z.start_file(format!("{prefix}/data/{key}"), opts).unwrap();
            z.write_all(&self.storages[key].data.bytes(big_endian))
                .unwrap();
        }
        z.start_file(format!("{prefix}/version"), opts).unwrap();
        z.write_all(b"3\n").unwrap();
        z.finish().unwrap().into_inner()
    }

    fn legacy(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Magic number 0x1950a86a20f9469cfc6c as LONG1.
        out.extend([
            0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
        ]);
        out.extend([0x80, 2, b'M', 0xe9, 0x03, b'.']); // protocol version 1001
        let mut p = Pickler::new(false);
        p.op(b'}');
        p.put();
        p.op(b'(')
            .str("protocol_version")
            .int(1001)
            .str("little_endian")
            .op(0x88);
        p.str("type_sizes").op(b'}');
        p.put();
        p.op(b'(')
            .str("short")
            .int(2)
            .str("int")
            .int(4)
            .str("long")
            .int(4)
            .op(b'u')
            .op(b'u');
        out.extend(p.finish());
        let mut p = Pickler::new(false);
        p.state_dict(self, true);
        out.extend(p.finish());
        let mut p = Pickler::new(false);
        p.op(b']');
        p.put();
        p.op(b'(');
        for key in &self.order {
            p.str(key);
        }
        p.op(b'e');
        out.extend(p.finish());
        for key in &self.order {
            let data = &self.storages[key].data;
            out.extend((data.len() as u64).to_le_bytes());
            out.extend(data.bytes(false));
        }
        out
    }
}

fn check_round_trip(ck: &Checkpoint, got: &NamedTensors) {
    let want = ck.expected();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.iter().map(|w| &w.0).collect::<Vec<_>>(),
        "names"
    );
    for (name, shape, data) in &want {
        let t = &got[name];
        assert_eq!(&t.shape, shape, "{name}");
        // Bit-exact: the reader must only reinterpret, never round.
        let same = t.data.len() == data.len()
            && t.data
                .iter()
                .zip(data)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "values of {name} differ");
    }
}

/// The port's RetinaFace with a torchvision ResNet-50 body (IntermediateLayerGetter over
/// layer2..4, so no `fc`), FPN over 512/1024/2048 channels, three SSH blocks and three heads
/// of two anchors, all 256 channels wide; saved from DataParallel, hence `module.`.
fn resnet50_retinaface() -> Checkpoint {
    let mut ck = Checkpoint::default();
    ck.conv("module.body.conv1", 64, 3, 7);
    ck.bn("module.body.bn1", 64);
    let mut inplanes = 64;
    for (layer, (blocks, width)) in [(3, 64), (4, 128), (6, 256), (3, 512)]
        .into_iter()
        .enumerate()
    {
        for b in 0..blocks {
            let p = format!("module.body.layer{}.{b}", layer + 1);
            let inp = if b == 0 { inplanes } else { width * 4 };
            // Bottleneck v1.5: the stride sits on conv2, which changes no shape.
            ck.conv(&format!("{p}.conv1"), width, inp, 1);
            ck.bn(&format!("{p}.bn1"), width);
            ck.conv(&format!("{p}.conv2"), width, width, 3);
            ck.bn(&format!("{p}.bn2"), width);
            ck.conv(&format!("{p}.conv3"), width * 4, width, 1);
            ck.bn(&format!("{p}.bn3"), width * 4);
            if b == 0 {
                ck.conv(&format!("{p}.downsample.0"), width * 4, inplanes, 1);
                ck.bn(&format!("{p}.downsample.1"), width * 4);
            }
        }
        inplanes = width * 4;
    }
    for (i, c) in [512, 1024, 2048].into_iter().enumerate() {
        ck.conv(&format!("module.fpn.output{}.0", i + 1), 256, c, 1);
        ck.bn(&format!("module.fpn.output{}.1", i + 1), 256);
    }
    for m in ["merge1", "merge2"] {
        ck.conv(&format!("module.fpn.{m}.0"), 256, 256, 3);
        ck.bn(&format!("module.fpn.{m}.1"), 256);
    }
    for s in 1..=3 {
        let p = format!("module.ssh{s}");
        for (name, out, inp) in [
            ("conv3X3", 128, 256),
            ("conv5X5_1", 64, 256),
            ("conv5X5_2", 64, 64),
            ("conv7X7_2", 64, 64),
            ("conv7x7_3", 64, 64),
        ] {
            ck.conv(&format!("{p}.{name}.0"), out, inp, 3);
            ck.bn(&format!("{p}.{name}.1"), out);
        }
    }
    for (head, out) in [("ClassHead", 4), ("BboxHead", 8), ("LandmarkHead", 20)] {
        for i in 0..3 {
            ck.f32(
                &format!("module.{head}.{i}.conv1x1.weight"),
                &[out, 256, 1, 1],
            );
            ck.f32(&format!("module.{head}.{i}.conv1x1.bias"), &[out]);
        }
    }
    ck
}

/// Make tensor `name` non-contiguous: its storage holds the transpose of the first two
/// dimensions, and the stride says so, as `w.t()` or `permute` leave it.
fn transpose_storage(ck: &mut Checkpoint, name: &str) {
    let t = ck.tensors.iter_mut().find(|t| t.name == name).unwrap();
    let (o, i) = (t.size[0], t.size[1]);
    assert!(t.size[2..].iter().all(|&d| d == 1));
    let logical = t.expect.clone().unwrap();
    let mut stored = vec![0f32; o * i];
    for r in 0..o {
        for c in 0..i {
            stored[c * o + r] = logical[r * i + c];
        }
    }
    t.stride = vec![1, o, 1, 1];
    ck.storages.get_mut(&t.storage).unwrap().data = Data::F32(stored);
}

/// Store tensor `name` as float64 (values chosen exactly representable in f32).
fn as_f64(ck: &mut Checkpoint, name: &str) {
    let t = ck.tensors.iter().find(|t| t.name == name).unwrap();
    let data = t
        .expect
        .clone()
        .unwrap()
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    ck.storages.get_mut(&t.storage).unwrap().data = Data::F64(data);
}

#[test]
fn synthetic_resnet50_zip_round_trips() {
    let mut ck = resnet50_retinaface();
    let floats = ck.tensors.iter().filter(|t| t.expect.is_some()).count();
    let body = ck
        .tensors
        .iter()
        .filter(|t| t.expect.is_some() && t.name.starts_with("module.body."))
        .count();
    // 265 float tensors in the body (conv1/bn1, 16 bottlenecks, 4 downsamples); one
    // num_batches_tracked per BatchNorm: 53 in the body, 5 in the FPN, 15 in the SSHs.
    assert_eq!(body, 265);
    assert_eq!(ck.tensors.len() - floats, 53 + 5 + 15);
    transpose_storage(&mut ck, "module.fpn.output3.0.weight");
    transpose_storage(&mut ck, "module.body.layer3.0.downsample.0.weight");
    as_f64(&mut ck, "module.body.conv1.weight");
    as_f64(&mut ck, "module.body.layer4.2.bn3.running_var");

    let bytes = ck.zip("resnet50_final", false, false, false, false);
    let got = read(&bytes).expect("synthetic ResNet-50 checkpoint");
    check_round_trip(&ck, &got);
    assert_eq!(got.len(), floats);
    assert_eq!(got["body.conv1.weight"].shape, [64, 3, 7, 7]);
    assert_eq!(got["body.layer2.0.conv2.weight"].shape, [128, 128, 3, 3]);
    assert_eq!(
        got["body.layer4.0.downsample.0.weight"].shape,
        [2048, 1024, 1, 1]
    );
    assert_eq!(got["body.layer4.2.bn3.running_var"].shape, [2048]);
    assert_eq!(got["fpn.output3.0.weight"].shape, [256, 2048, 1, 1]);
    assert_eq!(got["LandmarkHead.2.conv1x1.weight"].shape, [20, 256, 1, 1]);
    let params: usize = got
        .iter()
        .filter(|(k, _)| k.starts_with("body."))
        .map(|(_, t)| t.data.len())
        .sum();
    // torchvision's resnet50 has 25,557,032 parameters; minus fc (2,049,000), plus the
    // BatchNorm running statistics (2 × 26,560).
    assert_eq!(params, 25_557_032 - 2_049_000 + 2 * 26_560);
}

/// A small dict with every storage feature: shared storages at offsets, permuted strides,
/// stride-0 broadcast, size-0 and scalar tensors, float16/bfloat16/float64, int64 skipped.
/// `real_shapes` adds ResNet-50's `layer1.0` convolutions (150 k values); without them the
/// file is a few kilobytes, small enough to damage at every byte.
fn small_checkpoint(real_shapes: bool) -> Checkpoint {
    let mut ck = Checkpoint::default();
    let (c, k) = if real_shapes { (64, 3) } else { (4, 1) };
    ck.conv("module.body.layer1.0.conv1", c, c, 1);
    ck.bn("module.body.layer1.0.bn1", c);
    ck.conv("module.body.layer1.0.conv2", c, c, k);
    ck.f32("module.ClassHead.0.conv1x1.bias", &[4]);
    as_f64(&mut ck, "module.body.layer1.0.bn1.running_mean");

    // Two tensors sharing one storage, the second at an offset (as a split or a view
    // saved together leaves them).
    let shared: Vec<f32> = (0..100).map(|i| value(99, i)).collect();
    ck.add_storage("shared", Data::F32(shared.clone()));
    ck.push(
        "head.weight",
        "shared",
        0,
        &[4, 16, 1, 1],
        &[16, 1, 1, 1],
        Some(shared[..64].to_vec()),
    );
    ck.push(
        "head.bias",
        "shared",
        64,
        &[4],
        &[1],
        Some(shared[64..68].to_vec()),
    );
    // A permuted 3-d view: logical [2,3,4] over storage laid out as [4,3,2].
    let base: Vec<f32> = (0..24).map(|i| value(98, i)).collect();
    let mut logical = Vec::new();
    for a in 0..2 {
        for b in 0..3 {
            for c in 0..4 {
                logical.push(base[c * 6 + b * 2 + a]);
            }
        }
    }
    ck.add_storage("perm", Data::F32(base));
    ck.push("permuted", "perm", 0, &[2, 3, 4], &[1, 2, 6], Some(logical));
    // A strided slice with an offset: every third element of the storage from element 5.
    let long: Vec<f32> = (0..40).map(|i| value(97, i)).collect();
    let sliced: Vec<f32> = (0..10).map(|i| long[5 + 3 * i]).collect();
    ck.add_storage("long", Data::F32(long));
    ck.push("sliced", "long", 5, &[10], &[3], Some(sliced));
    // Broadcast: stride 0 repeats a row.
    ck.push(
        "broadcast",
        "long",
        1,
        &[3, 2],
        &[0, 1],
        Some([1, 2, 1, 2, 1, 2].map(|i| value(97, i)).to_vec()),
    );
    // A view of a view (legacy only): storage elements 10..30, tensor elements 2..7 of it.
    ck.push(
        "viewed",
        "long",
        2,
        &[5],
        &[1],
        Some((12..17).map(|i| value(97, i)).collect()),
    );
    ck.views.insert("viewed".into(), (10, 20));
    // Size-1 dimensions may carry any stride (torch leaves odd ones after slicing).
    let odd = Some(vec![value(97, 0), value(97, 5)]);
    ck.push("odd_stride", "long", 0, &[2, 1], &[5, 1 << 62], odd);
    // Scalar and empty tensors.
    ck.push("scalar", "long", 7, &[], &[], Some(vec![value(97, 7)]));
    ck.push("empty", "long", 0, &[0, 3], &[3, 1], Some(vec![]));
    // Half and bfloat16, with values whose f32 equivalents are known exactly.
    ck.add_storage(
        "half",
        Data::F16(vec![
            0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x3555, 0x7c00, 0x0400,
        ]),
    );
    ck.push(
        "half",
        "half",
        0,
        &[8],
        &[1],
        Some(vec![
            1.0,
            -2.0,
            65504.0,
            2f32.powi(-24),
            -0.0,
            0.333_251_95,
            f32::INFINITY,
            2f32.powi(-14),
        ]),
    );
    ck.add_storage("bf16", Data::Bf16(vec![0x3f80, 0xc049, 0x0000, 0x4780]));
    ck.push(
        "bf16",
        "bf16",
        0,
        &[2, 2],
        &[2, 1],
        Some(vec![1.0, -3.140_625, 0.0, 65536.0]),
    );
    // Storage keys written in another order than the tensors, as the real legacy file does.
    ck.order.reverse();
    ck
}

#[test]
fn synthetic_legacy_round_trips() {
    let ck = small_checkpoint(true);
    let got = read(&ck.legacy()).expect("synthetic legacy checkpoint");
    check_round_trip(&ck, &got);
    assert_eq!(got["half"].data[5], 0.333_251_95);
    assert!(got["half"].data[4].is_sign_negative());
    assert!(!got.contains_key("body.layer1.0.bn1.num_batches_tracked"));
    // The view must not be taken as the root storage.
    assert_eq!(got["viewed"].data[0], value(97, 12));
}

#[test]
fn synthetic_zip_variants_round_trip() {
    let ck = small_checkpoint(true);
    // Protocol 4 opcodes, a wrapping {"state_dict": …}, deflated members, another prefix.
    for (prefix, wrap, proto4, deflate, big_endian) in [
        ("archive", false, false, false, false),
        ("my_checkpoint", true, true, true, false),
        ("be", false, true, false, true),
    ] {
        let bytes = ck.zip(prefix, wrap, proto4, deflate, big_endian);
        let got = read(&bytes).unwrap_or_else(|e| panic!("{prefix}: {e}"));
        check_round_trip(&ck, &got);
    }
}

// ---------------------------------------------------------------------------------------
// Damaged and unsupported input.

#[test]
fn garbage_is_refused_without_panic() {
    assert!(read(&[]).is_err());
    assert!(read(b"PK\x03\x04").is_err());
    assert!(read(&[0x80, 0x02]).is_err());
    let mut state = 0x1234_5678_u64;
    for len in [1, 7, 64, 1000, 100_000] {
        for _ in 0..20 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (state >> 56) as u8
                })
                .collect();
            assert!(read(&bytes).is_err());
        }
    }
}

#[test]
fn every_truncation_and_byte_flip_of_a_small_file_is_handled() {
    let ck = small_checkpoint(false);
    let legacy = ck.legacy();
    for len in 0..legacy.len() {
        assert!(
            read(&legacy[..len]).is_err(),
            "legacy cut at {len} accepted"
        );
    }
    let zip = ck.zip("archive", false, false, false, false);
    for len in (0..zip.len()).step_by(7) {
        assert!(read(&zip[..len]).is_err(), "zip cut at {len} accepted");
    }
    // Flipped bytes may still parse (a changed value), but must never panic.
    let mut damaged = legacy.clone();
    for i in 0..legacy.len() {
        for x in [0x01, 0x80, 0xff] {
            damaged[i] = legacy[i] ^ x;
            let _ = read(&damaged);
        }
        damaged[i] = legacy[i];
    }
    // The zip's CRCs catch flips in the data the reader uses.
    let perm = ck.storages["perm"].data.bytes(false);
    let at = zip.windows(perm.len()).position(|w| w == perm).unwrap() + 13;
    let mut damaged = zip.clone();
    damaged[at] ^= 0x10;
    let msg = read(&damaged).unwrap_err().to_string();
    assert!(msg.contains("data/perm"), "{msg}");
    // Flips in headers must be errors or harmless.
    let mut damaged = zip.clone();
    for i in 0..zip.len() {
        damaged[i] = zip[i] ^ 0x5a;
        let _ = read(&damaged);
        damaged[i] = zip[i];
    }
}

#[test]
fn missing_storage_is_named() {
    let mut ck = small_checkpoint(false);
    ck.order.retain(|k| k != "perm");
    let err = read(&ck.zip("archive", false, false, false, false)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("archive/data/perm") && msg.contains("permuted"),
        "{msg}"
    );
    assert!(read(&ck.legacy()).is_err());
}

#[test]
fn views_outside_their_storage_are_refused() {
    let mut ck = small_checkpoint(false);
    ck.tensors
        .iter_mut()
        .find(|t| t.name == "sliced")
        .unwrap()
        .size = vec![20];
    for bytes in [ck.legacy(), ck.zip("archive", false, false, false, false)] {
        let msg = read(&bytes).unwrap_err().to_string();
        assert!(msg.contains("sliced"), "{msg}");
    }
    let mut ck = small_checkpoint(false);
    ck.tensors
        .iter_mut()
        .find(|t| t.name == "scalar")
        .unwrap()
        .offset = 40;
    assert!(read(&ck.zip("archive", false, false, false, false)).is_err());
    // Storage data shorter than the element count the pickle declares.
    let mut ck = small_checkpoint(false);
    ck.declared.insert("long".into(), 41);
    let msg = read(&ck.zip("archive", false, false, false, false))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("archive/data/long"), "{msg}");
    let msg = read(&ck.legacy()).unwrap_err().to_string();
    assert!(msg.contains("long"), "{msg}");
}

#[test]
fn unconvertible_dtype_is_named() {
    let mut ck = small_checkpoint(false);
    ck.add_storage("cplx", Data::C64(vec![1.0, 2.0, 3.0, 4.0]));
    ck.push("module.complex", "cplx", 0, &[2], &[1], None);
    for bytes in [ck.legacy(), ck.zip("archive", false, false, false, false)] {
        match read(&bytes) {
            Err(WeightsError::DType { name, dtype }) => {
                assert_eq!(name, "complex");
                assert!(dtype.contains("Complex"), "{dtype}");
            }
            other => panic!("expected a dtype error, got {other:?}"),
        }
    }
}

#[test]
fn non_checkpoints_are_refused() {
    // A valid pickle that is not a state dict.
    let mut p = Pickler::new(false);
    p.int(5);
    let pkl = p.finish();
    let opts = zip::write::SimpleFileOptions::default();
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(&pkl).unwrap();
    let bytes = z.finish().unwrap().into_inner();
    assert!(read(&bytes)
        .unwrap_err()
        .to_string()
        .contains("not a state dict"));
    // A zip without data.pkl.
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    z.start_file("readme.txt", opts).unwrap();
    z.write_all(b"hello").unwrap();
    assert!(read(&z.finish().unwrap().into_inner()).is_err());
    // A bare pickle (no legacy magic number).
    assert!(read(&pkl).is_err());
}
