//! Statistics of the data sets the catalogue's models are built for.

/// Per-channel mean of CIFAR-10's training pixels (R, G, B on [0, 1]): what the models'
/// normalization subtracts.
pub const CIFAR10_MEAN: [f64; 3] = [0.4914, 0.4822, 0.4465];

/// Per-channel standard deviation of CIFAR-10's training pixels (R, G, B on [0, 1]): the model's
/// normalization divides by it, so a normalized ℓ∞ budget ε allows ε·σ_c in pixels of channel c.
pub const CIFAR10_STD: [f64; 3] = [0.2470, 0.2435, 0.2616];

/// Classes of CIFAR-10 (and of the synthetic data set that stands in for it).
pub const CIFAR10_CLASSES: usize = 10;
/// CIFAR-100's fine classes.
pub const CIFAR100_CLASSES: usize = 100;

/// Shape (channels, height, width) of every image the catalogue's models take: CIFAR-10's, and
/// the synthetic and image-folder sets that stand in for it (the worker refuses other sizes).
pub const IMAGE_SHAPE: [u32; 3] = [3, 32, 32];
