//! A deterministic, learnable, attackable 10-class 32×32×3 data set generated from a seed.
//!
//! Why it exists: tests and laptops need a data set that needs no download, is identical on
//! every machine and device, trains in seconds, and still behaves like an image task under
//! attack — clean accuracy well above chance but not perfect, and visibly lower under
//! ε = 8/255 FGSM/PGD.
//!
//! How it is made:
//! * each class has a *prototype*: a sum of a few low-frequency colour gratings (integer
//!   frequencies of a few cycles per image, so prototypes are
//!   periodic and shifts are exact), scaled to unit RMS;
//! * a sample is `0.5 + brightness + contrast · A · shift(prototype) + distractor + noise`,
//!   with a random circular shift, random contrast and per-channel brightness, a random
//!   class-independent distractor grating, and per-pixel noise; clamped to [0, 1] and
//!   quantized to bytes.
//!
//! Portability: only the crate's own [`Rng`] and IEEE-exact arithmetic (`+ - * /`, `sqrt`)
//! are used — no `sin`/`cos`/`ln` from the platform's libm (the cosine table is computed by a
//! fixed Taylor series) and no torch RNG — so the bytes are identical everywhere.
//! Sample `i` of a split depends only on `(seed, split, i)`, so a limit takes a prefix of the
//! full set.

use super::{DataError, HostSplit, IMAGE_BYTES};
use crate::rng::Rng;

pub const CLASSES: usize = 10;

/// The knobs of the generator. [`Params::DEFAULT`] is what runs use; the others exist for
/// calibration experiments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub gratings_per_class: usize,
    /// Largest grating frequency, in cycles per image along each axis.
    pub max_frequency: i64,
    /// RMS of the class signal, in pixel units ([0, 1]).
    pub signal_amplitude: f64,
    /// RMS of the class-independent distractor grating.
    pub distractor_amplitude: f64,
    /// Standard deviation of the per-pixel noise.
    pub noise_sigma: f64,
    /// Per-channel brightness offset, uniform in ±this.
    pub brightness: f64,
    /// Contrast multiplier range of the class signal.
    pub contrast: (f64, f64),
    /// Circular shift range in pixels, each axis.
    pub max_shift: i64,
}

impl Params {
    pub const DEFAULT: Params = Params {
        gratings_per_class: 3,
        max_frequency: 3,
        signal_amplitude: 0.12,
        distractor_amplitude: 0.06,
        noise_sigma: 0.16,
        brightness: 0.08,
        contrast: (0.7, 1.3),
        max_shift: 4,
    };
}

impl Default for Params {
    fn default() -> Self {
        Params::DEFAULT
    }
}

/// Largest split this generator accepts (about 3 GB of pixels).
pub const MAX_IMAGES: usize = 1_000_000;

const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;

const PROTOTYPE_STREAM: u64 = 0x5052_4f54; // "PROT"
const SAMPLE_STREAM: u64 = 0x5341_4d50; // "SAMP"
const LABEL_STREAM: u64 = 0x4c41_424c; // "LABL"
const TRAIN_SPLIT: u64 = 1;
const TEST_SPLIT: u64 = 2;

/// `cos(2πk/32)` for k in 0..32, from a fixed Taylor series (bit-identical everywhere).
fn cosine_table() -> [f64; SIDE] {
    const PI: f64 = std::f64::consts::PI;
    let mut table = [0.0; SIDE];
    for (k, slot) in table.iter_mut().enumerate() {
        // Reduce to [-π, π] so the series converges fast.
        let mut x = 2.0 * PI * k as f64 / SIDE as f64;
        if x > PI {
            x -= 2.0 * PI;
        }
        let x2 = x * x;
        let mut term = 1.0;
        let mut sum = 1.0;
        for n in 1..=16u32 {
            let n = f64::from(n);
            term *= -x2 / ((2.0 * n - 1.0) * (2.0 * n));
            sum += term;
        }
        *slot = sum;
    }
    table
}

/// One colour grating: `colour[ch] · cos(2π (fx·x + fy·y + phase) / 32)`.
#[derive(Debug, Clone, Copy)]
struct Grating {
    fx: i64,
    fy: i64,
    phase: i64,
    colour: [f64; 3],
}

impl Grating {
    fn random(rng: &mut Rng, max_frequency: i64) -> Grating {
        let max_frequency = max_frequency.max(1);
        let (fx, fy) = loop {
            let fx = rng.range_i64(-max_frequency, max_frequency);
            let fy = rng.range_i64(-max_frequency, max_frequency);
            if fx != 0 || fy != 0 {
                break (fx, fy);
            }
        };
        Grating {
            fx,
            fy,
            phase: rng.range_i64(0, SIDE as i64 - 1),
            colour: [rng.normalish(), rng.normalish(), rng.normalish()],
        }
    }

    /// Adds `scale ·` this grating to a 3×32×32 image.
    fn add_to(&self, image: &mut [f64], scale: f64, cos: &[f64; SIDE]) {
        for ch in 0..3 {
            let c = self.colour[ch] * scale;
            for y in 0..SIDE {
                for x in 0..SIDE {
                    let k = (self.fx * x as i64 + self.fy * y as i64 + self.phase)
                        .rem_euclid(SIDE as i64) as usize;
                    image[ch * PLANE + y * SIDE + x] += c * cos[k];
                }
            }
        }
    }
}

fn rms(image: &[f64]) -> f64 {
    (image.iter().map(|v| v * v).sum::<f64>() / image.len() as f64).sqrt()
}

/// A sum of gratings rescaled to unit RMS.
fn unit_pattern(gratings: &[Grating], cos: &[f64; SIDE]) -> Vec<f64> {
    let mut image = vec![0.0; IMAGE_BYTES];
    for g in gratings {
        g.add_to(&mut image, 1.0, cos);
    }
    let r = rms(&image);
    if r > 0.0 {
        image.iter_mut().for_each(|v| *v /= r);
    }
    image
}

/// The generator for one seed: class prototypes plus the cosine table.
#[derive(Debug, Clone)]
pub struct Generator {
    seed: u64,
    params: Params,
    prototypes: Vec<Vec<f64>>,
    cos: [f64; SIDE],
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator::with_params(seed, Params::DEFAULT)
    }

    pub fn with_params(seed: u64, params: Params) -> Generator {
        let cos = cosine_table();
        let prototypes = (0..CLASSES as u64)
            .map(|class| {
                let mut rng = Rng::from_words(&[seed, PROTOTYPE_STREAM, class]);
                let gratings: Vec<Grating> = (0..params.gratings_per_class)
                    .map(|_| Grating::random(&mut rng, params.max_frequency))
                    .collect();
                unit_pattern(&gratings, &cos)
            })
            .collect();
        Generator {
            seed,
            params,
            prototypes,
            cos,
        }
    }

    /// The label of sample `index`: every block of 10 consecutive samples holds each class
    /// once, in a random order, so every prefix is balanced to within one per class.
    fn label(&self, split: u64, index: u64) -> usize {
        let block = index / CLASSES as u64;
        let mut rng = Rng::from_words(&[self.seed, LABEL_STREAM, split, block]);
        let mut order: [usize; CLASSES] = std::array::from_fn(|c| c);
        rng.shuffle(&mut order);
        order[(index % CLASSES as u64) as usize]
    }

    /// Writes sample `index` of `split` into `pixels` (3072 bytes) and returns its label.
    fn sample(&self, split: u64, index: u64, pixels: &mut [u8], work: &mut [f64]) -> i64 {
        let label = self.label(split, index);
        let mut rng = Rng::from_words(&[self.seed, SAMPLE_STREAM, split, index]);
        let p = &self.params;
        let dx = rng.range_i64(-p.max_shift, p.max_shift);
        let dy = rng.range_i64(-p.max_shift, p.max_shift);
        let contrast = rng.uniform(p.contrast.0, p.contrast.1) * p.signal_amplitude;
        let brightness = [
            rng.uniform(-p.brightness, p.brightness),
            rng.uniform(-p.brightness, p.brightness),
            rng.uniform(-p.brightness, p.brightness),
        ];
        let distractor = Grating::random(&mut rng, p.max_frequency);
        // Unit RMS for a single grating needs the colour's RMS and the cosine's (1/√2).
        let colour_rms = (distractor.colour.iter().map(|c| c * c).sum::<f64>() / 3.0).sqrt();
        let distractor_scale = if colour_rms > 0.0 {
            p.distractor_amplitude * std::f64::consts::SQRT_2 / colour_rms
        } else {
            0.0
        };

        let prototype = &self.prototypes[label];
        for ch in 0..3 {
            for y in 0..SIDE {
                let sy = (y as i64 + dy).rem_euclid(SIDE as i64) as usize;
                for x in 0..SIDE {
                    let sx = (x as i64 + dx).rem_euclid(SIDE as i64) as usize;
                    work[ch * PLANE + y * SIDE + x] =
                        0.5 + brightness[ch] + contrast * prototype[ch * PLANE + sy * SIDE + sx];
                }
            }
        }
        distractor.add_to(work, distractor_scale, &self.cos);
        for (out, v) in pixels.iter_mut().zip(work.iter()) {
            let v = v + p.noise_sigma * rng.normalish();
            *out = (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
        }
        label as i64
    }

    /// Samples `0..count` of one split.
    fn split(&self, split: u64, count: usize) -> HostSplit {
        let mut out = HostSplit {
            images: vec![0; count * IMAGE_BYTES],
            labels: Vec::with_capacity(count),
        };
        let mut work = vec![0.0; IMAGE_BYTES];
        for (index, pixels) in out.images.chunks_exact_mut(IMAGE_BYTES).enumerate() {
            let label = self.sample(split, index as u64, pixels, &mut work);
            out.labels.push(label);
        }
        out
    }
}

/// The first `train` training and `test` test samples for `seed`.
pub fn generate(seed: u64, train: usize, test: usize) -> Result<(HostSplit, HostSplit), DataError> {
    generate_with(seed, train, test, Params::DEFAULT)
}

/// [`generate`] with other generator parameters (calibration).
pub fn generate_with(
    seed: u64,
    train: usize,
    test: usize,
    params: Params,
) -> Result<(HostSplit, HostSplit), DataError> {
    for (n, what) in [(train, "train"), (test, "test")] {
        if n > MAX_IMAGES {
            return Err(DataError::Invalid(format!(
                "synthetic {what} size {n} exceeds the maximum of {MAX_IMAGES}"
            )));
        }
    }
    let generator = Generator::with_params(seed, params);
    Ok((
        generator.split(TRAIN_SPLIT, train),
        generator.split(TEST_SPLIT, test),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_table_is_accurate() {
        let table = cosine_table();
        for (k, v) in table.iter().enumerate() {
            let exact = (std::f64::consts::TAU * k as f64 / 32.0).cos();
            assert!((v - exact).abs() < 1e-12, "k={k}: {v} vs {exact}");
        }
    }

    #[test]
    fn deterministic_prefix_stable_and_balanced() -> anyhow::Result<()> {
        let (a_train, a_test) = generate(42, 200, 50)?;
        let (b_train, b_test) = generate(42, 200, 50)?;
        assert_eq!(a_train, b_train);
        assert_eq!(a_test, b_test);
        assert_eq!(a_train.images.len(), 200 * IMAGE_BYTES);

        // A smaller limit is a prefix of the larger set.
        let (prefix, _) = generate(42, 30, 1)?;
        assert_eq!(prefix.labels[..], a_train.labels[..30]);
        assert_eq!(prefix.images[..], a_train.images[..30 * IMAGE_BYTES]);

        // Another seed gives other data; train and test differ.
        let (c_train, _) = generate(43, 200, 50)?;
        assert_ne!(a_train.images, c_train.images);
        assert_ne!(a_train.images[..50 * IMAGE_BYTES], a_test.images[..]);

        let mut counts = [0usize; CLASSES];
        for &l in &a_train.labels {
            assert!((0..10).contains(&l));
            counts[l as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c == 20), "{counts:?}");

        // Pixels use the range without saturating most of the time.
        let mean =
            a_train.images.iter().map(|&v| f64::from(v)).sum::<f64>() / a_train.images.len() as f64;
        assert!((100.0..155.0).contains(&mean), "mean pixel {mean}");
        Ok(())
    }

    #[test]
    fn oversized_requests_are_rejected() {
        assert!(matches!(
            generate(1, MAX_IMAGES + 1, 1),
            Err(DataError::Invalid(_))
        ));
    }
}
