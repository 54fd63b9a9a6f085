//! `--self-check`: proves that libtorch loads (through the embedded rpath, without
//! `LD_LIBRARY_PATH`) and that a forward/backward pass works on the chosen device.

use tch::{Device, Kind, Reduction, Tensor};

use crate::models;

/// Builds BasicNet on `device` and runs one forward/backward pass on random input; returns
/// the loss.
pub fn run(device: Device) -> anyhow::Result<f64> {
    let model = models::build("basic", device)?;
    let x = Tensor::f_rand([4, 3, 32, 32], (Kind::Float, device))?;
    let y = Tensor::f_randint(10, [4], (Kind::Int64, device))?;
    let logits = model.forward(&x, true)?;
    let loss = logits.f_cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0)?;
    loss.f_backward()?;
    let grads_ok = model
        .weights()
        .parameters()
        .iter()
        .all(|p| p.grad().defined());
    if !grads_ok {
        anyhow::bail!("backward pass left some parameter without a gradient");
    }
    let loss = f64::try_from(&loss)?;
    if !loss.is_finite() {
        anyhow::bail!("non-finite loss {loss}");
    }
    Ok(loss)
}
