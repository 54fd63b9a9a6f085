//! "Did you mean …?" for a mistyped name: the sweep file's presets, models, norms and other
//! words, report dimensions. A name matches a candidate ignoring case and the separators
//! `-`, `_` and `.` (`Linf` → `linf`, `resnet-18` → `resnet18`), or within a small edit
//! distance that counts a swap of two neighbouring letters as one edit (`pgd5-fats` →
//! `pgd5-fast`): at most 1 edit for names up to 4 characters, 2 up to 8, 3 beyond.

/// The candidate `name` was most likely meant as, if one is close enough.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let key = folded(name);
    let limit = match key.len() {
        0 => return None,
        1..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == name {
            continue;
        }
        let d = if folded(candidate) == key {
            0
        } else {
            distance(&key, &folded(candidate))
        };
        if d <= limit && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// ` (did you mean `x`?)`, or nothing.
pub fn hint<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

fn folded(s: &str) -> Vec<char> {
    s.chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// neighbours, each one edit.
fn distance(a: &[char], b: &[char]) -> usize {
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for j in 0..=m {
        d[0][j] = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_typos_find_their_name() {
        let presets = ["pgd5-fast", "pgd-linf", "fgsm", "autoattack"];
        assert_eq!(closest("pgd5-fats", presets), Some("pgd5-fast"));
        assert_eq!(closest("PGD-Linf", presets), Some("pgd-linf"));
        assert_eq!(closest("fgms", presets), Some("fgsm"));
        assert_eq!(closest("autoatack", presets), Some("autoattack"));
        assert_eq!(
            closest("resnet-18", ["basic", "resnet18", "resnet34"]),
            Some("resnet18")
        );
        assert_eq!(closest("Linf", ["linf", "l2"]), Some("linf"));
        // Nothing close: no guess.
        assert_eq!(closest("square-attack-of-doom", presets), None);
        assert_eq!(closest("x", ["linf", "l2"]), None);
        assert_eq!(hint("l3", ["linf", "l2"]), " (did you mean `l2`?)");
        assert_eq!(hint("", ["linf"]), "");
    }
}
