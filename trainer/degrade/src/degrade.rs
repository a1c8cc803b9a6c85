//! Applying a class level to an image, and the record of what was applied.

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::params::Params;
use crate::{Class, Error, Rgb};

/// What one degradation did: class, level and every parameter (fixed and drawn).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Class id, e.g. `"haze"`.
    pub class: String,
    /// Class index, 0..19.
    pub class_index: usize,
    /// Level index within the class.
    pub level: usize,
    /// The level's one-line description, e.g. `"haze beta=1 airlight=0.9"`.
    pub description: String,
    /// Level parameters and random draws, keyed `"{step}.{name}"`.
    pub params: Params,
}

/// Degrades `img` with level `level` of `class`, drawing all randomness from `rng`.
/// The output has the input's size and values in [0, 1].
pub fn degrade<R: Rng + ?Sized>(img: &Rgb, class: Class, level: usize, rng: &mut R) -> Result<(Rgb, Record), Error> {
    img.validate()?;
    let chosen = class.levels().get(level).ok_or(Error::LevelOutOfRange {
        class: class.id(),
        level,
        count: class.level_count(),
    })?;
    let mut params = Params::new();
    let mut out = img.clone();
    for op in chosen.ops() {
        out = op.apply(&out, (img.width, img.height), rng, &mut params)?;
    }
    let record =
        Record { class: class.id().into(), class_index: class.index(), level, description: chosen.to_string(), params };
    Ok((out, record))
}

/// Like [`degrade`], with the level drawn uniformly from `rng` first.
pub fn degrade_random<R: Rng + ?Sized>(img: &Rgb, class: Class, rng: &mut R) -> Result<(Rgb, Record), Error> {
    let level = rng.random_range(0..class.level_count() as u32) as usize;
    degrade(img, class, level, rng)
}
