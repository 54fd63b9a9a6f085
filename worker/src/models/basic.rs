//! `BasicNet`: the small LeNet-style CNN of the original single-machine experiments.
//!
//! conv1 3→6 k5 → maxpool 2 → relu → conv2 6→16 k5 → maxpool 2 → relu → flatten (400) →
//! fc1 400→120 → relu → fc2 120→84 → relu → fc3 84→10: 62 006 parameters. Weights are
//! initialized like PyTorch's defaults for `nn.Conv2d`/`nn.Linear` (uniform ±1/√fan_in), so
//! training behaves like the PyTorch original.
//!
//! Noise points: `input`; `conv1`, `conv2` (after conv → pool → relu); `fc1`, `fc2` (after
//! the relu).

use tch::nn::VarStore;
use tch::{Device, TchError, Tensor};

use super::layers::{Conv2d, ConvSpec, Linear, max_pool2};
use super::noise::{Noise, NoiseConfig};
use super::{Classifier, Layout, Normalize, Weights};

#[derive(Debug)]
pub struct BasicNet {
    vs: VarStore,
    normalize: Normalize,
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    noise: Noise,
}

impl BasicNet {
    pub fn new(device: Device) -> Result<BasicNet, TchError> {
        BasicNet::with_noise(device, None)
    }

    pub fn with_noise(device: Device, noise: Option<&NoiseConfig>) -> Result<BasicNet, TchError> {
        BasicNet::with_classes(device, noise, 10)
    }

    /// With `classes` outputs (the data's classes).
    pub fn with_classes(
        device: Device,
        noise: Option<&NoiseConfig>,
        classes: i64,
    ) -> Result<BasicNet, TchError> {
        let vs = VarStore::new(device);
        let root = vs.root();
        let conv = |name: &str, i, o| {
            Conv2d::new(
                &root.sub(name),
                ConvSpec::new(i, o, 5).padding(0).bias(true),
            )
        };
        let conv1 = conv("conv1", 3, 6)?;
        let conv2 = conv("conv2", 6, 16)?;
        let fc1 = Linear::new(&root.sub("fc1"), 400, 120)?;
        let fc2 = Linear::new(&root.sub("fc2"), 120, 84)?;
        let fc3 = Linear::new(&root.sub("fc3"), 84, classes)?;
        let noise = Noise::new(&root, noise)?;
        Ok(BasicNet {
            normalize: Normalize::cifar10(device, Layout::BASIC)?,
            vs,
            conv1,
            conv2,
            fc1,
            fc2,
            fc3,
            noise,
        })
    }
}

impl Classifier for BasicNet {
    fn name(&self) -> &str {
        "basic"
    }

    fn weights(&self) -> &dyn Weights {
        &self.vs
    }

    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, TchError> {
        let n = &self.noise;
        let x = self.normalize.noisy_input(n, x)?;
        let x = n.apply("conv1", max_pool2(&self.conv1.forward(&x)?)?.f_relu()?)?;
        let x = n.apply("conv2", max_pool2(&self.conv2.forward(&x)?)?.f_relu()?)?;
        let x = x.f_flatten(1, -1)?;
        let x = n.apply("fc1", self.fc1.forward(&x)?.f_relu()?)?;
        let x = n.apply("fc2", self.fc2.forward(&x)?.f_relu()?)?;
        self.fc3.forward(&x)
    }

    fn randomized(&self) -> bool {
        self.noise.randomized()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::trainable_parameters;
    use tch::Kind;

    #[test]
    fn has_the_seed_architecture() -> anyhow::Result<()> {
        let net = BasicNet::new(Device::Cpu)?;
        assert_eq!(trainable_parameters(&net), 62_006);
        let mut names: Vec<String> = net.weights().named_tensors().into_keys().collect();
        names.sort();
        let expected = [
            "conv1.bias",
            "conv1.weight",
            "conv2.bias",
            "conv2.weight",
            "fc1.bias",
            "fc1.weight",
            "fc2.bias",
            "fc2.weight",
            "fc3.bias",
            "fc3.weight",
        ];
        assert_eq!(names, expected);
        let x = Tensor::f_rand([4, 3, 32, 32], (Kind::Float, Device::Cpu))?;
        assert_eq!(net.forward(&x, false)?.size(), vec![4, 10]);
        Ok(())
    }
}
