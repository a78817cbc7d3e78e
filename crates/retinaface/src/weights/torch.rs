//! PyTorch checkpoints (legacy pickle and zip formats) in the port's state-dict layout.
//!
//! Both formats pickle the state dict with tensors as
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)`, the storage being a
//! persistent id `('storage', torch.FloatStorage, key, location, numel[, view])`. They differ
//! in where the storages' bytes are:
//!
//! * legacy (before torch 1.6): after the pickles, for each key of a pickled key list, a
//!   little-endian u64 element count then the little-endian elements;
//! * zip (torch 1.6+): one archive member `<prefix>/data/<key>` per storage, in the byte
//!   order `<prefix>/byteorder` names (little-endian when absent).
//!
//! Nothing is executed: [`super::pickle`] only builds the object graph, and this module
//! recognises the handful of torch constructors a state dict uses.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use super::pickle::{Id, Object, Pickle};
use super::{NamedTensors, Tensor, WeightsError};

const FORMAT: &str = "PyTorch";

/// `torch.save`'s legacy magic number, 0x1950a86a20f9469cfc6c, as pickled little-endian.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL: i64 = 1001;

/// Largest `data.pkl` we accept; a state dict's pickle is kilobytes to a few megabytes.
const MAX_PICKLE_BYTES: u64 = 1 << 30;

/// Tensors that alias their storage (stride 0) may be larger than it, but not without bound.
const MAX_EXPANDED_NUMEL: usize = 1 << 24;

/// Read a PyTorch checkpoint: a state dict of float tensors, `module.` prefixes stripped.
///
/// Accepts a bare state dict or a dict holding one under `state_dict`. Float32, float64,
/// float16 and bfloat16 tensors are returned as f32; integer and bool tensors (such as
/// BatchNorm's `num_batches_tracked`) and non-tensor entries are skipped.
pub fn read(bytes: &[u8]) -> Result<NamedTensors, WeightsError> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes)
    } else {
        read_legacy(bytes)
    }
}

fn corrupt(reason: impl Into<String>) -> WeightsError {
    WeightsError::corrupt(FORMAT, reason)
}

fn pickle_at(bytes: &[u8], what: &str) -> Result<(Pickle, usize), WeightsError> {
    Pickle::load(bytes).map_err(|e| corrupt(format!("{what}: {e}")))
}

// ---------------------------------------------------------------------------------------
// Storage and tensor descriptions, common to both formats.

/// The element types a storage can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DType {
    F32,
    F64,
    F16,
    BF16,
    /// Integer or bool: valid, but never a weight, so skipped.
    Skip(usize),
}

impl DType {
    fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::F16 | DType::BF16 => 2,
            DType::Skip(size) => size,
        }
    }

    /// From a typed storage class name (`FloatStorage`) or a dtype name (`float32`).
    fn from_name(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" | "float32" | "float" => DType::F32,
            "DoubleStorage" | "float64" | "double" => DType::F64,
            "HalfStorage" | "float16" | "half" => DType::F16,
            "BFloat16Storage" | "bfloat16" => DType::BF16,
            "LongStorage" | "int64" | "long" => DType::Skip(8),
            "IntStorage" | "int32" | "int" => DType::Skip(4),
            "ShortStorage" | "int16" | "short" => DType::Skip(2),
            "CharStorage" | "ByteStorage" | "BoolStorage" | "int8" | "uint8" | "bool" => {
                DType::Skip(1)
            }
            _ => return None,
        })
    }
}

/// A storage's description from its persistent id.
#[derive(Debug, Clone)]
struct StorageRef {
    key: String,
    /// `Err` names a type we cannot convert.
    dtype: Result<DType, String>,
    /// Elements the id declares.
    numel: usize,
    /// Legacy views: the storage is `numel` elements from `view_offset` of the root storage
    /// `key` (the root has `root_numel` elements).
    view_offset: usize,
    root_numel: usize,
}

/// A tensor's view of a storage.
#[derive(Debug, Clone)]
struct TensorRef {
    storage: StorageRef,
    /// Element offset within the storage.
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

fn to_usize(p: &Pickle, id: Id, what: &str) -> Result<usize, WeightsError> {
    p.as_int(id)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| corrupt(format!("{what} is not a non-negative integer")))
}

fn usize_tuple(p: &Pickle, id: Id, what: &str) -> Result<Vec<usize>, WeightsError> {
    let items = p
        .as_seq(id)
        .ok_or_else(|| corrupt(format!("{what} is not a tuple")))?;
    items.iter().map(|&i| to_usize(p, i, what)).collect()
}

/// Parse a persistent id `('storage', type, key, location, numel[, view_metadata])`.
fn storage_ref(p: &Pickle, pid: Id) -> Result<StorageRef, WeightsError> {
    let items = p
        .as_seq(pid)
        .ok_or_else(|| corrupt("persistent id is not a tuple"))?;
    let [tag, ty, key, _location, numel, rest @ ..] = items else {
        return Err(corrupt("persistent id has too few fields"));
    };
    if p.as_str(*tag) != Some("storage") {
        return Err(corrupt("persistent id is not a storage"));
    }
    let dtype = match p.as_global(*ty) {
        Some((module, name)) if module.starts_with("torch") => {
            DType::from_name(name).ok_or_else(|| name.to_owned())
        }
        Some((module, name)) => Err(format!("{module}.{name}")),
        None => return Err(corrupt("storage type is not a class")),
    };
    // Keys are strings in every torch version, but accept integers rather than refuse.
    let key = match p.get(*key) {
        Object::Str(s) => s.clone(),
        Object::Int(i) => i.to_string(),
        _ => return Err(corrupt("storage key is not a string")),
    };
    let numel = to_usize(p, *numel, "storage size")?;
    let mut storage = StorageRef {
        key,
        dtype,
        numel,
        view_offset: 0,
        root_numel: numel,
    };
    if let Some(&view) = rest.first() {
        if !matches!(p.get(view), Object::None) {
            // Legacy storage views: (view_key, offset, view_size) into the root storage.
            let v = p
                .as_seq(view)
                .ok_or_else(|| corrupt("storage view metadata is not a tuple"))?;
            let [_view_key, offset, size, ..] = v else {
                return Err(corrupt("storage view metadata has too few fields"));
            };
            storage.view_offset = to_usize(p, *offset, "storage view offset")?;
            storage.numel = to_usize(p, *size, "storage view size")?;
            let end = storage.view_offset.checked_add(storage.numel);
            if end.is_none_or(|end| end > storage.root_numel) {
                return Err(corrupt(format!(
                    "storage view of `{}` runs past its storage",
                    storage.key
                )));
            }
        }
    }
    Ok(storage)
}

/// What a state-dict value turned out to be.
enum Entry {
    Tensor(TensorRef),
    /// Not a tensor (e.g. a Python number in `_extra_state`): skipped.
    NotTensor,
}

/// Interpret a state-dict value.
fn tensor_entry(p: &Pickle, id: Id) -> Result<Entry, WeightsError> {
    let Object::Call { func, args, .. } = p.get(id) else {
        return Ok(Entry::NotTensor);
    };
    let Some((module, name)) = p.as_global(*func) else {
        return Ok(Entry::NotTensor);
    };
    rebuild(p, module, name, p.as_seq(*args).unwrap_or(&[]), 0)
}

/// Interpret the call `module.name(*args)`; `depth` bounds the wrappers (`Parameter`,
/// tensor subclasses) so a hostile file cannot recurse without end.
fn rebuild(
    p: &Pickle,
    module: &str,
    name: &str,
    args: &[Id],
    depth: u32,
) -> Result<Entry, WeightsError> {
    if depth > 4 {
        return Err(corrupt("tensor wrapped too deeply"));
    }
    match (module, name) {
        ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
            let [storage, offset, size, stride, rest @ ..] = args else {
                return Err(corrupt(format!("{name} has too few arguments")));
            };
            let Object::Persistent(pid) = p.get(*storage) else {
                return Err(corrupt("tensor storage is not a persistent id"));
            };
            let mut storage = storage_ref(p, *pid)?;
            if name == "_rebuild_tensor_v3" {
                // (…, requires_grad, backward_hooks, dtype, …): an untyped storage, sized in
                // bytes, whose element type is the dtype argument.
                let (_, dtype) = rest
                    .get(2)
                    .and_then(|&d| p.as_global(d))
                    .ok_or_else(|| corrupt("_rebuild_tensor_v3 without a dtype"))?;
                let elem = DType::from_name(dtype).ok_or_else(|| dtype.to_owned());
                if let Ok(e) = elem {
                    storage.numel /= e.size();
                    storage.root_numel /= e.size();
                    storage.view_offset /= e.size();
                }
                storage.dtype = elem;
            }
            Ok(Entry::Tensor(TensorRef {
                storage,
                offset: to_usize(p, *offset, "storage offset")?,
                size: usize_tuple(p, *size, "tensor size")?,
                stride: usize_tuple(p, *stride, "tensor stride")?,
            }))
        }
        // Parameter(data, requires_grad, hooks[, state]): data is the tensor.
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            let data = args
                .first()
                .ok_or_else(|| corrupt(format!("{name} has no data")))?;
            let Object::Call { func, args, .. } = p.get(*data) else {
                return Err(corrupt(format!("{name} data is not a tensor")));
            };
            let (m, n) = p
                .as_global(*func)
                .ok_or_else(|| corrupt(format!("{name} data is not a tensor")))?;
            rebuild(p, m, n, p.as_seq(*args).unwrap_or(&[]), depth + 1)
        }
        // Tensor subclasses: _rebuild_from_type_v2(func, type, args, state).
        ("torch._tensor", "_rebuild_from_type_v2") => {
            let [inner, _ty, inner_args, ..] = args else {
                return Err(corrupt("_rebuild_from_type_v2 has too few arguments"));
            };
            let (m, n) = p
                .as_global(*inner)
                .ok_or_else(|| corrupt("_rebuild_from_type_v2 without a function"))?;
            rebuild(p, m, n, p.as_seq(*inner_args).unwrap_or(&[]), depth + 1)
        }
        (m, n) if m.starts_with("torch") && n.starts_with("_rebuild") => Err(corrupt(format!(
            "unsupported tensor kind {m}.{n} (quantized, sparse and other special tensors are not read)"
        ))),
        _ => Ok(Entry::NotTensor),
    }
}

/// The `(name, tensor)` pairs of the checkpoint's state dict, names as stored.
fn state_dict(p: &Pickle) -> Result<Vec<(String, TensorRef)>, WeightsError> {
    let root = p.root();
    // Training checkpoints wrap the state dict: {"epoch": …, "state_dict": {…}, …}.
    let dict = match p.dict_get(root, "state_dict") {
        Some(sd) if matches!(p.get(sd), Object::Dict(_)) => sd,
        _ => root,
    };
    let Object::Dict(pairs) = p.get(dict) else {
        return Err(corrupt(format!(
            "checkpoint is not a state dict (its top object is {})",
            kind(p.get(dict))
        )));
    };
    let mut out = Vec::with_capacity(pairs.len());
    for &(k, v) in pairs {
        let Some(name) = p.as_str(k) else {
            return Err(corrupt("state dict key is not a string"));
        };
        if let Entry::Tensor(t) = tensor_entry(p, v)? {
            out.push((name.to_owned(), t));
        }
    }
    Ok(out)
}

fn kind(o: &Object) -> &'static str {
    match o {
        Object::None => "None",
        Object::Bool(_) => "a bool",
        Object::Int(_) | Object::BigInt(_) => "an integer",
        Object::Float(_) => "a float",
        Object::Str(_) => "a string",
        Object::Bytes(_) => "bytes",
        Object::Tuple(_) => "a tuple",
        Object::List(_) => "a list",
        Object::Dict(_) => "a dict",
        Object::Set(_) => "a set",
        Object::Global { .. } => "a class or function",
        Object::Call { .. } => "an object",
        Object::Persistent(_) => "a storage",
    }
}

/// Turn the state dict into named f32 tensors, fetching each storage's bytes (the whole
/// root storage, little- or big-endian) through `storage_bytes`.
fn collect<'s>(
    entries: Vec<(String, TensorRef)>,
    mut storage_bytes: impl FnMut(&str, &StorageRef, DType) -> Result<&'s [u8], WeightsError>,
    big_endian: bool,
) -> Result<NamedTensors, WeightsError> {
    let mut out = NamedTensors::new();
    for (stored_name, t) in entries {
        // DataParallel checkpoints prefix every name with `module.`.
        let name = stored_name
            .strip_prefix("module.")
            .unwrap_or(&stored_name)
            .to_owned();
        let dtype = match &t.storage.dtype {
            Ok(DType::Skip(_)) => continue,
            Ok(d) => *d,
            Err(dtype) => {
                return Err(WeightsError::DType {
                    name,
                    dtype: dtype.clone(),
                })
            }
        };
        let bytes = storage_bytes(&name, &t.storage, dtype)?;
        let tensor = materialise(&name, &t, dtype, bytes, big_endian)?;
        if out.insert(name.clone(), tensor).is_some() {
            return Err(corrupt(format!("tensor `{name}` appears twice")));
        }
    }
    Ok(out)
}

/// Copy a (possibly strided) view of a storage into a row-major tensor.
fn materialise(
    name: &str,
    t: &TensorRef,
    dtype: DType,
    bytes: &[u8],
    big_endian: bool,
) -> Result<Tensor, WeightsError> {
    let bad = |why: &str| corrupt(format!("tensor `{name}`: {why}"));
    if t.size.len() != t.stride.len() {
        return Err(bad("size and stride differ in length"));
    }
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad("size overflows"))?;
    if numel == 0 {
        return Ok(Tensor::new(t.size.clone(), Vec::new()));
    }
    // Index of the last element reached, relative to the storage (views included).
    let mut last = t
        .storage
        .view_offset
        .checked_add(t.offset)
        .ok_or_else(|| bad("offset overflows"))?;
    for (&d, &s) in t.size.iter().zip(&t.stride) {
        last = (d - 1)
            .checked_mul(s)
            .and_then(|x| last.checked_add(x))
            .ok_or_else(|| bad("stride overflows"))?;
    }
    let storage_end = t.storage.view_offset + t.storage.numel;
    if last >= storage_end {
        return Err(bad(&format!(
            "reaches element {last} of a storage of {storage_end} elements"
        )));
    }
    let es = dtype.size();
    if (last + 1).checked_mul(es).is_none_or(|n| n > bytes.len()) {
        return Err(bad("storage data is truncated"));
    }
    // Overlapping views (stride 0) can be larger than their storage; bound what we allocate.
    if numel > t.storage.numel.max(MAX_EXPANDED_NUMEL) {
        return Err(bad("expanded view is too large"));
    }
    let data = match (dtype, big_endian) {
        (DType::F32, false) => gather(t, numel, bytes, 4, |b| {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }),
        (DType::F32, true) => gather(t, numel, bytes, 4, |b| {
            f32::from_be_bytes([b[0], b[1], b[2], b[3]])
        }),
        (DType::F64, false) => gather(t, numel, bytes, 8, |b| {
            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        }),
        (DType::F64, true) => gather(t, numel, bytes, 8, |b| {
            f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        }),
        (DType::F16, false) => gather(t, numel, bytes, 2, |b| {
            f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
        }),
        (DType::F16, true) => gather(t, numel, bytes, 2, |b| {
            f16_to_f32(u16::from_be_bytes([b[0], b[1]]))
        }),
        (DType::BF16, false) => gather(t, numel, bytes, 2, |b| {
            bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))
        }),
        (DType::BF16, true) => gather(t, numel, bytes, 2, |b| {
            bf16_to_f32(u16::from_be_bytes([b[0], b[1]]))
        }),
        (DType::Skip(_), _) => return Err(bad("integer tensors are not read")),
    };
    Ok(Tensor::new(t.size.clone(), data))
}

/// Decode the `numel` elements of view `t` in row-major order. The caller has checked that
/// every index reached lies within `bytes`; `decode` gets exactly `es` bytes.
fn gather(
    t: &TensorRef,
    numel: usize,
    bytes: &[u8],
    es: usize,
    decode: impl Fn(&[u8]) -> f32,
) -> Vec<f32> {
    let base = t.storage.view_offset + t.offset;
    let contiguous = {
        let mut expected = 1usize;
        let mut ok = true;
        for (&d, &s) in t.size.iter().zip(&t.stride).rev() {
            // A dimension of size 1 never moves, whatever its stride.
            if d != 1 && s != expected {
                ok = false;
            }
            expected = expected.saturating_mul(d);
        }
        ok
    };
    if contiguous {
        let start = base * es;
        return bytes[start..start + numel * es]
            .chunks_exact(es)
            .map(decode)
            .collect();
    }
    // Odometer over the multi-index, tracking the linear storage index incrementally.
    let rank = t.size.len();
    let mut index = vec![0usize; rank];
    let mut at = base;
    let mut data = Vec::with_capacity(numel);
    for _ in 0..numel {
        data.push(decode(&bytes[at * es..at * es + es]));
        for dim in (0..rank).rev() {
            // Wrapping: a size-1 dimension may carry any stride, and stepping past the end
            // of a dimension may overshoot before being undone; indices actually read are
            // always within the bounds checked by the caller.
            index[dim] += 1;
            at = at.wrapping_add(t.stride[dim]);
            if index[dim] < t.size[dim] {
                break;
            }
            at = at.wrapping_sub(t.stride[dim].wrapping_mul(t.size[dim]));
            index[dim] = 0;
        }
    }
    data
}

/// IEEE half to single precision (exact: every half is a single).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    match exp {
        // Zero and subnormals: mant · 2⁻²⁴, exact in f32.
        0 => {
            let v = mant as f32 * f32::from_bits(0x3380_0000);
            f32::from_bits(v.to_bits() | sign)
        }
        // Infinity and NaN (payload kept).
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (mant << 13)),
        // Rebias the exponent from 15 to 127.
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (mant << 13)),
    }
}

/// bfloat16 is the top half of an f32.
fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Element size of storage types we cannot convert but must step over in a legacy file.
fn unconvertible_size(name: &str) -> Option<usize> {
    match name {
        "QInt32Storage" => Some(4),
        "ComplexFloatStorage" => Some(8),
        "ComplexDoubleStorage" => Some(16),
        "QInt8Storage" | "QUInt8Storage" | "QUInt4x2Storage" | "QUInt2x4Storage" => Some(1),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Zip format.

fn read_zip(bytes: &[u8]) -> Result<NamedTensors, WeightsError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| corrupt(format!("zip archive: {e}")))?;
    let mut names = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        match zip.name_for_index(i) {
            Some(Ok(n)) => names.push(n.into_owned()),
            Some(Err(e)) => return Err(corrupt(format!("zip archive: {e}"))),
            None => return Err(corrupt("zip archive: entry vanished")),
        }
    }
    let prefix = archive_prefix(&names)?;

    let pkl_name = format!("{prefix}data.pkl");
    let pkl = read_member(&mut zip, &pkl_name, MAX_PICKLE_BYTES, true)?;
    let (pickle, _) = pickle_at(&pkl, &pkl_name)?;

    let byteorder_name = format!("{prefix}byteorder");
    let big_endian = if zip.index_for_name(&byteorder_name).is_some() {
        let order = read_member(&mut zip, &byteorder_name, 16, true)?;
        match order.trim_ascii() {
            b"little" => false,
            b"big" => true,
            _ => {
                return Err(corrupt(format!(
                    "`{byteorder_name}` is neither `little` nor `big`"
                )))
            }
        }
    } else {
        false
    };

    let entries = state_dict(&pickle)?;
    // Read each storage once, even when several tensors view it.
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for (name, t) in &entries {
        let Ok(dtype) = t.storage.dtype else { continue };
        if matches!(dtype, DType::Skip(_)) || storages.contains_key(&t.storage.key) {
            continue;
        }
        let member = format!("{prefix}data/{}", t.storage.key);
        if zip.index_for_name(&member).is_none() {
            return Err(corrupt(format!(
                "storage `{member}` of tensor `{name}` is missing from the archive"
            )));
        }
        let want = t
            .storage
            .root_numel
            .checked_mul(dtype.size())
            .ok_or_else(|| corrupt(format!("storage `{member}` is too large")))?;
        let data = read_member(&mut zip, &member, want as u64, false)?;
        if data.len() < want {
            return Err(corrupt(format!(
                "storage `{member}` holds {} bytes, {want} expected",
                data.len()
            )));
        }
        storages.insert(t.storage.key.clone(), data);
    }
    collect(
        entries,
        |name, s, _| {
            storages.get(&s.key).map(Vec::as_slice).ok_or_else(|| {
                corrupt(format!(
                    "storage `{}` of tensor `{name}` was not read",
                    s.key
                ))
            })
        },
        big_endian,
    )
}

/// The folder holding `data.pkl` (with its trailing `/`); torch names it after the saved
/// file, so it varies. Like torch, prefer the folder of the archive's first entry.
fn archive_prefix(names: &[String]) -> Result<String, WeightsError> {
    let candidates: Vec<&str> = names
        .iter()
        .filter_map(|n| {
            let prefix = n.strip_suffix("data.pkl")?;
            let top_level =
                prefix.is_empty() || (prefix.ends_with('/') && prefix.matches('/').count() == 1);
            top_level.then_some(prefix)
        })
        .collect();
    let first_folder = names
        .first()
        .and_then(|n| n.find('/').map(|i| &n[..=i]))
        .unwrap_or("");
    if let Some(p) = candidates.iter().find(|&&p| p == first_folder) {
        return Ok((*p).to_owned());
    }
    candidates
        .first()
        .map(|p| (*p).to_owned())
        .ok_or_else(|| corrupt("zip archive has no data.pkl (not a PyTorch checkpoint)"))
}

/// Read up to `limit` bytes of a member. `whole` members must fit the limit; storages are
/// read only as far as needed, which also bounds what a lying size field can make us allocate.
fn read_member(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    limit: u64,
    whole: bool,
) -> Result<Vec<u8>, WeightsError> {
    let mut file = zip
        .by_name(name)
        .map_err(|e| corrupt(format!("`{name}`: {e}")))?;
    let declared = file.size();
    if whole && declared > limit {
        return Err(corrupt(format!("`{name}` is too large ({declared} bytes)")));
    }
    let mut data = Vec::with_capacity(declared.min(limit).min(1 << 26) as usize);
    (&mut file)
        .take(limit)
        .read_to_end(&mut data)
        .map_err(|e| corrupt(format!("`{name}`: {e}")))?;
    if data.len() as u64 == declared {
        // Reading past the end makes the zip reader verify the CRC.
        let mut probe = [0u8; 1];
        match file.read(&mut probe) {
            Ok(0) => {}
            Ok(_) => {
                return Err(corrupt(format!(
                    "`{name}` is longer than its declared size"
                )))
            }
            Err(e) => return Err(corrupt(format!("`{name}`: {e}"))),
        }
    }
    Ok(data)
}

// ---------------------------------------------------------------------------------------
// Legacy format.

fn read_legacy(bytes: &[u8]) -> Result<NamedTensors, WeightsError> {
    if bytes.is_empty() {
        return Err(corrupt("empty file"));
    }
    let mut pos = 0usize;
    let next = |what: &str, pos: &mut usize| -> Result<Pickle, WeightsError> {
        let rest = bytes.get(*pos..).unwrap_or(&[]);
        let (p, used) = pickle_at(rest, what)?;
        *pos += used;
        Ok(p)
    };

    let magic = next("magic number", &mut pos)?;
    if !matches!(magic.get(magic.root()), Object::BigInt(b) if b[..] == LEGACY_MAGIC) {
        return Err(corrupt("not a PyTorch checkpoint (magic number missing)"));
    }
    let version = next("protocol version", &mut pos)?;
    match version.as_int(version.root()) {
        Some(LEGACY_PROTOCOL) => {}
        Some(v) => return Err(corrupt(format!("unsupported legacy protocol version {v}"))),
        None => return Err(corrupt("protocol version is not an integer")),
    }
    // System info: byte order and C type sizes of the saving machine. Storage data is
    // always written little-endian, so nothing in it changes how we read.
    next("system info", &mut pos)?;
    let object = next("state dict", &mut pos)?;
    let key_list = next("storage keys", &mut pos)?;
    let keys = key_list
        .as_seq(key_list.root())
        .ok_or_else(|| corrupt("storage key list is not a list"))?;

    // Element sizes come from the persistent ids, wherever in the checkpoint they are.
    let mut sizes: HashMap<String, usize> = HashMap::new();
    for obj in object.objects() {
        if let Object::Persistent(pid) = obj {
            let s = storage_ref(&object, *pid)?;
            let size = match &s.dtype {
                Ok(d) => d.size(),
                Err(name) => unconvertible_size(name).ok_or_else(|| {
                    corrupt(format!(
                        "storage `{}` has type {name} of unknown element size",
                        s.key
                    ))
                })?,
            };
            sizes.entry(s.key).or_insert(size);
        }
    }

    // Storages follow in key-list order: u64 element count, then the elements.
    let mut spans: HashMap<String, &[u8]> = HashMap::new();
    for &k in keys {
        let key = match key_list.get(k) {
            Object::Str(s) => s.clone(),
            Object::Int(i) => i.to_string(),
            _ => return Err(corrupt("storage key is not a string")),
        };
        let es = *sizes
            .get(&key)
            .ok_or_else(|| corrupt(format!("storage `{key}` is not used by any tensor")))?;
        let count = bytes
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .ok_or_else(|| corrupt(format!("file ends before storage `{key}`")))?;
        pos += 8;
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(es))
            .ok_or_else(|| corrupt(format!("storage `{key}` is too large")))?;
        let data = pos
            .checked_add(len)
            .and_then(|end| bytes.get(pos..end))
            .ok_or_else(|| {
                corrupt(format!(
                    "storage `{key}` is truncated ({count} elements declared)"
                ))
            })?;
        pos += len;
        spans.insert(key, data);
    }

    let entries = state_dict(&object)?;
    collect(
        entries,
        |name, s, dtype| {
            let data = spans.get(&s.key).copied().ok_or_else(|| {
                corrupt(format!(
                    "storage `{}` of tensor `{name}` is missing from the file",
                    s.key
                ))
            })?;
            if data.len() / dtype.size() < s.root_numel {
                return Err(corrupt(format!(
                    "storage `{}` holds {} elements, {} declared",
                    s.key,
                    data.len() / dtype.size(),
                    s.root_numel
                )));
            }
            Ok(data)
        },
        false,
    )
}
