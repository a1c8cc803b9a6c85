//! Weight rewrites the fused NAFBlock implies, shared by every backend that prepares weights:
//! a branch's per-channel scale (β after conv3, γ after conv5) folded into the 1×1 conv that
//! produces the branch, so `scale · (W·x + b) = (scale·W)·x + scale·b`.

/// Multiplies row `o` of the row-major `weight` (`scale.len()` rows) and `bias[o]` by
/// `scale[o]`.
pub fn fold_branch_scale(weight: &mut [f32], bias: &mut [f32], scale: &[f32]) {
    let cols = weight.len() / scale.len();
    for ((row, b), s) in weight.chunks_exact_mut(cols).zip(bias.iter_mut()).zip(scale) {
        row.iter_mut().for_each(|v| *v *= s);
        *b *= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_and_its_bias_take_their_scale() {
        let (mut w, mut b) = (vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![1.0, 1.0]);
        fold_branch_scale(&mut w, &mut b, &[2.0, -1.0]);
        assert_eq!(w, [2.0, 4.0, 6.0, -4.0, -5.0, -6.0]);
        assert_eq!(b, [2.0, -1.0]);
    }
}
