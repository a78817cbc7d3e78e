//! From the burn network to the detector's tensors: unfolded (BatchNorm kept, what checkpoints
//! and `--init` read back exactly) or folded (what `retinaface detect` runs, as `convert`
//! writes it).

use super::layers::{values, ConvBn};
use super::Model;
use burn::tensor::Tensor;
use retinaface::weights::{NamedTensors, Tensor as HostTensor, WeightsError};

fn host<const D: usize>(t: Tensor<D>) -> Result<HostTensor, WeightsError> {
    let shape = t.dims().to_vec();
    Ok(HostTensor::new(shape, values(t)?))
}

fn pairs(model: &Model) -> Result<Vec<(&retinaface::model::ConvSpec, &ConvBn)>, WeightsError> {
    let layers = model.net.layers();
    if layers.len() != model.specs.len() {
        return Err(WeightsError::Mismatch(format!(
            "{} layers for {} specs",
            layers.len(),
            model.specs.len()
        )));
    }
    Ok(model.specs.iter().zip(layers).collect())
}

/// Conv weights and biases and BatchNorm's four tensors under the port's names.
pub fn export_unfolded(model: &Model) -> Result<NamedTensors, WeightsError> {
    model.net.sync_running_stats();
    let mut out = NamedTensors::new();
    for (spec, layer) in pairs(model)? {
        let w = host(layer.conv.weight.val())?;
        if w.shape != spec.weight_shape() {
            return Err(WeightsError::Shape {
                name: format!("{}.weight", spec.name),
                expected: spec.weight_shape(),
                found: w.shape,
            });
        }
        out.insert(format!("{}.weight", spec.name), w);
        if let Some(b) = &layer.conv.bias {
            out.insert(format!("{}.bias", spec.name), host(b.val())?);
        }
        if let (Some(bn), Some(name)) = (&layer.bn, &spec.bn) {
            out.insert(format!("{name}.weight"), host(bn.gamma.val())?);
            out.insert(format!("{name}.bias"), host(bn.beta.val())?);
            out.insert(
                format!("{name}.running_mean"),
                host(bn.running_mean.value())?,
            );
            out.insert(format!("{name}.running_var"), host(bn.running_var.value())?);
        }
    }
    if let Some(decoder) = &model.net.mesh_decoder {
        out.extend(decoder.export()?);
    }
    Ok(out)
}

/// BatchNorm folded into each convolution: `<conv>.weight` and `<conv>.bias` only (and the
/// mesh decoder's tensors, which have no BatchNorm).
pub fn export_folded(model: &Model) -> Result<NamedTensors, WeightsError> {
    let unfolded = export_unfolded(model)?;
    let mut out: NamedTensors = unfolded
        .iter()
        .filter(|(name, _)| name.starts_with(retinaface::mesh::decoder::PREFIX))
        .map(|(name, t)| (name.clone(), t.clone()))
        .collect();
    for spec in &model.specs {
        let (w, b) = retinaface::model::folded(&unfolded, spec)?;
        out.insert(
            format!("{}.weight", spec.name),
            HostTensor::new(spec.weight_shape(), w),
        );
        out.insert(
            format!("{}.bias", spec.name),
            HostTensor::new(vec![spec.cout], b),
        );
    }
    Ok(out)
}
