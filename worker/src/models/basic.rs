//! `BasicNet`: the small LeNet-style CNN of the original single-machine experiments.
//!
//! conv1 3→6 k5 → maxpool 2 → relu → conv2 6→16 k5 → maxpool 2 → relu → flatten (400) →
//! fc1 400→120 → relu → fc2 120→84 → relu → fc3 84→10: 62 006 parameters. Weights are
//! initialized like PyTorch's defaults for `nn.Conv2d`/`nn.Linear` (uniform ±1/√fan_in), so
//! training behaves like the PyTorch original.

use tch::nn::{self, Init, VarStore};
use tch::{Device, TchError, Tensor};

use super::{Classifier, Normalize};

#[derive(Debug)]
struct Layer {
    weight: Tensor,
    bias: Tensor,
}

impl Layer {
    /// A parameter pair under `path` (`path.weight`, `path.bias`), PyTorch-initialized.
    fn new(vs: &nn::Path<'_>, path: &str, shape: &[i64]) -> Result<Layer, TchError> {
        let fan_in: i64 = shape.iter().skip(1).product();
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let p = vs.sub(path);
        Ok(Layer {
            weight: p.f_var("weight", shape, init)?,
            bias: p.f_var("bias", &shape[..1], init)?,
        })
    }

    fn conv(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_conv2d(&self.weight, Some(&self.bias), [1, 1], [0, 0], [1, 1], 1)
    }

    fn linear(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_linear(&self.weight, Some(&self.bias))
    }
}

#[derive(Debug)]
pub struct BasicNet {
    vs: VarStore,
    normalize: Normalize,
    conv1: Layer,
    conv2: Layer,
    fc1: Layer,
    fc2: Layer,
    fc3: Layer,
}

impl BasicNet {
    pub fn new(device: Device) -> Result<BasicNet, TchError> {
        let vs = VarStore::new(device);
        let root = vs.root();
        let conv1 = Layer::new(&root, "conv1", &[6, 3, 5, 5])?;
        let conv2 = Layer::new(&root, "conv2", &[16, 6, 5, 5])?;
        let fc1 = Layer::new(&root, "fc1", &[120, 400])?;
        let fc2 = Layer::new(&root, "fc2", &[84, 120])?;
        let fc3 = Layer::new(&root, "fc3", &[10, 84])?;
        Ok(BasicNet {
            normalize: Normalize::cifar10(device)?,
            vs,
            conv1,
            conv2,
            fc1,
            fc2,
            fc3,
        })
    }
}

fn pool(x: &Tensor) -> Result<Tensor, TchError> {
    x.f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
}

impl Classifier for BasicNet {
    fn name(&self) -> &'static str {
        "basic"
    }

    fn var_store(&self) -> &VarStore {
        &self.vs
    }

    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, TchError> {
        let x = self.normalize.apply(x)?;
        let x = pool(&self.conv1.conv(&x)?)?.f_relu()?;
        let x = pool(&self.conv2.conv(&x)?)?.f_relu()?;
        let x = x.f_flatten(1, -1)?;
        let x = self.fc1.linear(&x)?.f_relu()?;
        let x = self.fc2.linear(&x)?.f_relu()?;
        self.fc3.linear(&x)
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
        let mut names: Vec<String> = net.var_store().variables().into_keys().collect();
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
