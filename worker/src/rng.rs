//! A small, portable pseudo-random number generator (SplitMix64).
//!
//! Why not torch's generator: torch's CPU and CUDA generators produce different streams, and
//! their algorithms may change between releases. Everything that must be bit-identical on every
//! machine — synthetic data, shuffling order, augmentation offsets — draws from this generator
//! instead, so a run's data pipeline is a pure function of its seed.
//!
//! SplitMix64 (Steele, Lea & Flood 2014) passes BigCrush, needs one `u64` of state, and makes
//! deriving independent sub-streams from `(seed, label, index)` tuples trivial.

/// SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function: a strong 64-bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a list of words into one seed; used to derive independent streams, e.g.
/// `derive_seed(&[run_seed, EPOCH_STREAM, epoch])`.
pub fn derive_seed(words: &[u64]) -> u64 {
    words.iter().fold(0x6A09_E667_F3BC_C908, |acc, &w| {
        mix64(acc.wrapping_add(GOLDEN_GAMMA) ^ mix64(w.wrapping_add(GOLDEN_GAMMA)))
    })
}

/// FNV-1a over bytes, for turning identifiers (cell ids) into seed material.
pub fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// A generator seeded from several words (see [`derive_seed`]).
    pub fn from_words(words: &[u64]) -> Self {
        Rng::new(derive_seed(words))
    }

    /// The generator's whole state: `Rng::new(r.state())` continues `r`'s stream exactly
    /// (a resumed cell picks up its stream where the stored chunk left it).
    pub fn state(&self) -> u64 {
        self.state
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// A seed for torch's (process-wide) generator drawn from this stream: non-negative, as
    /// `tch::manual_seed` takes an `i64`. Attacks and randomized models re-seed torch with it
    /// before drawing, so their draws are a function of our seed.
    pub fn torch_seed(&mut self) -> i64 {
        (self.next_u64() >> 1) as i64
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform integer in [0, n); 0 when n == 0. Unbiased (Lemire's multiply-shift with
    /// rejection).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform integer in the inclusive range [lo, hi]; `lo` when `hi < lo`.
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = hi.abs_diff(lo).saturating_add(1);
        lo.wrapping_add(self.below(span) as i64)
    }

    /// Approximately standard normal: the Irwin–Hall sum of four uniforms, rescaled to unit
    /// variance (support ±3.46). Uses only `+` and `*`, which IEEE 754 makes bit-identical on
    /// every platform — unlike `ln`/`cos`, whose last bit depends on the libm.
    pub fn normalish(&mut self) -> f64 {
        let sum = self.next_f64() + self.next_f64() + self.next_f64() + self.next_f64();
        (sum - 2.0) * 1.732_050_807_568_877_2
    }

    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A random permutation of 0..n.
    pub fn permutation(&mut self, n: usize) -> Vec<i64> {
        let mut p: Vec<i64> = (0..n as i64).collect();
        self.shuffle(&mut p);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_stream() {
        // First outputs of the reference SplitMix64 with seed 1234567.
        let mut r = Rng::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn below_and_permutation_are_in_range() {
        let mut r = Rng::new(9);
        for n in [1u64, 2, 3, 10, 1000] {
            for _ in 0..100 {
                assert!(r.below(n) < n);
            }
        }
        assert_eq!(r.below(0), 0);
        let mut p = r.permutation(100);
        p.sort_unstable();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
        for _ in 0..100 {
            let v = r.range_i64(-4, 4);
            assert!((-4..=4).contains(&v));
        }
    }

    #[test]
    fn derived_seeds_differ() {
        assert_ne!(derive_seed(&[1, 2]), derive_seed(&[2, 1]));
        assert_ne!(derive_seed(&[0]), derive_seed(&[1]));
        assert_ne!(hash_str("a"), hash_str("b"));
    }
}
