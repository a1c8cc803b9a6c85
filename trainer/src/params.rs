//! Named parameters living in one flat buffer, with one flat gradient buffer beside it.
//!
//! Every parameter is a leaf view into `values`; after the first backward pass its gradient is
//! re-pointed at a view of `grads`, so the optimiser, EMA, clipping and AMP unscaling each run
//! as a handful of whole-buffer operations instead of one kernel per tensor. Knows nothing of
//! networks: modules ask it for tensors by name.

use anyhow::{Context, Result, bail};
use tch::{Device, Kind, Tensor};

/// How a new parameter is initialised.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Uniform in [−bound, bound] (PyTorch's default conv/linear init uses 1/√fan_in).
    Uniform(f64),
    /// Normal with mean 0 and this standard deviation (Kaiming fan-out for the classifier).
    Normal(f64),
}

/// Declared parameter: name, shape and initialiser, before storage exists.
struct Declared {
    name: String,
    shape: Vec<i64>,
    init: Init,
}

/// Collects parameter declarations; [`ParamBuilder::build`] allocates the flat buffers.
#[derive(Default)]
pub struct ParamBuilder {
    declared: Vec<Declared>,
}

/// A handle to a declared parameter, resolved to a tensor by [`ParamSet::get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamId(usize);

impl ParamBuilder {
    /// Declares a parameter; names must be unique (they are the state-dict keys).
    pub fn add(&mut self, name: String, shape: &[i64], init: Init) -> ParamId {
        debug_assert!(self.declared.iter().all(|d| d.name != name), "duplicate parameter {name}");
        self.declared.push(Declared { name, shape: shape.to_vec(), init });
        ParamId(self.declared.len() - 1)
    }

    /// Allocates the flat buffers on `device` and initialises every parameter (uses torch's RNG).
    pub fn build(self, device: Device) -> ParamSet {
        let numels: Vec<i64> = self.declared.iter().map(|d| d.shape.iter().product()).collect();
        let total: i64 = numels.iter().sum();
        let values = Tensor::zeros([total], (Kind::Float, device));
        let mut entries = Vec::with_capacity(self.declared.len());
        let mut offset = 0;
        tch::no_grad(|| {
            for (declared, &numel) in self.declared.into_iter().zip(&numels) {
                let mut view = values.narrow(0, offset, numel).view(declared.shape.as_slice());
                match declared.init {
                    Init::Zeros => {}
                    Init::Ones => _ = view.fill_(1.0),
                    Init::Uniform(bound) => _ = view.uniform_(-bound, bound),
                    Init::Normal(std) => _ = view.normal_(0.0, std),
                }
                let tensor = view.set_requires_grad(true);
                entries.push(Entry { name: declared.name, shape: declared.shape, offset, tensor });
                offset += numel;
            }
        });
        let grads = Tensor::zeros([total], (Kind::Float, device));
        ParamSet { values, grads, entries, grads_bound: false, trainable: true }
    }
}

struct Entry {
    name: String,
    shape: Vec<i64>,
    offset: i64,
    tensor: Tensor,
}

/// Parameters of one network, stored contiguously.
pub struct ParamSet {
    values: Tensor,
    grads: Tensor,
    entries: Vec<Entry>,
    grads_bound: bool,
    trainable: bool,
}

impl ParamSet {
    /// The parameter tensor (a leaf that requires grad) for a declared id.
    pub fn get(&self, id: ParamId) -> &Tensor {
        &self.entries[id.0].tensor
    }

    /// The flat values buffer (all parameters, in declaration order).
    pub fn values(&self) -> &Tensor {
        &self.values
    }

    /// The flat gradient buffer; valid after [`ParamSet::bind_grads`].
    pub fn grads(&self) -> &Tensor {
        &self.grads
    }

    /// Number of scalar parameters.
    pub fn numel(&self) -> i64 {
        self.values.size()[0]
    }

    /// Whether the parameters track gradients (see [`ParamSet::freeze`]).
    pub fn trainable(&self) -> bool {
        self.trainable
    }

    /// Stops gradient tracking: forward passes through a frozen set build no autograd graph
    /// for it and its gradients stay zero.
    pub fn freeze(&mut self) {
        for entry in &mut self.entries {
            _ = entry.tensor.set_requires_grad(false);
        }
        self.trainable = false;
    }

    /// Names and shapes in declaration order.
    pub fn names(&self) -> impl Iterator<Item = (&str, &[i64])> {
        self.entries.iter().map(|e| (e.name.as_str(), e.shape.as_slice()))
    }

    /// After a backward pass: moves every parameter's gradient into the flat gradient buffer
    /// (adding what it held) and points the gradient at its view, so later backward passes
    /// accumulate there directly. Parameters without a gradient keep zeros.
    pub fn bind_grads(&mut self) {
        if self.grads_bound {
            return;
        }
        tch::no_grad(|| {
            for entry in &self.entries {
                let mut grad = entry.tensor.grad();
                let mut view =
                    self.grads.narrow(0, entry.offset, view_numel(&entry.shape)).view(entry.shape.as_slice());
                if grad.defined() {
                    view.copy_(&grad);
                    _ = grad.set_source_tensor_(&view);
                }
            }
        });
        self.grads_bound = entries_bound(&self.entries, &self.grads);
    }

    /// Zeroes the flat gradient buffer (one operation once gradients are bound).
    pub fn zero_grads(&mut self) {
        if self.grads_bound {
            _ = self.grads.zero_();
        } else {
            for entry in &mut self.entries {
                entry.tensor.zero_grad();
            }
            _ = self.grads.zero_();
        }
    }

    /// Named views of the values, for saving (state-dict order).
    pub fn named_values(&self) -> Vec<(String, Tensor)> {
        self.named_views(&self.values)
    }

    /// Named views of any buffer laid out like the values (EMA copy, optimiser moments).
    pub fn named_views(&self, flat: &Tensor) -> Vec<(String, Tensor)> {
        self.entries
            .iter()
            .map(|e| (e.name.clone(), flat.narrow(0, e.offset, view_numel(&e.shape)).view(e.shape.as_slice())))
            .collect()
    }

    /// Fills a buffer laid out like the values from named tensors; every parameter must be
    /// present with its exact shape (`what` names the source in errors).
    pub fn load_flat(&self, flat: &Tensor, named: &[(String, Tensor)], what: &str) -> Result<()> {
        let by_name: std::collections::HashMap<&str, &Tensor> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        if let Some((unexpected, _)) = named.iter().find(|(n, _)| !self.entries.iter().any(|e| &e.name == n)) {
            bail!("{what}: unexpected tensor {unexpected} (not a parameter of this model: check the model shape)");
        }
        tch::no_grad(|| {
            for entry in &self.entries {
                let source = by_name
                    .get(entry.name.as_str())
                    .with_context(|| format!("{what}: missing tensor {}", entry.name))?;
                if source.size() != entry.shape {
                    bail!(
                        "{what}: tensor {} has shape {:?}, the model needs {:?} (does the config's \
                         [model] / [classifier] shape, e.g. width or spectrum_hidden, match the file?)",
                        entry.name,
                        source.size(),
                        entry.shape
                    );
                }
                let mut view = flat.narrow(0, entry.offset, view_numel(&entry.shape)).view(entry.shape.as_slice());
                view.copy_(source);
            }
            Ok(())
        })
    }
}

fn view_numel(shape: &[i64]) -> i64 {
    shape.iter().product()
}

fn entries_bound(entries: &[Entry], grads: &Tensor) -> bool {
    let base = grads.data_ptr() as usize;
    let end = base + grads.numel() * 4;
    entries.iter().all(|e| {
        let grad = e.tensor.grad();
        grad.defined() && (base..end).contains(&(grad.data_ptr() as usize))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_params() -> (ParamSet, ParamId, ParamId) {
        let mut builder = ParamBuilder::default();
        let a = builder.add("a".into(), &[2, 3], Init::Ones);
        let b = builder.add("b".into(), &[4], Init::Zeros);
        (builder.build(Device::Cpu), a, b)
    }

    #[test]
    fn parameters_are_views_of_the_flat_buffer() {
        let (set, a, b) = two_params();
        assert_eq!(set.numel(), 10);
        tch::no_grad(|| _ = set.values().narrow(0, 6, 4).fill_(2.0));
        assert_eq!(set.get(b).sum(Kind::Float).double_value(&[]), 8.0);
        assert_eq!(set.get(a).sum(Kind::Float).double_value(&[]), 6.0);
        assert!(set.get(a).requires_grad());
    }

    #[test]
    fn gradients_accumulate_in_the_flat_buffer_once_bound() {
        let (mut set, a, b) = two_params();
        let loss = |set: &ParamSet| set.get(a).sum(Kind::Float) * 3.0 + set.get(b).sum(Kind::Float) * 5.0;
        loss(&set).backward();
        set.bind_grads();
        assert!(set.grads_bound);
        let expect = [3.0f32, 3.0, 3.0, 3.0, 3.0, 3.0, 5.0, 5.0, 5.0, 5.0];
        assert_eq!(Vec::<f32>::try_from(set.grads()).unwrap(), expect);
        loss(&set).backward();
        let doubled: Vec<f32> = expect.iter().map(|v| v * 2.0).collect();
        assert_eq!(Vec::<f32>::try_from(set.grads()).unwrap(), doubled);
        set.zero_grads();
        loss(&set).backward();
        assert_eq!(Vec::<f32>::try_from(set.grads()).unwrap(), expect);
    }

    #[test]
    fn load_flat_checks_names_and_shapes() {
        let (set, _, _) = two_params();
        let good = vec![
            ("a".to_string(), Tensor::full([2, 3], 7.0, (Kind::Float, Device::Cpu))),
            ("b".to_string(), Tensor::full([4], 1.0, (Kind::Float, Device::Cpu))),
        ];
        set.load_flat(set.values(), &good, "test").unwrap();
        assert_eq!(set.values().sum(Kind::Float).double_value(&[]), 46.0);
        let err = set.load_flat(set.values(), &good[..1], "ckpt.safetensors").unwrap_err();
        assert!(err.to_string().contains("missing tensor b"), "{err}");
        let wrong = vec![
            ("a".to_string(), good[0].1.shallow_clone()),
            ("b".to_string(), Tensor::zeros([5], (Kind::Float, Device::Cpu))),
        ];
        let err = set.load_flat(set.values(), &wrong, "x").unwrap_err();
        assert!(err.to_string().contains("shape [5]"), "{err}");
        let extra = vec![("c".to_string(), Tensor::zeros([1], (Kind::Float, Device::Cpu)))];
        let err = set.load_flat(set.values(), &extra, "x").unwrap_err();
        assert!(err.to_string().contains("unexpected tensor c"), "{err}");
    }
}
