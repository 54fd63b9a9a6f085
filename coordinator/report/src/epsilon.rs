//! Human-friendly ε labels. In pixel space, budgets that are whole multiples of 1/255 print as
//! `8/255`; in normalized space ε is in units of each channel's σ, so it always prints as a
//! decimal (0.2 normalized is not 51/255 of anything).

use advsweep_core::EpsilonSpace;

/// A pixel-space label (the default space of sweep files).
pub fn label(epsilon: f64) -> String {
    label_in(epsilon, EpsilonSpace::Pixel)
}

/// A label for an ε measured in `space`.
pub fn label_in(epsilon: f64, space: EpsilonSpace) -> String {
    if epsilon == 0.0 {
        return "0".into();
    }
    let k = epsilon * 255.0;
    if space == EpsilonSpace::Pixel && (k - k.round()).abs() < 1e-6 && k.round() >= 1.0 {
        format!("{}/255", k.round() as i64)
    } else {
        let s = format!("{epsilon:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use advsweep_core::EpsilonSpace;

    use super::{label, label_in};

    #[test]
    fn labels() {
        assert_eq!(label(8.0 / 255.0), "8/255");
        assert_eq!(label(0.0), "0");
        assert_eq!(label(0.5), "0.5");
        assert_eq!(label(0.05), "0.05");
        assert_eq!(label(0.2), "51/255");
    }

    #[test]
    fn normalized_budgets_are_never_fractions_of_255() {
        assert_eq!(label_in(0.2, EpsilonSpace::Normalized), "0.2");
        assert_eq!(label_in(0.4, EpsilonSpace::Normalized), "0.4");
        assert_eq!(label_in(8.0 / 255.0, EpsilonSpace::Normalized), "0.0314");
    }
}
