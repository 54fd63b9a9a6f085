//! The catalogue both sides agree on, defined once: which architecture names exist and where
//! noise can be injected in each (here), the built-in presets a sweep file can name without
//! defining them ([`presets`]), the data sets' statistics ([`datasets`]) and the defaults of a
//! sweep file ([`defaults`]). The coordinator resolves sweep files against it; the worker builds
//! the networks and its bench runs the same presets.

pub mod datasets;
pub mod defaults;
pub mod presets;

/// The injection point before the model's normalization.
pub const INPUT_POINT: &str = "input";
/// In a sweep file's `noise.layers`: every injection point but [`INPUT_POINT`].
pub const HIDDEN_POINTS: &str = "hidden";
/// In a sweep file's `noise.layers`: every injection point.
pub const ALL_POINTS: &str = "all";

/// A parsed architecture name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// The seed's BasicNet (62,006 parameters).
    Basic,
    /// ResNet-18 with the CIFAR stem (3×3 conv, no max-pool).
    ResNet18,
    /// WideResNet-depth-width (Zagoruyko & Komodakis), e.g. `wrn-28-10`.
    WideResNet {
        depth: u32,
        width: u32,
    },
    /// VGG-11 / VGG-16 with batch norm, CIFAR classifier (512 → 10).
    Vgg11,
    Vgg16,
}

/// The names accepted, for error messages.
pub const ARCHITECTURES: &[&str] = &[
    "basic",
    "resnet18",
    "wrn-D-K (e.g. wrn-16-4, wrn-28-10)",
    "vgg11",
    "vgg16",
];

impl Arch {
    pub fn parse(name: &str) -> Result<Arch, String> {
        match name {
            "basic" => return Ok(Arch::Basic),
            "resnet18" => return Ok(Arch::ResNet18),
            "vgg11" => return Ok(Arch::Vgg11),
            "vgg16" => return Ok(Arch::Vgg16),
            _ => {}
        }
        let unknown = || {
            format!(
                "unknown model `{name}`{} (known: {})",
                crate::suggest::hint(name, ARCHITECTURES.iter().copied()),
                ARCHITECTURES.join(", ")
            )
        };
        let rest = name.strip_prefix("wrn-").ok_or_else(unknown)?;
        let (d, k) = rest.split_once('-').ok_or_else(unknown)?;
        let depth: u32 = d.parse().map_err(|_| unknown())?;
        let width: u32 = k.parse().map_err(|_| unknown())?;
        if depth < 10 || !(depth - 4).is_multiple_of(6) {
            return Err(format!(
                "model `{name}`: WideResNet depth must be 6n+4 with n ≥ 1 (10, 16, 22, 28, …), got {depth}"
            ));
        }
        if !(1..=20).contains(&width) {
            return Err(format!(
                "model `{name}`: WideResNet width must be 1..=20, got {width}"
            ));
        }
        Ok(Arch::WideResNet { depth, width })
    }

    /// Where [`crate::NoiseInjection`] may add noise: `input` (before normalization) and the
    /// output of each named stage.
    pub fn noise_points(self) -> &'static [&'static str] {
        match self {
            Arch::Basic => &["input", "conv1", "conv2", "fc1", "fc2"],
            Arch::ResNet18 => &["input", "stem", "layer1", "layer2", "layer3", "layer4"],
            Arch::WideResNet { .. } => &["input", "stem", "block1", "block2", "block3"],
            Arch::Vgg11 | Arch::Vgg16 => {
                &["input", "stage1", "stage2", "stage3", "stage4", "stage5"]
            }
        }
    }

    /// The injection points `requested` names (points of this architecture, [`HIDDEN_POINTS`]
    /// or [`ALL_POINTS`]), each once, in the architecture's order, so that a model's id does
    /// not depend on how its layers were listed. The error names the first unknown point.
    pub fn noise_layers(self, requested: &[String]) -> Result<Vec<String>, String> {
        let points = self.noise_points();
        let mut layers: Vec<String> = Vec::new();
        for layer in requested {
            let expanded: Vec<&str> = match layer.as_str() {
                ALL_POINTS => points.to_vec(),
                HIDDEN_POINTS => points
                    .iter()
                    .copied()
                    .filter(|p| *p != INPUT_POINT)
                    .collect(),
                point if points.contains(&point) => vec![point],
                other => {
                    return Err(format!(
                        "`{other}` is not an injection point of {self} (points: {}, or \"{HIDDEN_POINTS}\" / \"{ALL_POINTS}\")",
                        points.join(", ")
                    ));
                }
            };
            for p in expanded {
                if !layers.iter().any(|l| l == p) {
                    layers.push(p.to_owned());
                }
            }
        }
        layers.sort_by_key(|l| points.iter().position(|p| p == l));
        Ok(layers)
    }
}

impl std::fmt::Display for Arch {
    /// The name [`Arch::parse`] reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arch::Basic => f.write_str("basic"),
            Arch::ResNet18 => f.write_str("resnet18"),
            Arch::WideResNet { depth, width } => write!(f, "wrn-{depth}-{width}"),
            Arch::Vgg11 => f.write_str("vgg11"),
            Arch::Vgg16 => f.write_str("vgg16"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(
            Arch::parse("wrn-28-10"),
            Ok(Arch::WideResNet {
                depth: 28,
                width: 10
            })
        );
        assert_eq!(Arch::parse("basic"), Ok(Arch::Basic));
        assert!(Arch::parse("wrn-27-10").unwrap_err().contains("6n+4"));
        assert!(
            Arch::parse("resnet50")
                .unwrap_err()
                .contains("unknown model `resnet50`")
        );
        assert!(Arch::parse("wrn-16").is_err());
        for name in ["basic", "resnet18", "wrn-16-4", "vgg11", "vgg16"] {
            assert_eq!(
                Arch::parse(name).map(|a| a.to_string()),
                Ok(name.to_owned())
            );
        }
    }

    #[test]
    fn noise_layers_come_out_once_in_the_architecture_order() {
        let asked = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Arch::ResNet18.noise_layers(&asked(&["layer2", "hidden", "input"])),
            Ok(asked(&[
                "input", "stem", "layer1", "layer2", "layer3", "layer4"
            ]))
        );
        let e = Arch::Basic.noise_layers(&asked(&["layer9"])).unwrap_err();
        assert!(
            e.contains("`layer9` is not an injection point of basic"),
            "{e}"
        );
    }
}
