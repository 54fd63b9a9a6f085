//! Inputs and comparisons shared by the attack modules' unit tests (one file, so that each
//! concept's tests stay next to its code without copying these helpers).

use tch::{Device, Kind, Tensor};

/// `n` random CIFAR-shaped images in [0, 1] and labels, the same for every call.
pub(super) fn inputs(n: i64) -> anyhow::Result<(Tensor, Tensor)> {
    tch::manual_seed(0);
    let x = Tensor::f_rand([n, 3, 32, 32], (Kind::Float, Device::Cpu))?;
    let y = Tensor::f_randint(10, [n], (Kind::Int64, Device::Cpu))?;
    Ok((x, y))
}

/// The largest elementwise difference of `a` and `b`.
pub(super) fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    Ok(f64::try_from(a.f_sub(b)?.f_abs()?.f_max()?)?)
}
