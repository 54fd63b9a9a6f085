//! The training step's arithmetic: fp32, or bf16 autocast through `advsweep-autocast`.
//!
//! Autocast covers the forward passes of one training step — crafting the adversarial
//! examples of adversarial training and the model's forward pass with its loss — and ends
//! before the backward pass, as PyTorch recommends; weights, gradients and optimizer state
//! stay fp32. Per-epoch test accuracy and every evaluation cell run without it, so a bf16 run's
//! accuracies are measured exactly as an fp32 run's.

use advsweep_autocast::{Autocast, DeviceType};
use advsweep_core::Precision;
use tch::Device;

use crate::error::Permanent;

/// Autocast for one training step on `device` when `precision` asks for it (`None` for fp32).
/// Drop the guard before the backward pass.
pub fn training_step(precision: Precision, device: Device) -> anyhow::Result<Option<Autocast>> {
    let device_type = match (precision, device) {
        (Precision::Fp32, _) => return Ok(None),
        (Precision::Bf16, Device::Cpu) => DeviceType::Cpu,
        (Precision::Bf16, Device::Cuda(_)) => DeviceType::Cuda,
        (Precision::Bf16, other) => {
            return Err(Permanent(format!(
                "precision bf16 needs a cpu or cuda device, not {other:?}"
            ))
            .into());
        }
    };
    Ok(Some(Autocast::bf16(device_type)?))
}
