//! The tch networks against the PyTorch reference (`scripts/gen_trainer_golden.py`, whose
//! reference was checked against the official MaskDCPT modules at max |Δ| 0): restoration
//! forward, masked pre-training reconstruction, and the classification head's logits on
//! unmasked and masked features.

use std::path::Path;

use maskdcpt_trainer::model::classifier::ClassifierShape;
use maskdcpt_trainer::model::mask::PatchMask;
use maskdcpt_trainer::model::nafnet::NafnetShape;
use maskdcpt_trainer::net::MaskDcptNet;
use tch::{Device, Tensor};

const OUTPUTS: [&str; 6] = ["input", "grid", "restored", "logits", "reconstruction", "masked_logits"];

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn tch_networks_match_the_pytorch_reference() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/trainer_masked.safetensors");
    let named = Tensor::read_safetensors(&path).unwrap();
    let get = |name: &str| named.iter().find(|(n, _)| n == name).unwrap().1.shallow_clone();
    let shape = NafnetShape { width: 8, enc_blocks: vec![1, 1, 2], middle_blocks: 1, dec_blocks: vec![1, 1, 1] };
    let head = ClassifierShape { classes: 19, blocks_per_scale: 2 };
    let net = MaskDcptNet::new(&shape, Some(&head), Device::Cpu).unwrap();
    let weights: Vec<(String, Tensor)> = named
        .iter()
        .filter(|(n, _)| !OUTPUTS.contains(&n.as_str()))
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    assert!(net.load_named(&weights, "golden").unwrap(), "the head must load");

    let input = get("input");
    let plain = tch::no_grad(|| net.forward(&input));
    let d_restored = max_diff(&plain.image, &get("restored"));
    let d_logits = max_diff(plain.logits.as_ref().unwrap(), &get("logits"));
    let mask = PatchMask::from_grid(get("grid"), 16);
    let masked = tch::no_grad(|| net.forward_masked(&input, &mask)).unwrap();
    let d_reconstruction = max_diff(&masked.image, &get("reconstruction"));
    let d_masked_logits = max_diff(masked.logits.as_ref().unwrap(), &get("masked_logits"));
    eprintln!(
        "max |Δ|: restored {d_restored:.2e}, logits {d_logits:.2e}, reconstruction {d_reconstruction:.2e}, masked logits {d_masked_logits:.2e}"
    );
    for (what, d) in [
        ("restored", d_restored),
        ("logits", d_logits),
        ("reconstruction", d_reconstruction),
        ("masked logits", d_masked_logits),
    ] {
        assert!(d < 1e-4, "{what}: max |Δ| {d}");
    }
    // The mask matters: an all-visible grid gives a different reconstruction.
    let open = PatchMask::from_grid(get("grid").ones_like(), 16);
    let unmasked = tch::no_grad(|| net.forward_masked(&input, &open)).unwrap();
    assert!(max_diff(&unmasked.image, &get("reconstruction")) > 1e-3);
}
