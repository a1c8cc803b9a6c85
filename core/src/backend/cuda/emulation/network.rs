//! The network kernels (`kernels.cu`) against plain references of what each one computes, in
//! both storage precisions, over the launch grids `instance.rs` uses, at sizes that leave
//! partial blocks, channel groups past a block and several images. References compute in f64
//! from the stored (rounded) inputs; a kernel passes within f32 accumulation error, and in
//! FP16 within the rounding of its stored output.

use std::cmp::Ordering;

use half::f16;

use super::{Emulated, dims, random_bytes};
use crate::backend::cuda::depthwise::{Depthwise, pool_sum_grid};
use crate::backend::cuda::instance::{
    attention_grid, grid_for, norm_conv1_splits, norm_gate_splits, tile_grid, window_stretch, windows_grid,
};
use crate::backend::cuda::weights::Element;
use crate::tlc::window_start;

/// Images, height, width and (gated) channels of one case.
#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
}

const CASES: [Case; 5] = [
    Case { n: 2, h: 5, w: 7, c: 8 },
    Case { n: 1, h: 6, w: 2, c: 16 },
    Case { n: 1, h: 9, w: 17, c: 24 },
    Case { n: 2, h: 3, w: 4, c: 72 },
    Case { n: 1, h: 9, w: 17, c: 264 },
];

type Dims = *const u32;
type ConvIn<T> = unsafe extern "C" fn(Dims, *const f32, *const f32, *const f32, *mut T, i32, i32, i32, i32) -> i32;
type ConvOut<T> =
    unsafe extern "C" fn(Dims, *const T, *const f32, *const f32, *const f32, *mut f32, i32, i32, i32, i32) -> i32;
type LayerNorm<T> = unsafe extern "C" fn(Dims, *const T, *const f32, *const f32, *mut T, i64, i32, f32) -> i32;
type DwGatePool<T> =
    unsafe extern "C" fn(Dims, *const T, *const f32, *const f32, *mut T, *mut f32, i32, i32, i32) -> i32;
type PoolSum = unsafe extern "C" fn(Dims, *const f32, *mut f32, i32, i64) -> i32;
type ScaVector = unsafe extern "C" fn(Dims, *const f32, *const f32, *const f32, *mut f32, i32, i32, f32) -> i32;
type AttentionWeights<T> =
    unsafe extern "C" fn(Dims, *const f32, *const f32, *const f32, *const T, *mut T, i32, f32) -> i32;
type Gate<T> = unsafe extern "C" fn(Dims, *const T, *mut T, i64, i32) -> i32;
type Ffn = unsafe extern "C" fn(
    Dims,
    *mut f16,
    *const f32,
    *const f32,
    *const f16,
    *const f16,
    *const f16,
    *const f16,
    i64,
    i32,
    f32,
) -> i32;
type AttendFfn = unsafe extern "C" fn(
    Dims,
    *mut f16,
    *const f16,
    *const f32,
    *const f16,
    *const f16,
    i64,
    *const f32,
    *const f32,
    *const f16,
    *const f16,
    *const f16,
    *const f16,
    i64,
    i32,
    f32,
) -> i32;
/// `norm_conv1` and `norm_gate`: x, γ, β, weight, bias, output, pixels, channels, eps.
type NormProduct = unsafe extern "C" fn(
    Dims,
    *const f16,
    *const f32,
    *const f32,
    *const f16,
    *const f16,
    *mut f16,
    i64,
    i32,
    f32,
) -> i32;
type ShuffleAdd<T> = unsafe extern "C" fn(Dims, *const T, *mut T, i32, i32, i32, i32) -> i32;
type WindowRowSums<T> = unsafe extern "C" fn(Dims, *const T, *mut f32, i32, i32, i32, i32, i32, i32) -> i32;
type WindowMeans<T> = unsafe extern "C" fn(Dims, *const f32, *mut T, i32, i32, i32, i32, i32, i32, i32) -> i32;
type Multiply<T> = unsafe extern "C" fn(Dims, *mut T, *const T, i64) -> i32;

/// Values in [-scale, scale) from two random bytes each.
fn values(len: usize, scale: f32, byte: &mut impl FnMut() -> u8) -> Vec<f32> {
    (0..len).map(|_| (f32::from(u16::from_le_bytes([byte(), byte()])) / 32768.0 - 1.0) * scale).collect()
}

fn stored<T: Element>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&x| T::from_f32(x)).collect()
}

fn loaded<T: Element>(v: &[T]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn i32_of(v: usize) -> i32 {
    i32::try_from(v).unwrap()
}

/// Asserts `got` is within `tol · max(1, |want|)` of `want` everywhere.
fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<_> = got
        .iter()
        .zip(want)
        .enumerate()
        // NaN fails too.
        .filter(|&(_, (&g, &w))| {
            (f64::from(g) - w).abs().partial_cmp(&(tol * w.abs().max(1.0))) != Some(Ordering::Less)
        })
        .collect();
    if let Some(&(i, (g, w))) = bad.first() {
        panic!("{what}: {} of {} values off, first at {i}: got {g}, want {w}", bad.len(), got.len());
    }
}

/// Tolerance of a kernel's stored output: f32 accumulation, or one FP16 rounding on top.
fn tolerance<T: Element>() -> f64 {
    if size_of::<T>() == 2 { 1.0e-3 } else { 1.0e-5 }
}

fn conv_in<T: Element>(k: &Emulated, Case { n, h, w, c }: Case, byte: &mut impl FnMut() -> u8) {
    let cout = c;
    let img = values(n * 3 * h * w, 1.0, byte);
    let weight = values(27 * cout, 0.5, byte);
    let bias = values(cout, 0.5, byte);
    let mut out = vec![T::default(); n * h * w * cout];
    let grid = dims(&grid_for(n * h * w * cout / 8).unwrap());
    // SAFETY: driver.cpp's signature; every buffer holds what the kernel indexes.
    let f = unsafe { k.entry::<ConvIn<T>>("conv_in") };
    let diverged = unsafe {
        f(
            grid.as_ptr(),
            img.as_ptr(),
            weight.as_ptr(),
            bias.as_ptr(),
            out.as_mut_ptr(),
            i32_of(n),
            i32_of(h),
            i32_of(w),
            i32_of(cout),
        )
    };
    assert_eq!(diverged, 0);
    let mut want = vec![0f64; out.len()];
    for im in 0..n {
        for y in 0..h {
            for x in 0..w {
                for co in 0..cout {
                    let mut acc = f64::from(bias[co]);
                    for ci in 0..3 {
                        for (tap, (yy, xx)) in neighbours(y, x, h, w) {
                            acc +=
                                f64::from(weight[(ci * 9 + tap) * cout + co] * img[((im * 3 + ci) * h + yy) * w + xx]);
                        }
                    }
                    want[((im * h + y) * w + x) * cout + co] = acc;
                }
            }
        }
    }
    assert_close("conv_in", &loaded(&out), &want, tolerance::<T>());
}

/// The in-image neighbours of (y, x) in a 3×3 window with their tap (ky·3 + kx).
fn neighbours(y: usize, x: usize, h: usize, w: usize) -> impl Iterator<Item = (usize, (usize, usize))> {
    (0..9).filter_map(move |tap| {
        let yy = (y + tap / 3).checked_sub(1).filter(|&v| v < h)?;
        let xx = (x + tap % 3).checked_sub(1).filter(|&v| v < w)?;
        Some((tap, (yy, xx)))
    })
}

fn conv_out<T: Element>(k: &Emulated, Case { n, h, w, c }: Case, byte: &mut impl FnMut() -> u8) {
    let cin = c;
    let x = stored::<T>(&values(n * h * w * cin, 2.0, byte));
    let weight = values(9 * cin * 3, 0.5, byte);
    let bias = values(3, 0.5, byte);
    let residual = values(n * 3 * h * w, 1.0, byte);
    let mut out = vec![f32::NAN; residual.len()];
    let grid = dims(&grid_for(n * h * w).unwrap());
    // SAFETY: as in conv_in.
    let f = unsafe { k.entry::<ConvOut<T>>("conv_out") };
    let diverged = unsafe {
        f(
            grid.as_ptr(),
            x.as_ptr(),
            weight.as_ptr(),
            bias.as_ptr(),
            residual.as_ptr(),
            out.as_mut_ptr(),
            i32_of(n),
            i32_of(h),
            i32_of(w),
            i32_of(cin),
        )
    };
    assert_eq!(diverged, 0);
    let x = loaded(&x);
    let mut want = vec![0f64; out.len()];
    for im in 0..n {
        for y in 0..h {
            for xq in 0..w {
                for co in 0..3 {
                    let mut acc = f64::from(bias[co]);
                    for (tap, (yy, xx)) in neighbours(y, xq, h, w) {
                        for ci in 0..cin {
                            acc +=
                                f64::from(weight[(tap * cin + ci) * 3 + co] * x[((im * h + yy) * w + xx) * cin + ci]);
                        }
                    }
                    let o = ((im * 3 + co) * h + y) * w + xq;
                    want[o] = acc + f64::from(residual[o]);
                }
            }
        }
    }
    // Up to 9 · 264 products summed in f32, in another order than the reference's.
    assert_close("conv_out", &out, &want, 1.0e-4);
}

/// LayerNorm of one pixel's channels in f64 (biased variance), affine.
fn normalized(row: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f64> {
    let c = row.len() as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / c;
    let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / c;
    let rstd = 1.0 / (var + f64::from(eps)).sqrt();
    row.iter()
        .zip(gamma.iter().zip(beta))
        .map(|(&v, (&g, &b))| (f64::from(v) - mean) * rstd * f64::from(g) + f64::from(b))
        .collect()
}

/// `w · v + bias` for every row of the row-major matrix `w` ([bias.len()][v.len()]).
fn product(w: &[f32], bias: &[f32], v: &[f64]) -> Vec<f64> {
    w.chunks(v.len())
        .zip(bias)
        .map(|(row, &b)| row.iter().zip(v).map(|(&wi, &vi)| f64::from(wi) * vi).sum::<f64>() + f64::from(b))
        .collect()
}

fn layer_norm<T: Element>(k: &Emulated, Case { n, h, w, c }: Case, byte: &mut impl FnMut() -> u8) {
    let p = n * h * w;
    // Large activations with a large common offset: f32 statistics in two passes hold them.
    let x: Vec<f32> = values(p * c, 40.0, byte).iter().map(|v| v + 1000.0).collect();
    let x = stored::<T>(&x);
    let gamma = values(c, 2.0, byte);
    let beta = values(c, 1.0, byte);
    let eps = 1.0e-6;
    let want: Vec<f64> = loaded(&x).chunks(c).flat_map(|row| normalized(row, &gamma, &beta, eps)).collect();
    for (name, lanes) in [("layer_norm", 8), ("layer_norm_wide", 32)] {
        // A guard pixel past the output, which no lane may write.
        let guard = T::from_f32(-7.0);
        let mut y = vec![guard; (p + 1) * c];
        let grid = dims(&grid_for(p * lanes).unwrap());
        // SAFETY: as in conv_in.
        let f = unsafe { k.entry::<LayerNorm<T>>(name) };
        let diverged = unsafe {
            f(grid.as_ptr(), x.as_ptr(), gamma.as_ptr(), beta.as_ptr(), y.as_mut_ptr(), p as i64, i32_of(c), eps)
        };
        assert_eq!(diverged, 0, "a shuffle of {name} diverged");
        assert!(guard_intact(&mut y, p * c, -7.0), "{name} wrote past its output");
        // Normalised values are O(1) over an offset of 1000: f32 statistics lose ~1e-4 of them.
        assert_close(name, &loaded(&y), &want, tolerance::<T>().max(2.0e-4));
    }
}

/// Every depthwise kernel (the engine times them and keeps the fastest): each against the
/// reference, and the others bit for bit against `dw_gate_pool`.
fn dw_gate_pool<T: Element>(k: &Emulated, Case { n, h, w, c }: Case, byte: &mut impl FnMut() -> u8) {
    let hw = h * w;
    let t = stored::<T>(&values(n * hw * 2 * c, 1.0, byte));
    let weight = values(9 * 2 * c, 0.5, byte);
    let bias = values(2 * c, 0.5, byte);
    let loaded_t = loaded(&t);
    let mut want = vec![0f64; n * hw * c];
    let mut want_pool = vec![0f64; n * c];
    for im in 0..n {
        for y in 0..h {
            for x in 0..w {
                for kk in 0..c {
                    let [mut a, mut b] = [f64::from(bias[kk]), f64::from(bias[c + kk])];
                    for (tap, (yy, xx)) in neighbours(y, x, h, w) {
                        let q = ((im * h + yy) * w + xx) * 2 * c;
                        a += f64::from(weight[tap * 2 * c + kk] * loaded_t[q + kk]);
                        b += f64::from(weight[tap * 2 * c + c + kk] * loaded_t[q + c + kk]);
                    }
                    want[((im * h + y) * w + x) * c + kk] = a * b;
                    want_pool[im * c + kk] += a * b;
                }
            }
        }
    }
    let mut outputs = Vec::new();
    for d in Depthwise::ALL {
        let name = d.name();
        // A guard band past the output, which no thread may write; the per-block sums start
        // as NaN, so one left unwritten poisons its channel's total.
        let guard = T::from_f32(-7.0);
        let mut g = vec![guard; n * hw * c + 8 * c];
        let blocks = d.partials(c, (h, w));
        let mut partials = vec![f32::NAN; n * c * blocks];
        let grid = dims(&d.grid(c, (h, w), n).unwrap());
        // SAFETY: as in conv_in.
        let f = unsafe { k.entry::<DwGatePool<T>>(name) };
        let diverged = unsafe {
            f(
                grid.as_ptr(),
                t.as_ptr(),
                weight.as_ptr(),
                bias.as_ptr(),
                g.as_mut_ptr(),
                partials.as_mut_ptr(),
                i32_of(h),
                i32_of(w),
                i32_of(c),
            )
        };
        assert_eq!(diverged, 0);
        assert!(guard_intact(&mut g, n * hw * c, -7.0), "{name} wrote past its output");
        let g = loaded(&g);
        assert_close(&format!("{name} output"), &g, &want, tolerance::<T>());
        let pool = pool_sum(k, &partials, blocks, n * c);
        // The sums add unrounded products in f32 over up to a few hundred pixels.
        assert_close(&format!("{name} channel sums"), &pool, &want_pool, 1.0e-5 * hw as f64);
        outputs.push(g);
    }
    for (other, d) in outputs[1..].iter().zip(&Depthwise::ALL[1..]) {
        let differ = outputs[0].iter().zip(other).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{} differs from dw_gate_pool in {differ} values", d.name());
    }
}

/// `pool_sum` over `partials` ([channels][blocks]) as the engine launches it.
fn pool_sum(k: &Emulated, partials: &[f32], blocks: usize, channels: usize) -> Vec<f32> {
    let mut pool = vec![f32::NAN; channels];
    let grid = dims(&pool_sum_grid(channels).unwrap());
    // SAFETY: as in conv_in.
    let f = unsafe { k.entry::<PoolSum>("pool_sum") };
    let diverged = unsafe { f(grid.as_ptr(), partials.as_ptr(), pool.as_mut_ptr(), i32_of(blocks), channels as i64) };
    assert_eq!(diverged, 0);
    pool
}

/// `pool_sum` with more partial sums than its block has threads (each thread adds a stride).
fn pool_sum_strides(k: &Emulated, byte: &mut impl FnMut() -> u8) {
    for (blocks, channels) in [(1, 4), (255, 2), (600, 3), (2049, 1)] {
        let partials = values(blocks * channels, 10.0, byte);
        let want: Vec<f64> = partials.chunks(blocks).map(|row| row.iter().map(|&v| f64::from(v)).sum()).collect();
        assert_close("pool_sum", &pool_sum(k, &partials, blocks, channels), &want, 1.0e-6 * blocks as f64);
    }
}

/// `sca_vector` over `pool` ([n][c] channel sums) as the engine launches it.
fn attention_vector(
    k: &Emulated,
    pool: &[f32],
    (weight, bias): (&[f32], &[f32]),
    n: usize,
    c: usize,
    inv_hw: f32,
) -> Vec<f32> {
    let mut s = vec![f32::NAN; n * c];
    let grid = dims(&grid_for(n * c * 32).unwrap());
    // SAFETY: as in conv_in.
    let f = unsafe { k.entry::<ScaVector>("sca_vector") };
    let diverged = unsafe {
        f(grid.as_ptr(), pool.as_ptr(), weight.as_ptr(), bias.as_ptr(), s.as_mut_ptr(), i32_of(n), i32_of(c), inv_hw)
    };
    assert_eq!(diverged, 0, "a shuffle of the attention vector diverged");
    s
}

/// Random channel sums of `n` images and the attention's 1×1 conv (weight, bias) for `c`
/// channels: what `sca_vector` and `attention_weights` read.
fn attention_inputs(n: usize, c: usize, byte: &mut impl FnMut() -> u8) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (values(n * c, 50.0, byte), values(c * c, 0.5, byte), values(c, 0.5, byte))
}

fn sca_vector(k: &Emulated, Case { n, h, w, c }: Case, byte: &mut impl FnMut() -> u8) {
    let (pool, weight, bias) = attention_inputs(n, c, byte);
    let inv_hw = 1.0 / (h * w) as f32;
    let s = attention_vector(k, &pool, (&weight, &bias), n, c, inv_hw);
    let want: Vec<f64> = (0..n * c)
        .map(|idx| {
            let (im, o) = (idx / c, idx % c);
            let dot: f64 = (0..c).map(|i| f64::from(weight[o * c + i]) * f64::from(pool[im * c + i])).sum();
            f64::from(bias[o]) + dot * f64::from(inv_hw)
        })
        .collect();
    assert_close("sca_vector", &s, &want, 1.0e-5);
}

/// `attention_weights`: conv3's weights times `sca_vector`'s attention values, bit for bit
/// (the product rounded once to the storage type).
fn attention_weights<T: Element>(k: &Emulated, Case { n, h, w, c }: Case, byte: &mut impl FnMut() -> u8) {
    let (pool, weight, bias) = attention_inputs(n, c, byte);
    let w3 = stored::<T>(&values(c * c, 1.0, byte));
    let inv_hw = 1.0 / (h * w) as f32;
    let mut out = vec![T::default(); n * c * c];
    let grid = dims(&attention_grid(c, n).unwrap());
    // SAFETY: as in conv_in.
    let f = unsafe { k.entry::<AttentionWeights<T>>("attention_weights") };
    let diverged = unsafe {
        f(
            grid.as_ptr(),
            pool.as_ptr(),
            weight.as_ptr(),
            bias.as_ptr(),
            w3.as_ptr(),
            out.as_mut_ptr(),
            i32_of(c),
            inv_hw,
        )
    };
    assert_eq!(diverged, 0, "a shuffle of the attention weights diverged");
    let s = attention_vector(k, &pool, (&weight, &bias), n, c, inv_hw);
    let want: Vec<T> =
        (0..n * c * c).map(|idx| T::from_f32(w3[idx % (c * c)].to_f32() * s[idx / (c * c) * c + idx % c])).collect();
    let differ = out.iter().zip(&want).filter(|(a, b)| a.to_f32().to_bits() != b.to_f32().to_bits()).count();
    assert_eq!(
        differ,
        0,
        "attention_weights differs from sca_vector's values times the weights in {differ} of {}",
        want.len()
    );
}

fn gate<T: Element>(k: &Emulated, Case { n, h, w, c }: Case, byte: &mut impl FnMut() -> u8) {
    let p = n * h * w;
    let t = stored::<T>(&values(p * 2 * c, 3.0, byte));
    let mut g = vec![T::default(); p * c];
    let grid = dims(&grid_for(p * c / 8).unwrap());
    // SAFETY: as in conv_in.
    let f = unsafe { k.entry::<Gate<T>>("gate") };
    let diverged = unsafe { f(grid.as_ptr(), t.as_ptr(), g.as_mut_ptr(), p as i64, i32_of(c)) };
    assert_eq!(diverged, 0);
    let t = loaded(&t);
    let want: Vec<f64> = (0..p * c)
        .map(|idx| f64::from(t[idx / c * 2 * c + idx % c]) * f64::from(t[idx / c * 2 * c + c + idx % c]))
        .collect();
    assert_close("gate", &loaded(&g), &want, tolerance::<T>());
}

/// Cuts the guard band past the first `len` values off `out`; whether every guard value is
/// still `guard` (no thread wrote past the output).
fn guard_intact<T: Element>(out: &mut Vec<T>, len: usize, guard: f32) -> bool {
    out.split_off(len).iter().all(|v| v.to_f32() == guard)
}

/// Rounds to FP16 and back.
fn half_rounded(v: f64) -> f64 {
    f64::from(f16::from_f64(v).to_f32())
}

/// LayerNorm of one pixel's channels then the product `w · normed + bias`, the normalised
/// values rounded to FP16 as the launches store them (the fused kernels' first steps).
fn normed_product(row: &[f32], (gamma, beta): (&[f32], &[f32]), eps: f32, w: &[f32], bias: &[f32]) -> Vec<f64> {
    let normed: Vec<f64> = normalized(row, gamma, beta, eps).into_iter().map(half_rounded).collect();
    product(w, bias, &normed)
}

/// SimpleGate of a 2c-channel product, each of its values rounded to FP16 first as a stored
/// product would be (the gate's own products unrounded).
fn gated_halves(y: &[f64]) -> Vec<f64> {
    let y: Vec<f64> = y.iter().map(|&v| half_rounded(v)).collect();
    let (a, b) = y.split_at(y.len() / 2);
    a.iter().zip(b).map(|(a, b)| a * b).collect()
}

/// The fused second half of a block (FP16 only): `ffn` (the feed-forward half) and, with
/// `attention`, `attend_ffn` (conv3 of the gated features scaled per image first), against
/// references that round to FP16 where the launches store (the scaled features, x after conv3,
/// the normalised input, conv4's outputs, the gated features), with a guard band past the
/// feature map that no thread may write.
fn second_half(k: &Emulated, Case { n, h, w, c }: Case, attention: bool, byte: &mut impl FnMut() -> u8) {
    let (hw, p) = (h * w, n * h * w);
    let scale = 2.0 / (c as f32).sqrt();
    let x0: Vec<f32> = values(p * c, 4.0, byte).iter().map(|v| v + 50.0).collect();
    let x0 = stored::<f16>(&x0);
    let g = stored::<f16>(&values(p * c, 2.0, byte));
    let s = values(n * c, 1.5, byte);
    let w3 = stored::<f16>(&values(c * c, scale, byte));
    let b3 = stored::<f16>(&values(c, 0.5, byte));
    let (gamma, beta) = (values(c, 2.0, byte), values(c, 1.0, byte));
    let w4 = stored::<f16>(&values(2 * c * c, scale, byte));
    let b4 = stored::<f16>(&values(2 * c, 0.5, byte));
    let w5 = stored::<f16>(&values(c * c, scale, byte));
    let b5 = stored::<f16>(&values(c, 0.5, byte));
    let guard = f16::from_f32(-7.0);
    let mut x = x0.clone();
    x.extend(std::iter::repeat_n(guard, 8 * c));
    let eps = 1.0e-6;
    let grid = dims(&tile_grid(c, 2, p, 1).unwrap());
    let name = if attention { "attend_ffn" } else { "ffn" };
    // SAFETY: as in conv_in.
    let diverged = unsafe {
        if attention {
            k.entry::<AttendFfn>("attend_ffn")(
                grid.as_ptr(),
                x.as_mut_ptr(),
                g.as_ptr(),
                s.as_ptr(),
                w3.as_ptr(),
                b3.as_ptr(),
                hw as i64,
                gamma.as_ptr(),
                beta.as_ptr(),
                w4.as_ptr(),
                b4.as_ptr(),
                w5.as_ptr(),
                b5.as_ptr(),
                p as i64,
                i32_of(c),
                eps,
            )
        } else {
            k.entry::<Ffn>("ffn")(
                grid.as_ptr(),
                x.as_mut_ptr(),
                gamma.as_ptr(),
                beta.as_ptr(),
                w4.as_ptr(),
                b4.as_ptr(),
                w5.as_ptr(),
                b5.as_ptr(),
                p as i64,
                i32_of(c),
                eps,
            )
        }
    };
    assert_eq!(diverged, 0, "{name} diverged or overran its shared memory");
    assert!(guard_intact(&mut x, p * c, guard.to_f32()), "{name} wrote past the feature map");
    let (x0, g, w3, b3) = (loaded(&x0), loaded(&g), loaded(&w3), loaded(&b3));
    let (w4, b4, w5, b5) = (loaded(&w4), loaded(&b4), loaded(&w5), loaded(&b5));
    let mut want = Vec::with_capacity(p * c);
    for (q, (row, g)) in x0.chunks(c).zip(g.chunks(c)).enumerate() {
        let row: Vec<f32> = if attention {
            let s = &s[q / hw * c..][..c];
            let scaled: Vec<f64> = g.iter().zip(s).map(|(&g, &s)| half_rounded(f64::from(g * s))).collect();
            let conv3 = product(&w3, &b3, &scaled);
            conv3.iter().zip(row).map(|(y, &x)| half_rounded(y + f64::from(x)) as f32).collect()
        } else {
            row.to_vec()
        };
        let conv4 = normed_product(&row, (&gamma, &beta), eps, &w4, &b4);
        let gated: Vec<f64> = gated_halves(&conv4).into_iter().map(half_rounded).collect();
        want.extend(product(&w5, &b5, &gated).iter().zip(&row).map(|(y, &x)| y + f64::from(x)));
    }
    // One FP16 rounding of the output, and f32 sums whose rounding can tip an intermediate
    // half rounding the other way.
    assert_close(name, &loaded(&x), &want, 2.0e-3);
}

/// LayerNorm then a product of c → 2c channels in one kernel (FP16 only): `norm_conv1` (the
/// product itself) or, with `gate`, `norm_gate` (SimpleGate of the product's halves, each
/// rounded to FP16 first as a stored product would be), against a reference that rounds the
/// normalised input to FP16 as the launches store it, with a guard band past the output;
/// unsplit and split over blocks as the engine may launch it, the same bits either way.
fn norm_product(k: &Emulated, Case { n, h, w, c }: Case, gate: bool, byte: &mut impl FnMut() -> u8) {
    let (name, splits, out_c) =
        if gate { ("norm_gate", norm_gate_splits(c), c) } else { ("norm_conv1", norm_conv1_splits(c), 2 * c) };
    let p = n * h * w;
    let x: Vec<f32> = values(p * c, 4.0, byte).iter().map(|v| v - 30.0).collect();
    let x = stored::<f16>(&x);
    let (gamma, beta) = (values(c, 2.0, byte), values(c, 1.0, byte));
    let weight = stored::<f16>(&values(2 * c * c, 2.0 / (c as f32).sqrt(), byte));
    let bias = stored::<f16>(&values(2 * c, 0.5, byte));
    let guard = f16::from_f32(-7.0);
    let eps = 1.0e-6;
    let (weight_loaded, bias_loaded) = (loaded(&weight), loaded(&bias));
    let want: Vec<f64> = loaded(&x)
        .chunks(c)
        .flat_map(|row| {
            let y = normed_product(row, (&gamma, &beta), eps, &weight_loaded, &bias_loaded);
            if gate { gated_halves(&y) } else { y }
        })
        .collect();
    let mut outputs = Vec::new();
    for splits in [1, splits] {
        let mut out = vec![guard; p * out_c + 16 * c];
        let grid = dims(&tile_grid(c, 1, p, splits).unwrap());
        // SAFETY: as in conv_in.
        let f = unsafe { k.entry::<NormProduct>(name) };
        let diverged = unsafe {
            f(
                grid.as_ptr(),
                x.as_ptr(),
                gamma.as_ptr(),
                beta.as_ptr(),
                weight.as_ptr(),
                bias.as_ptr(),
                out.as_mut_ptr(),
                p as i64,
                i32_of(c),
                eps,
            )
        };
        assert_eq!(diverged, 0, "{name} diverged or overran its shared memory");
        assert!(guard_intact(&mut out, p * out_c, guard.to_f32()), "{name} in {splits} splits wrote past its output");
        let out = loaded(&out);
        assert_close(&format!("{name} in {splits} splits"), &out, &want, 2.0e-3);
        outputs.push(out);
    }
    assert!(outputs[0].iter().zip(&outputs[1]).all(|(a, b)| a.to_bits() == b.to_bits()), "splits change {name}");
}

fn shuffle_add<T: Element>(k: &Emulated, Case { n, h, w, c }: Case, byte: &mut impl FnMut() -> u8) {
    let t = stored::<T>(&values(n * h * w * 4 * c, 1.0, byte));
    let skip = stored::<T>(&values(n * 4 * h * w * c, 1.0, byte));
    let mut out = skip.clone();
    let grid = dims(&grid_for(n * h * w * c / 8).unwrap());
    // SAFETY: as in conv_in.
    let f = unsafe { k.entry::<ShuffleAdd<T>>("shuffle_add") };
    let diverged =
        unsafe { f(grid.as_ptr(), t.as_ptr(), out.as_mut_ptr(), i32_of(n), i32_of(h), i32_of(w), i32_of(c)) };
    assert_eq!(diverged, 0);
    let (t, skip) = (loaded(&t), loaded(&skip));
    let mut want: Vec<f64> = skip.iter().map(|&v| f64::from(v)).collect();
    for im in 0..n {
        for y in 0..h {
            for x in 0..w {
                for kk in 0..c {
                    for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let from = ((im * h + y) * w + x) * 4 * c + 4 * kk + 2 * i + j;
                        want[((im * 2 * h + 2 * y + i) * 2 * w + 2 * x + j) * c + kk] += f64::from(t[from]);
                    }
                }
            }
        }
    }
    assert_close("shuffle_add", &loaded(&out), &want, tolerance::<T>());
}

/// `window_row_sums` then `window_means` (TLC's window means) against the means of every
/// pixel's window, for windows from one pixel to the whole side and for stretches that cover a
/// side at once (the engine's, on these small maps) or in several pieces; then `multiply`.
fn window_means<T: Element>(k: &Emulated, Case { n, h, w, c }: Case, byte: &mut impl FnMut() -> u8) {
    let p = n * h * w;
    let g = stored::<T>(&values(p * c, 4.0, byte));
    let loaded_g = loaded(&g);
    // SAFETY: as in conv_in.
    let (rows_pass, cols_pass) =
        unsafe { (k.entry::<WindowRowSums<T>>("window_row_sums"), k.entry::<WindowMeans<T>>("window_means")) };
    for (rows, cols) in [(1, 1), (h, w), (h.div_ceil(2), 2.min(w)), (2.min(h), w - w / 3)] {
        let want: Vec<f64> = (0..p * c)
            .map(|idx| {
                let (ch, pixel) = (idx % c, idx / c);
                let (x, y, im) = (pixel % w, pixel / w % h, pixel / (w * h));
                let (y0, x0) = (window_start(y, rows, h), window_start(x, cols, w));
                let sum: f64 = (y0..y0 + rows)
                    .flat_map(|yy| (x0..x0 + cols).map(move |xx| ((im * h + yy) * w + xx) * c + ch))
                    .map(|i| f64::from(loaded_g[i]))
                    .sum();
                sum / (rows * cols) as f64
            })
            .collect();
        let [ni, hi, wi, ci] = [n, h, w, c].map(i32_of);
        for (row_seg, col_seg) in [(window_stretch(cols), window_stretch(rows)), (2, 3), (1, 1)] {
            let guard = 7.0;
            let mut sums = vec![guard; p * c + 8];
            let mut means = vec![T::from_f32(guard); p * c + 8];
            let grid = dims(&windows_grid((n, h, w, c), w, row_seg).unwrap());
            let (k, seg) = (i32_of(cols), i32_of(row_seg));
            // SAFETY: as in conv_in.
            let diverged = unsafe { rows_pass(grid.as_ptr(), g.as_ptr(), sums.as_mut_ptr(), ni, hi, wi, ci, k, seg) };
            assert_eq!(diverged, 0);
            assert!(sums.split_off(p * c).iter().all(|&v| v == guard), "window_row_sums wrote past its output");
            let grid = dims(&windows_grid((n, h, w, c), h, col_seg).unwrap());
            let (k, seg, area) = (i32_of(rows), i32_of(col_seg), i32_of(rows * cols));
            // SAFETY: as in conv_in.
            let diverged =
                unsafe { cols_pass(grid.as_ptr(), sums.as_ptr(), means.as_mut_ptr(), ni, hi, wi, ci, k, seg, area) };
            assert_eq!(diverged, 0);
            assert!(guard_intact(&mut means, p * c, guard), "window_means wrote past its output");
            let what = format!("window_means {rows}×{cols} in stretches of {row_seg} and {col_seg}");
            assert_close(&what, &loaded(&means), &want, tolerance::<T>());
        }
    }
    let s = stored::<T>(&values(p * c, 2.0, byte));
    let mut x = g.clone();
    // SAFETY: as in conv_in.
    let f = unsafe { k.entry::<Multiply<T>>("multiply") };
    let diverged =
        unsafe { f(dims(&grid_for(p * c / 8).unwrap()).as_ptr(), x.as_mut_ptr(), s.as_ptr(), (p * c) as i64) };
    assert_eq!(diverged, 0);
    let want: Vec<f64> = loaded_g.iter().zip(loaded(&s)).map(|(&a, b)| f64::from(a) * f64::from(b)).collect();
    assert_close("multiply", &loaded(&x), &want, tolerance::<T>());
}

fn every_kernel<T: Element>(fp16: bool) {
    let Some(kernels) = Emulated::get(fp16) else { return };
    let mut byte = random_bytes(11);
    pool_sum_strides(&kernels, &mut byte);
    for case in CASES {
        eprintln!("fp16 {fp16}: {case:?}");
        conv_in::<T>(&kernels, case, &mut byte);
        conv_out::<T>(&kernels, case, &mut byte);
        layer_norm::<T>(&kernels, case, &mut byte);
        dw_gate_pool::<T>(&kernels, case, &mut byte);
        sca_vector(&kernels, case, &mut byte);
        attention_weights::<T>(&kernels, case, &mut byte);
        gate::<T>(&kernels, case, &mut byte);
        shuffle_add::<T>(&kernels, case, &mut byte);
        window_means::<T>(&kernels, case, &mut byte);
        if fp16 {
            norm_product(&kernels, case, false, &mut byte);
            norm_product(&kernels, case, true, &mut byte);
            second_half(&kernels, case, false, &mut byte);
            second_half(&kernels, case, true, &mut byte);
        }
    }
}

#[test]
fn network_kernels_compute_their_references_in_f32() {
    every_kernel::<f32>(false);
}

#[test]
fn network_kernels_compute_their_references_in_fp16() {
    every_kernel::<f16>(true);
}
