//! Optimisation on flat parameter buffers: AdamW (PyTorch semantics, decoupled weight decay),
//! global-norm gradient clipping, EMA of the weights, the learning-rate schedule (linear
//! warm-up then cosine to a floor) and a dynamic loss scaler for FP16 mixed precision.
//! All state is plain tensors and numbers, so a checkpoint restores it exactly.

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// β₁, β₂.
    #[serde(default = "default_betas")]
    pub betas: (f64, f64),
    /// Decoupled weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// ε.
    #[serde(default = "default_eps")]
    pub eps: f64,
}

fn default_betas() -> (f64, f64) {
    (0.9, 0.999)
}

fn default_eps() -> f64 {
    1e-8
}

/// AdamW state for one flat parameter buffer.
pub struct AdamW {
    config: AdamWConfig,
    /// First moment (same layout as the parameters).
    pub exp_avg: Tensor,
    /// Second moment.
    pub exp_avg_sq: Tensor,
}

impl AdamW {
    /// Zero moments for `values`.
    pub fn new(config: AdamWConfig, values: &Tensor) -> Self {
        Self { config, exp_avg: values.zeros_like(), exp_avg_sq: values.zeros_like() }
    }

    /// The configured (peak) learning rate.
    pub fn peak_lr(&self) -> f64 {
        self.config.lr
    }

    /// One update of `values` from `grads` at 1-based `step` with learning rate `lr`.
    pub fn step(&mut self, values: &Tensor, grads: &Tensor, step: u64, lr: f64) {
        let AdamWConfig { betas: (beta1, beta2), weight_decay, eps, .. } = self.config;
        tch::no_grad(|| {
            let mut values = values.shallow_clone();
            if weight_decay != 0.0 {
                _ = values.g_mul_scalar_(1.0 - lr * weight_decay);
            }
            _ = self.exp_avg.lerp_(grads, 1.0 - beta1);
            _ = self.exp_avg_sq.g_mul_scalar_(beta2);
            _ = self.exp_avg_sq.addcmul_(&(grads * (1.0 - beta2)), grads);
            let bias1 = 1.0 - beta1.powi(step as i32);
            let bias2 = 1.0 - beta2.powi(step as i32);
            let denom = self.exp_avg_sq.sqrt() / bias2.sqrt() + eps;
            _ = values.addcdiv_(&(&self.exp_avg * (-lr / bias1)), &denom);
        });
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm` (PyTorch `clip_grad_norm_`);
/// returns the norm before clipping.
pub fn clip_grad_norm(grads: &Tensor, max_norm: f64) -> Tensor {
    tch::no_grad(|| {
        let norm = grads.norm();
        let coefficient = (max_norm / (&norm + 1e-6)).clamp_max(1.0);
        _ = grads.shallow_clone().g_mul_(&coefficient);
        norm
    })
}

/// `ema ← decay·ema + (1 − decay)·values` (BasicSR `model_ema`).
pub fn ema_update(ema: &Tensor, values: &Tensor, decay: f64) {
    tch::no_grad(|| _ = ema.shallow_clone().lerp_(values, 1.0 - decay));
}

/// Learning-rate schedule: linear warm-up from 0, then cosine from the peak to `min_lr`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Warm-up steps.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Floor reached at the last step.
    #[serde(default)]
    pub min_lr: f64,
}

impl Schedule {
    /// Learning rate at 1-based `step` of `total`, for peak `lr`.
    pub fn lr_at(&self, lr: f64, step: u64, total: u64) -> f64 {
        if step <= self.warmup_steps {
            return lr * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        self.min_lr + 0.5 * (lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Dynamic loss scaling for FP16 autocast (PyTorch `GradScaler` defaults: 2¹⁶, ×2 every 2000
/// clean steps, ×½ on overflow).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LossScaler {
    /// Current scale.
    pub scale: f64,
    /// Clean steps since the last change.
    pub clean_steps: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self { scale: 65536.0, clean_steps: 0 }
    }
}

impl LossScaler {
    /// Divides every gradient buffer by the scale; returns false (and halves the scale) when
    /// any gradient is not finite, in which case the step must be skipped.
    pub fn unscale(&mut self, grads: &[&Tensor]) -> bool {
        let finite = tch::no_grad(|| {
            grads.iter().all(|g| {
                _ = g.shallow_clone().g_mul_scalar_(1.0 / self.scale);
                g.isfinite().all().int64_value(&[]) != 0
            })
        });
        if finite {
            self.clean_steps += 1;
            if self.clean_steps == 2000 {
                self.scale *= 2.0;
                self.clean_steps = 0;
            }
        } else {
            self.scale /= 2.0;
            self.clean_steps = 0;
        }
        finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn scalar(t: &Tensor) -> f64 {
        t.to_kind(Kind::Double).double_value(&[])
    }

    /// PyTorch's AdamW on one scalar, by hand: p=1, g=0.5, lr=0.1, wd=0.01, default betas/eps.
    #[test]
    fn adamw_matches_pytorch_formula() {
        let values = Tensor::from_slice(&[1.0f32]);
        let grads = Tensor::from_slice(&[0.5f32]);
        let config = AdamWConfig { lr: 0.1, betas: (0.9, 0.999), weight_decay: 0.01, eps: 1e-8 };
        let mut opt = AdamW::new(config, &values);
        opt.step(&values, &grads, 1, 0.1);
        // p = 1·(1 − 0.001) − 0.1 · m̂/(√v̂ + ε), m̂ = 0.5, v̂ = 0.25 → 0.999 − 0.1.
        let p = f64::try_from(&values.get(0)).unwrap();
        assert!((p - 0.899).abs() < 1e-6, "{p}");
        opt.step(&values, &grads, 2, 0.1);
        let p2 = f64::try_from(&values.get(0)).unwrap();
        assert!((p2 - (0.899 * 0.999 - 0.1)).abs() < 1e-5, "{p2}");
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let grads = Tensor::from_slice(&[3.0f32, 4.0]).to_device(Device::Cpu);
        let norm = clip_grad_norm(&grads, 1.0);
        assert!((scalar(&norm) - 5.0).abs() < 1e-6);
        assert!((scalar(&grads.norm()) - 1.0).abs() < 1e-5);
        let small = Tensor::from_slice(&[0.3f32, 0.4]);
        _ = clip_grad_norm(&small, 1.0);
        assert_eq!(Vec::<f32>::try_from(&small).unwrap(), vec![0.3, 0.4]);
    }

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let s = Schedule { warmup_steps: 10, min_lr: 1e-6 };
        assert!((s.lr_at(1e-3, 5, 100) - 5e-4).abs() < 1e-12);
        assert!((s.lr_at(1e-3, 10, 100) - 1e-3).abs() < 1e-12);
        assert!((s.lr_at(1e-3, 55, 100) - (1e-6 + 0.5 * (1e-3 - 1e-6))).abs() < 1e-12);
        assert!((s.lr_at(1e-3, 100, 100) - 1e-6).abs() < 1e-12);
    }

    #[test]
    fn scaler_skips_overflow_and_unscales() {
        let mut scaler = LossScaler { scale: 4.0, clean_steps: 0 };
        let grads = Tensor::from_slice(&[8.0f32, 4.0]);
        assert!(scaler.unscale(&[&grads]));
        assert_eq!(Vec::<f32>::try_from(&grads).unwrap(), vec![2.0, 1.0]);
        let bad = Tensor::from_slice(&[f32::INFINITY, 1.0]);
        assert!(!scaler.unscale(&[&grads, &bad]));
        assert_eq!(scaler.scale, 2.0);
    }

    #[test]
    fn ema_moves_towards_the_values() {
        let ema = Tensor::from_slice(&[0.0f32]);
        ema_update(&ema, &Tensor::from_slice(&[1.0f32]), 0.9);
        assert!((f64::try_from(&ema.get(0)).unwrap() - 0.1).abs() < 1e-7);
    }
}
