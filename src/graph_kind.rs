//! The five graphs of a bundle and the input and output names each one must have: the vocabulary the
//! bundle, the engines and the errors share, in a module of its own so that errors need not import bundles.

/// The graphs of a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GraphKind {
    /// Image → condition (whole-image CPEN).
    Cpen,
    /// One reverse step of the prior.
    Denoiser,
    /// Image + prior → restored image.
    Backbone,
    /// CPEN up to its global average pool (for exact tiled evaluation).
    CpenFeatures,
    /// CPEN's MLP on the pooled features.
    CpenHead,
}

impl std::fmt::Display for GraphKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl GraphKind {
    /// Every graph kind, in bundle order.
    pub const ALL: [GraphKind; 5] = [
        GraphKind::Cpen,
        GraphKind::Denoiser,
        GraphKind::Backbone,
        GraphKind::CpenFeatures,
        GraphKind::CpenHead,
    ];

    /// The graph's key in bundle.yaml.
    pub fn name(self) -> &'static str {
        match self {
            GraphKind::Cpen => "cpen",
            GraphKind::Denoiser => "denoiser",
            GraphKind::Backbone => "backbone",
            GraphKind::CpenFeatures => "cpen_features",
            GraphKind::CpenHead => "cpen_head",
        }
    }

    /// The graph contract: input and output names the runtime feeds and reads.
    pub fn contract(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            GraphKind::Cpen => (&["image"], &["condition"]),
            GraphKind::Denoiser => (&["x", "t", "condition"], &["x0"]),
            GraphKind::Backbone => (&["image", "ipr"], &["output"]),
            GraphKind::CpenFeatures => (&["image"], &["features"]),
            GraphKind::CpenHead => (&["pooled"], &["condition"]),
        }
    }
}
