//! safetensors: our own weights format. What we write holds the folded convolutions under the
//! port's names, plus the model configuration as JSON in the metadata.

use super::{NamedTensors, Tensor, WeightsError};
use crate::config::ModelConfig;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;

const FMT: &str = "safetensors";
/// Metadata key holding the model configuration.
pub const CONFIG_KEY: &str = "retinaface.config";

/// Read every floating-point tensor as f32.
pub fn read(bytes: &[u8]) -> Result<NamedTensors, WeightsError> {
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| WeightsError::corrupt(FMT, e.to_string()))?;
    let mut out = NamedTensors::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            Dtype::F16 => d
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Dtype::BF16 => d
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            // Integer counters (BatchNorm's num_batches_tracked) carry no weights.
            Dtype::I64 | Dtype::I32 | Dtype::U8 | Dtype::BOOL => continue,
            other => {
                return Err(WeightsError::DType {
                    name,
                    dtype: format!("{other:?}"),
                })
            }
        };
        let shape = view.shape().to_vec();
        if shape.iter().product::<usize>() != data.len() {
            return Err(WeightsError::corrupt(
                FMT,
                format!("tensor `{name}` does not fill its shape {shape:?}"),
            ));
        }
        out.insert(name, Tensor { shape, data });
    }
    Ok(out)
}

/// The model configuration stored in a file we wrote; `None` for a file without one (written
/// by another tool). A stored configuration that does not parse or is inconsistent is an
/// error: guessing another network would fail later with a less useful message.
pub fn read_config(bytes: &[u8]) -> Result<Option<ModelConfig>, WeightsError> {
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| WeightsError::corrupt(FMT, e.to_string()))?;
    let Some(json) = meta.metadata().as_ref().and_then(|m| m.get(CONFIG_KEY)) else {
        return Ok(None);
    };
    let config: ModelConfig = serde_json::from_str(json).map_err(|e| {
        WeightsError::corrupt(FMT, format!("model configuration in `{CONFIG_KEY}`: {e}"))
    })?;
    config.validate().map_err(|e| {
        WeightsError::corrupt(FMT, format!("model configuration in `{CONFIG_KEY}`: {e}"))
    })?;
    Ok(Some(config))
}

/// Serialise tensors (f32) with the configuration in the metadata. Deterministic: the same
/// tensors always give the same bytes.
pub fn write(tensors: &NamedTensors, config: &ModelConfig) -> Result<Vec<u8>, WeightsError> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.shape.clone(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| WeightsError::Write(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let json = serde_json::to_string(config).map_err(|e| WeightsError::Write(e.to_string()))?;
    let meta = HashMap::from([(CONFIG_KEY.to_owned(), json)]);
    safetensors::serialize(views, Some(meta)).map_err(|e| WeightsError::Write(e.to_string()))
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: renormalise.
            let e = m.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - e) << 23) | ((m << (e + 13)) & 0x7f_ffff)
        }
        (31, 0) => sign | 0x7f80_0000,
        (31, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
    }

    #[test]
    fn write_read_round_trip() {
        let mut t = NamedTensors::new();
        t.insert("a.weight".into(), Tensor::new(vec![2, 1], vec![1.5, -2.0]));
        let bytes = write(&t, &ModelConfig::mobilenet025()).unwrap();
        assert_eq!(read(&bytes).unwrap(), t);
        assert_eq!(
            read_config(&bytes).unwrap(),
            Some(ModelConfig::mobilenet025())
        );
        for config in [
            ModelConfig::resnet50_paper(),
            ModelConfig::df2s2_mobilenet025(),
        ] {
            let bytes = write(&t, &config).unwrap();
            assert_eq!(read_config(&bytes).unwrap(), Some(config));
        }
        assert_eq!(write(&t, &ModelConfig::mobilenet025()).unwrap(), bytes);
        assert!(read(&bytes[..bytes.len() - 1]).is_err());
    }
}
