//! Human-friendly ε labels: budgets that are whole multiples of 1/255 print as `8/255`.

pub fn label(epsilon: f64) -> String {
    if epsilon == 0.0 {
        return "0".into();
    }
    let k = epsilon * 255.0;
    if (k - k.round()).abs() < 1e-6 && k.round() >= 1.0 {
        format!("{}/255", k.round() as i64)
    } else {
        let s = format!("{epsilon:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn labels() {
        assert_eq!(label(8.0 / 255.0), "8/255");
        assert_eq!(label(0.0), "0");
        assert_eq!(label(0.5), "0.5");
        assert_eq!(label(0.05), "0.05");
    }
}
