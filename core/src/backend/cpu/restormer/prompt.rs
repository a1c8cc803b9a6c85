//! PromptIR's prompt: the learned prompts mixed by the feature's spatial mean.

use super::weights::PromptWeights;

/// `Σ_k softmax(linear(mean(x)))_k · prompt_k` (`channels × size × size`) for the
/// `features × plane` map `x` (`plane` pixels per channel).
pub fn mixed_prompt(p: &PromptWeights, x: &[f32], plane: usize) -> Vec<f32> {
    let count = p.stage.count;
    let features = p.linear.len() / count;
    let mean: Vec<f64> = x[..features * plane]
        .chunks_exact(plane)
        .map(|ch| ch.iter().map(|&v| v as f64).sum::<f64>() / plane as f64)
        .collect();
    let logits: Vec<f64> = p
        .linear
        .chunks_exact(features)
        .zip(&p.linear_bias)
        .map(|(row, &b)| row.iter().zip(&mean).map(|(&w, m)| w as f64 * m).sum::<f64>() + b as f64)
        .collect();
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    let len = p.prompts.len() / count;
    let mut mixed = vec![0.0f32; len];
    for (prompt, e) in p.prompts.chunks_exact(len).zip(&exp) {
        let weight = (e / total) as f32;
        mixed.iter_mut().zip(prompt).for_each(|(m, v)| *m += weight * v);
    }
    mixed
}
