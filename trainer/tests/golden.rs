//! The tch networks against the PyTorch reference (`scripts/gen_trainer_golden.py`, whose
//! reference was checked against the official MaskDCPT modules at max |Δ| 0): restoration
//! forward, masked pre-training reconstruction, and the classification head's logits on
//! unmasked and masked features, for the head over features alone (`PromptIR_NoImg_DC`) and
//! the one that also embeds the image (`PromptIR_DC`).

use std::path::Path;

use maskdcpt_trainer::model::classifier::{ClassifierShape, DEFAULT_SPECTRUM_HIDDEN, FeatureSource};
use maskdcpt_trainer::model::mask::PatchMask;
use maskdcpt_trainer::model::nafnet::NafnetShape;
use maskdcpt_trainer::net::MaskDcptNet;
use tch::{Device, Tensor};

const OUTPUTS: [&str; 6] = ["input", "grid", "restored", "logits", "reconstruction", "masked_logits"];

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn read_golden(name: &str) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden").join(name)).unwrap()
}

fn find(named: &[(String, Tensor)], name: &str) -> Tensor {
    named.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} is missing")).1.shallow_clone()
}

fn weights(named: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    named.iter().filter(|(n, _)| !OUTPUTS.contains(&n.as_str())).map(|(n, t)| (n.clone(), t.shallow_clone())).collect()
}

/// The fixture's backbone with a head of `blocks_per_scale` 2 and 19 classes.
fn golden_net(embed_image: bool) -> MaskDcptNet {
    let shape = NafnetShape { width: 8, enc_blocks: vec![1, 1, 2], middle_blocks: 1, dec_blocks: vec![1, 1, 1] };
    let head = ClassifierShape {
        classes: 19,
        blocks_per_scale: 2,
        embed_image,
        features: FeatureSource::Decoder,
        spectrum: false,
        spectrum_hidden: DEFAULT_SPECTRUM_HIDDEN,
    };
    MaskDcptNet::new(&shape, Some(&head), Device::Cpu).unwrap()
}

#[test]
fn tch_networks_match_the_pytorch_reference() {
    let named = read_golden("trainer_masked.safetensors");
    let get = |name: &str| find(&named, name);
    let net = golden_net(false);
    assert!(net.load_named(&weights(&named), "golden").unwrap().head(), "the head must load");

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

#[test]
fn the_image_embedding_head_matches_the_pytorch_reference() {
    let backbone = read_golden("trainer_masked.safetensors");
    let head = read_golden("trainer_image_head.safetensors");
    let net = golden_net(true);
    let mut named = weights(&backbone);
    named.retain(|(n, _)| !n.starts_with("classifier."));
    named.extend(weights(&head));
    assert!(net.load_named(&named, "golden").unwrap().head(), "the head must load");
    let input = find(&backbone, "input");
    let mask = PatchMask::from_grid(find(&backbone, "grid"), 16);
    let plain = tch::no_grad(|| net.forward(&input)).logits.unwrap();
    let masked = tch::no_grad(|| net.forward_masked(&input, &mask)).unwrap().logits.unwrap();
    let (d_plain, d_masked) =
        (max_diff(&plain, &find(&head, "logits")), max_diff(&masked, &find(&head, "masked_logits")));
    eprintln!("image-embedding head, max |Δ|: logits {d_plain:.2e}, masked logits {d_masked:.2e}");
    assert!(d_plain < 1e-4 && d_masked < 1e-4, "logits {d_plain}, masked logits {d_masked}");
    // The image matters: the same features with another image give other logits.
    let c = net.classifier.as_ref().unwrap();
    let features = tch::no_grad(|| net.backbone.module.forward(&net.backbone.params, &input)).decoder_features;
    let other = tch::no_grad(|| c.module.forward(&c.params, &input.flip([3]), &features));
    assert!(max_diff(&other, &plain) > 1e-3);
}
