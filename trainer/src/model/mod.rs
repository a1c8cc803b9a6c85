//! Networks in tch whose parameter names equal the MaskDCPT fork's state-dict keys, so an
//! export needs no renaming: the NAFNet backbone (with the masked pre-training forward) and
//! the degradation-classification decoder. Modules hold parameter ids; tensors live in a
//! [`crate::params::ParamSet`].

pub mod classifier;
pub mod layers;
pub mod mask;
pub mod nafnet;
