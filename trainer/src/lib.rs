//! MaskDCPT pre-training and all-in-one fine-tuning on libtorch (tch).
//!
//! Data path: clean or paired images ([`data`], degradations from `maskdcpt-degrade`) →
//! networks whose parameter names are the fork's state-dict keys ([`model`], stored flat in
//! [`params`]) → losses ([`loss`]) and optimisation ([`optim`]) in [`train`] → checkpoints
//! ([`checkpoint`]) → [`export`] to files `maskdcpt-core` and the official PyTorch code load;
//! [`eval`] measures PSNR/SSIM ([`metrics`]) and classifier accuracy; [`spectrum_fit`] refits
//! a head's spectral branch alone.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod export;
pub mod host;
pub mod log;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod net;
pub mod optim;
pub mod params;
pub mod pickle_writer;
pub mod spectrum_fit;
pub mod train;
