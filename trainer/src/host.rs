//! Named float tensors copied to the host, and the safetensors bytes checkpoints and exports
//! write from them.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use safetensors::tensor::{Dtype, TensorView};
use tch::{Device, Kind, Tensor};

/// A float32 tensor on the host.
pub struct HostTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values in row-major order.
    pub values: Vec<f32>,
}

impl HostTensor {
    /// Copies a tensor of any device and float kind as contiguous float32.
    pub fn from_tensor(t: &Tensor) -> Self {
        let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        HostTensor {
            shape: t.size().iter().map(|&d| d as usize).collect(),
            values: Vec::<f32>::try_from(t.flatten(0, -1)).expect("float tensor"),
        }
    }

    /// Little-endian bytes as `dtype` (F32, or F16 rounded to nearest).
    fn le_bytes(&self, dtype: Dtype) -> Result<Vec<u8>> {
        Ok(match dtype {
            Dtype::F32 => self.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => self.values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            other => bail!("cannot store tensors as {other:?}: use F32 or F16"),
        })
    }
}

/// A safetensors file holding `tensors` as `dtype` (F32 or F16) with `metadata`, the same
/// bytes for the same input.
pub fn safetensors_bytes(
    tensors: &[(String, Tensor)],
    dtype: Dtype,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let encoded = tensors
        .iter()
        .map(|(name, t)| {
            let host = HostTensor::from_tensor(t);
            Ok((name.as_str(), host.le_bytes(dtype)?, host.shape))
        })
        .collect::<Result<Vec<_>>>()?;
    let views = encoded
        .iter()
        .map(|(name, bytes, shape)| Ok((*name, TensorView::new(dtype, shape.clone(), bytes)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    Ok(maskdcpt_core::weights::serialize_sorted(views, metadata)?)
}
