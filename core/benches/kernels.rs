//! Criterion benches of the CPU kernels at the shapes of the released MaskDCPT NAFNet
//! (width 64) on a 256×256 input: level 0 (64 ch, 256²) and level 3 (512 ch, 32²).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use maskdcpt_core::backend::cpu::kernels::conv::{Band, conv3x3, depthwise_gate};
use maskdcpt_core::backend::cpu::kernels::layernorm::layer_norm_stats;
use maskdcpt_core::backend::cpu::kernels::matmul::{
    Epilogue, MatMut, MatRef, MatmulPrecision, PackedLhs, bf16_supported, matmul,
};

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i as f32) * 0.618).sin()).collect()
}

/// (channels, side) of the two levels benchmarked.
const LEVELS: [(usize, usize); 2] = [(64, 256), (512, 32)];

fn bench_matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv1x1_c_to_2c");
    let precisions: &[MatmulPrecision] =
        if bf16_supported() { &[MatmulPrecision::F32, MatmulPrecision::Bf16] } else { &[MatmulPrecision::F32] };
    for (ch, side) in LEVELS {
        let n = side * side;
        let (w, x, bias) = (values(2 * ch * ch), values(ch * n), values(2 * ch));
        let mut out = vec![0.0; 2 * ch * n];
        // Elements = floating-point operations, so criterion's rate reads as FLOP/s.
        group.throughput(Throughput::Elements((2 * 2 * ch * ch * n) as u64));
        for &precision in precisions {
            let packed = PackedLhs::new(&w, 2 * ch, ch, precision).unwrap();
            let e = Epilogue { bias: Some(&bias), ..Default::default() };
            group.bench_function(format!("{precision:?}_{ch}ch_{side}px"), |b| {
                b.iter(|| {
                    matmul(
                        MatMut { data: &mut out, row_stride: n },
                        &packed,
                        MatRef { data: &x, row_stride: n },
                        n,
                        e,
                        2,
                    )
                });
            });
        }
    }
}

fn bench_depthwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("depthwise_gate");
    for (ch, side) in LEVELS {
        let (u, w, bias) = (values(2 * ch * side * side), values(2 * ch * 9), values(2 * ch));
        let mut g = vec![0.0; ch * side * side];
        group.throughput(Throughput::Elements((ch * side * side) as u64));
        group.bench_function(format!("{ch}ch_{side}px"), |b| {
            b.iter(|| {
                depthwise_gate(
                    &mut g,
                    &Band { data: &u, first: 0, rows: side, stride: side * side },
                    &w,
                    &bias,
                    ch,
                    (side, side),
                    (0, side),
                )
            });
        });
    }
}

fn bench_layer_norm(c: &mut Criterion) {
    let mut group = c.benchmark_group("layer_norm_stats");
    for (ch, side) in LEVELS {
        let n = side * side;
        let x = values(ch * n);
        group.throughput(Throughput::Elements((ch * n) as u64));
        group.bench_function(format!("{ch}ch_{side}px"), |b| b.iter(|| layer_norm_stats(&x, n, ch, n, 1e-5)));
    }
}

fn bench_conv3x3(c: &mut Criterion) {
    let (h, w) = (256, 256);
    let mut group = c.benchmark_group("conv3x3");
    for (cin, cout, name) in [(3, 64, "intro"), (64, 3, "ending")] {
        let (x, wt, bias) = (values(cin * h * w), values(cout * cin * 9), values(cout));
        let mut out = vec![0.0; cout * h * w];
        group.bench_function(name, |b| b.iter(|| conv3x3(&mut out, &x, None, &wt, &bias, (cin, cout), (h, w))));
    }
}

criterion_group!(benches, bench_matmul, bench_depthwise, bench_layer_norm, bench_conv3x3);
criterion_main!(benches);
