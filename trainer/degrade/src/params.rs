//! The parameters a degradation used: its level's values plus every random draw.

use std::collections::BTreeMap;

/// Parameters keyed `"{op}.{name}"` (e.g. `"gaussian_blur.theta"`): numbers, or text for
/// categorical draws (e.g. `"gaussian_blur.shape": "plateau_aniso"`).
pub type Params = BTreeMap<String, serde_json::Value>;

/// Writes the parameters of one step into a [`Params`] under the step's name.
pub(crate) struct Recorder<'a> {
    params: &'a mut Params,
    op: &'static str,
}

impl<'a> Recorder<'a> {
    /// Records into `params` under the prefix `op`.
    pub(crate) fn new(params: &'a mut Params, op: &'static str) -> Self {
        Self { params, op }
    }

    /// Records a number.
    pub(crate) fn num(&mut self, key: &str, value: f64) {
        self.params.insert(format!("{}.{key}", self.op), value.into());
    }

    /// Records a categorical value.
    pub(crate) fn text(&mut self, key: &str, value: &str) {
        self.params.insert(format!("{}.{key}", self.op), value.into());
    }
}
