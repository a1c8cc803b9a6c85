//! Times every class on a 128×128 crop, one thread: median over all levels × a few seeds.
//!
//! `cargo run --release -p maskdcpt-degrade --example timing`

use std::time::Instant;

use maskdcpt_degrade::{Class, Rgb, degrade};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Seeds per level.
const SEEDS: u64 = 5;

fn main() -> Result<(), maskdcpt_degrade::Error> {
    let data = (0..128 * 128 * 3).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
    let img = Rgb::new(128, 128, data)?;
    println!("{:<28} {:>8} {:>8} {:>8}", "class (128x128, 1 thread)", "median", "max", "levels");
    for class in Class::ALL {
        let mut times = Vec::new();
        for level in 0..class.level_count() {
            for seed in 0..SEEDS {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let start = Instant::now();
                std::hint::black_box(degrade(&img, class, level, &mut rng)?);
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
        println!("{:<28} {median:>6.2}ms {max:>6.2}ms {:>8}", class.id(), class.level_count());
    }
    Ok(())
}
