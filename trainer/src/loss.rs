//! Training losses: L1 (BasicSR `L1Loss`, mean) and focal loss (DCPT's `FocalLoss`: per-sample
//! NLL of the log-softmax times (1 − p_t)^γ, mean; γ = 0 is cross-entropy).

use tch::{Kind, Tensor};

/// Mean absolute error.
pub fn l1(prediction: &Tensor, target: &Tensor) -> Tensor {
    (prediction - target).abs().mean(Kind::Float)
}

/// Focal loss of `logits` `[N, classes]` against integer `labels` `[N]`.
pub fn focal(logits: &Tensor, labels: &Tensor, gamma: f64) -> Tensor {
    let log_p = logits.to_kind(Kind::Float).log_softmax(1, None);
    let log_pt = log_p.gather(1, &labels.unsqueeze(1), false).squeeze_dim(1);
    let nll = -&log_pt;
    if gamma == 0.0 {
        return nll.mean(Kind::Float);
    }
    let weight: Tensor = (log_pt.exp().neg() + 1.0).clamp_min(0.0).pow_tensor_scalar(gamma);
    (nll * weight).mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn focal_with_gamma_zero_is_cross_entropy() {
        let logits = Tensor::from_slice(&[2.0f32, -1.0, 0.5, 0.1, 0.2, 3.0]).view([2, 3]);
        let labels = Tensor::from_slice(&[0i64, 2]);
        let ce = logits.cross_entropy_for_logits(&labels).double_value(&[]);
        assert!((focal(&logits, &labels, 0.0).double_value(&[]) - ce).abs() < 1e-6);
        // γ > 0 down-weights confident samples: the loss is smaller than cross-entropy.
        assert!(focal(&logits, &labels, 2.0).double_value(&[]) < ce);
    }

    #[test]
    fn focal_matches_the_formula() {
        let logits = Tensor::from_slice(&[0.3f32, -0.2]).view([1, 2]);
        let labels = Tensor::from_slice(&[1i64]);
        let p1 = (-0.2f64).exp() / ((0.3f64).exp() + (-0.2f64).exp());
        let expected = -(p1.ln()) * (1.0 - p1).powf(2.0);
        assert!((focal(&logits, &labels, 2.0).double_value(&[]) - expected).abs() < 1e-6);
    }

    #[test]
    fn l1_is_the_mean_absolute_difference() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).to_device(Device::Cpu);
        let b = Tensor::from_slice(&[0.0f32, 2.5, 3.0, 2.0]);
        assert!((l1(&a, &b).double_value(&[]) - 0.875).abs() < 1e-7);
    }
}
