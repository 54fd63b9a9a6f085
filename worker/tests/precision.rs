//! bf16 autocast for training (`[training] precision = "bf16"`): it really computes in bf16
//! inside the training step, leaves weights and evaluation in fp32, and a model still learns.

mod common;

use advsweep_core::{EpsilonSpace, Precision, TrainingMethod};
use advsweep_worker::attacks::Budget;
use advsweep_worker::precision;
use common::*;
use tch::{Device, Kind, Tensor};

/// Inside the step's guard a convolution and a matrix product come out in bf16; outside, in
/// fp32 again; fp32 asks for no guard at all.
#[test]
fn the_training_step_guard_switches_autocast_on_and_off() -> anyhow::Result<()> {
    let _serial = serial();
    let x = Tensor::f_rand([2, 3, 8, 8], (Kind::Float, Device::Cpu))?;
    let w = Tensor::f_rand([4, 3, 3, 3], (Kind::Float, Device::Cpu))?;
    let conv = |x: &Tensor| x.f_conv2d::<Tensor>(&w, None, [1, 1], [1, 1], [1, 1], 1);
    assert!(precision::training_step(Precision::Fp32, Device::Cpu)?.is_none());
    {
        let _bf16 = precision::training_step(Precision::Bf16, Device::Cpu)?;
        assert_eq!(conv(&x)?.kind(), Kind::BFloat16);
        assert_eq!(
            x.f_flatten(1, -1)?
                .f_matmul(&x.f_flatten(1, -1)?.f_t_()?)?
                .kind(),
            Kind::BFloat16
        );
    }
    assert_eq!(conv(&x)?.kind(), Kind::Float);
    Ok(())
}

/// A BasicNet trained in bf16 learns about as well as in fp32, keeps fp32 weights, and is
/// evaluated in fp32 (its logits outside training are fp32).
#[test]
fn a_bf16_training_learns_and_keeps_fp32_weights() -> anyhow::Result<()> {
    let _serial = serial();
    let d = data(2000, 300)?;
    let accuracy = |precision: Precision| -> anyhow::Result<(f64, Vec<Kind>, Kind)> {
        let mut spec = training(3);
        spec.precision = precision;
        let model = trained(
            &d,
            &defense(TrainingMethod::Standard),
            &spec,
            1,
            EpsilonSpace::Pixel,
        )?;
        let clean = eval(
            model.as_ref(),
            &d,
            &advsweep_core::Attack::None,
            Budget::pixel(0.0),
            0,
        )?;
        let kinds = model
            .weights()
            .parameters()
            .iter()
            .map(Tensor::kind)
            .collect();
        let (x, _) = d.test_batch(0, 4)?;
        let logits = tch::no_grad(|| model.forward(&x, false))?;
        Ok((clean.accuracy, kinds, logits.kind()))
    };
    let (fp32, _, _) = accuracy(Precision::Fp32)?;
    let (bf16, kinds, logits) = accuracy(Precision::Bf16)?;
    println!("clean accuracy after 3 epochs: fp32 {fp32:.3}, bf16 {bf16:.3}");
    assert!(kinds.iter().all(|&k| k == Kind::Float), "{kinds:?}");
    assert_eq!(logits, Kind::Float);
    assert!(bf16 > 0.5, "bf16 training did not learn: {bf16}");
    assert!((bf16 - fp32).abs() < 0.1, "fp32 {fp32} vs bf16 {bf16}");
    Ok(())
}
