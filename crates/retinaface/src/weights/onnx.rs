//! ONNX initializers of the port's export, mapped to the port's layer names by the graph's
//! structure: the Conv nodes in graph order (aliases through Identity resolved, a weight used
//! twice — the export duplicates each SSH's shared 5×5 convolution — counted once) must match
//! the config's convolutions one for one, attributes and shapes included.
//!
//! The protobuf is read by hand (no `protoc`): only the fields this needs.

use super::{NamedTensors, Tensor, WeightsError};
use crate::arch::{ConvSpec, Graph};
use crate::config::ModelConfig;
use std::collections::HashMap;

const FMT: &str = "ONNX";

fn corrupt(reason: impl Into<String>) -> WeightsError {
    WeightsError::corrupt(FMT, reason)
}

/// A protobuf field: number and value.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Iterate over the fields of one protobuf message.
struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf }
    }

    fn varint(&mut self) -> Result<u64, WeightsError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| corrupt("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WeightsError> {
        if n > self.buf.len() {
            return Err(corrupt("truncated field"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn next_field(&mut self) -> Option<Result<(u64, Value<'a>), WeightsError>> {
        if self.buf.is_empty() {
            return None;
        }
        Some((|| {
            let key = self.varint()?;
            let value = match key & 7 {
                0 => Value::Varint(self.varint()?),
                1 => {
                    self.take(8)?;
                    Value::Fixed64
                }
                2 => {
                    let n = usize::try_from(self.varint()?).map_err(|_| corrupt("length"))?;
                    Value::Bytes(self.take(n)?)
                }
                5 => Value::Fixed32(u32::from_le_bytes(
                    self.take(4)?.try_into().map_err(|_| corrupt("fixed32"))?,
                )),
                w => return Err(corrupt(format!("unsupported wire type {w}"))),
            };
            Ok((key >> 3, value))
        })())
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), WeightsError>;
    fn next(&mut self) -> Option<Self::Item> {
        let r = self.next_field();
        if matches!(r, Some(Err(_))) {
            self.buf = &[];
        }
        r
    }
}

/// Repeated int64 fields may be packed or not.
fn push_ints(v: Value, out: &mut Vec<i64>) -> Result<(), WeightsError> {
    match v {
        Value::Varint(x) => out.push(x as i64),
        Value::Bytes(b) => {
            let mut f = Fields::new(b);
            while !f.buf.is_empty() {
                out.push(f.varint()? as i64);
            }
        }
        _ => return Err(corrupt("bad integer list")),
    }
    Ok(())
}

fn utf8(b: &[u8]) -> Result<String, WeightsError> {
    String::from_utf8(b.to_vec()).map_err(|_| corrupt("string is not UTF-8"))
}

#[derive(Default)]
struct Node {
    inputs: Vec<String>,
    outputs: Vec<String>,
    op: String,
    ints: HashMap<String, Vec<i64>>,
}

fn parse_node(b: &[u8]) -> Result<Node, WeightsError> {
    let mut n = Node::default();
    for f in Fields::new(b) {
        match f? {
            (1, Value::Bytes(s)) => n.inputs.push(utf8(s)?),
            (2, Value::Bytes(s)) => n.outputs.push(utf8(s)?),
            (4, Value::Bytes(s)) => n.op = utf8(s)?,
            (5, Value::Bytes(a)) => {
                let (mut name, mut ints) = (String::new(), Vec::new());
                for f in Fields::new(a) {
                    match f? {
                        (1, Value::Bytes(s)) => name = utf8(s)?,
                        (3, v @ Value::Varint(_)) => push_ints(v, &mut ints)?,
                        (8, v) => push_ints(v, &mut ints)?,
                        _ => {}
                    }
                }
                n.ints.insert(name, ints);
            }
            _ => {}
        }
    }
    Ok(n)
}

/// An initializer: `None` for types other than float32 (graphs keep int64 shape constants
/// among their initializers; weights are float32).
fn parse_tensor(b: &[u8]) -> Result<Option<(String, Tensor)>, WeightsError> {
    let (mut name, mut dims, mut dtype, mut raw, mut floats) =
        (String::new(), Vec::new(), 0u64, None, Vec::new());
    for f in Fields::new(b) {
        match f? {
            (1, v) => push_ints(v, &mut dims)?,
            (2, Value::Varint(t)) => dtype = t,
            (4, Value::Bytes(p)) => floats.extend(
                p.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            (4, Value::Fixed32(x)) => floats.push(f32::from_bits(x)),
            (8, Value::Bytes(s)) => name = utf8(s)?,
            (9, Value::Bytes(r)) => raw = Some(r),
            (13 | 14, _) => {
                return Err(corrupt(format!(
                    "tensor `{name}` uses external data, which is not supported"
                )))
            }
            _ => {}
        }
    }
    if dtype != 1 {
        return Ok(None);
    }
    let shape: Vec<usize> = dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| corrupt(format!("tensor `{name}` has a negative dimension")))
        })
        .collect::<Result<_, _>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| corrupt("tensor too large"))?;
    let data = match raw {
        Some(r) => {
            // A shape whose byte size overflows cannot match any buffer.
            if n.checked_mul(4) != Some(r.len()) {
                return Err(corrupt(format!(
                    "tensor `{name}` holds {} bytes, its shape {shape:?} needs {n} × 4",
                    r.len(),
                )));
            }
            r.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        None => floats,
    };
    if data.len() != n {
        return Err(corrupt(format!(
            "tensor `{name}` holds {} values, its shape {shape:?} needs {n}",
            data.len()
        )));
    }
    Ok(Some((name, Tensor { shape, data })))
}

/// Read an ONNX model and map its initializers to the port's names.
pub fn read(bytes: &[u8]) -> Result<NamedTensors, WeightsError> {
    let mut graph = None;
    for f in Fields::new(bytes) {
        if let (7, Value::Bytes(g)) = f? {
            graph = Some(g);
        }
    }
    let graph = graph.ok_or_else(|| corrupt("no graph"))?;
    let (mut nodes, mut inits) = (Vec::new(), HashMap::new());
    for f in Fields::new(graph) {
        match f? {
            (1, Value::Bytes(n)) => nodes.push(parse_node(n)?),
            (5, Value::Bytes(t)) => {
                if let Some((name, t)) = parse_tensor(t)? {
                    inits.insert(name, t);
                }
            }
            _ => {}
        }
    }
    map_graph(&nodes, inits)
}

/// One Conv node with its (alias-resolved) weight and bias names.
struct ConvNode<'a> {
    node: &'a Node,
    weight: String,
    bias: Option<String>,
}

fn map_graph(
    nodes: &[Node],
    mut inits: HashMap<String, Tensor>,
) -> Result<NamedTensors, WeightsError> {
    let mut alias: HashMap<&str, &str> = HashMap::new();
    for n in nodes.iter().filter(|n| n.op == "Identity") {
        if let (Some(i), Some(o)) = (n.inputs.first(), n.outputs.first()) {
            alias.insert(o, i);
        }
    }
    let resolve = |s: &str| {
        let mut s = s.to_owned();
        for _ in 0..nodes.len() {
            match alias.get(s.as_str()) {
                Some(&t) => s = t.to_owned(),
                None => break,
            }
        }
        s
    };
    let mut convs: Vec<ConvNode> = Vec::new();
    for n in nodes.iter().filter(|n| n.op == "Conv") {
        let weight = resolve(
            n.inputs
                .get(1)
                .ok_or_else(|| corrupt("Conv node without weights"))?,
        );
        if convs.iter().any(|c| c.weight == weight) {
            continue; // the same convolution computed twice by the export
        }
        let bias = n
            .inputs
            .get(2)
            .filter(|s| !s.is_empty())
            .map(|s| resolve(s));
        convs.push(ConvNode {
            node: n,
            weight,
            bias,
        });
    }
    let first = convs
        .first()
        .and_then(|c| inits.get(&c.weight))
        .ok_or_else(|| corrupt("no convolution weights"))?;
    let config = if first.shape.get(2) == Some(&7) {
        ModelConfig::resnet50()
    } else {
        ModelConfig::mobilenet025()
    };
    let specs = Graph::new(&config).layers;
    if specs.len() != convs.len() {
        return Err(WeightsError::NotRetinaFace(format!(
            "the ONNX graph has {} distinct convolutions, the {:?} RetinaFace has {}",
            convs.len(),
            config.backbone,
            specs.len()
        )));
    }
    let mut out = NamedTensors::new();
    for (spec, conv) in specs.iter().zip(&convs) {
        check_attributes(spec, conv.node)?;
        let mut take = |src: &str, dst: String, expected: Vec<usize>| -> Result<(), WeightsError> {
            let t = inits.remove(src).ok_or_else(|| WeightsError::Missing {
                name: format!("{src} (for {dst})"),
                expected: expected.clone(),
            })?;
            if t.shape != expected {
                return Err(WeightsError::Shape {
                    name: format!("{dst} (ONNX `{src}`)"),
                    expected,
                    found: t.shape,
                });
            }
            out.insert(dst, t);
            Ok(())
        };
        take(
            &conv.weight,
            format!("{}.weight", spec.name),
            spec.weight_shape(),
        )?;
        match &conv.bias {
            Some(b) => take(b, format!("{}.bias", spec.name), vec![spec.cout])?,
            None => {
                out.insert(
                    format!("{}.bias", spec.name),
                    Tensor::new(vec![spec.cout], vec![0.0; spec.cout]),
                );
            }
        }
    }
    Ok(out)
}

fn check_attributes(spec: &ConvSpec, n: &Node) -> Result<(), WeightsError> {
    let get = |k: &str, default: Vec<i64>| n.ints.get(k).cloned().unwrap_or(default);
    let s = spec.stride as i64;
    let p = spec.pad as i64;
    let groups = if spec.kind == crate::arch::ConvKind::Depthwise {
        spec.cin as i64
    } else {
        1
    };
    let ok = get("strides", vec![1, 1]) == [s, s]
        && get("pads", vec![0, 0, 0, 0]) == [p, p, p, p]
        && get("group", vec![1]) == [groups]
        && get("dilations", vec![1, 1]) == [1, 1];
    if ok {
        Ok(())
    } else {
        Err(WeightsError::Mismatch(format!(
            "ONNX Conv for `{}` has strides {:?}, pads {:?}, group {:?}; expected stride {s}, pad {p}, group {groups}",
            spec.name,
            get("strides", vec![1, 1]),
            get("pads", vec![0, 0, 0, 0]),
            get("group", vec![1])
        )))
    }
}
