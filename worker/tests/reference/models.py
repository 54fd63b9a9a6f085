#!/usr/bin/env python3
"""Plain-PyTorch reference definitions of advsweep's model catalogue.

The Rust worker (`worker/src/models/`) names every parameter and buffer exactly like these
modules, so a checkpoint written by `advsweep_worker::checkpoint::save` loads here with

    model = build("resnet18")
    model.load_state_dict(safetensors.torch.load_file(path))   # strict

and gives the same logits in eval mode. See docs/CHECKPOINTS.md.

Conventions shared with the Rust models:
* inputs are images in [0, 1]; every model normalizes them itself with the CIFAR-10 channel
  statistics, held in *non-persistent* buffers, so normalization is not part of the state_dict;
* optional noise injection (`NoiseSpec`): Gaussian noise added, in training and in eval mode,
  at named points: `input` (the image before normalization, sigma in pixel units) or the output
  of a named stage (sigma times the detached per-sample standard deviation of that output).
  With `learnable=True` each point has one scalar parameter `noise.<point>.alpha`, initialised
  to sigma and used as max(alpha, 0).

Command line (used by the Rust tests in worker/tests/):
    models.py spec                      # one line per state_dict entry of every architecture:
                                        #   "<arch> <key> <dtype> <d0>x<d1>..." and per arch
                                        #   "<arch> #params <count>"
    models.py logits ARCH CKPT INPUT OUT [--noise SIGMA:POINT,POINT:learnable|fixed]
                                        # strict-load CKPT, eval-mode logits of INPUT["x"],
                                        #   written to OUT["logits"] (all safetensors files)
    models.py export ARCH CKPT INPUT OUT
                                        # a fresh model (seed 0), 3 training-mode forwards on
                                        #   random batches (so batch-norm running statistics
                                        #   are not trivial), its state_dict written to CKPT and
                                        #   the eval-mode logits of INPUT["x"] to OUT["logits"]
    models.py torchscript ARCH CKPT OUT MODE
                                        # ARCH with CKPT's weights saved as a TorchScript module
                                        #   at OUT, made as MODE says: `script`, `trace` (eval
                                        #   mode), `unnormalized` (scripted without its
                                        #   normalization: the sweep declares it), or one of the
                                        #   broken modules users make: `trace-train` (traced in
                                        #   training mode), `detached` (no input gradient),
                                        #   `nan` (NaN logits), `flat` (rank-1 output),
                                        #   `classes-100`, `pickle` (torch.save, not TorchScript)
"""

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# Injection points per architecture; mirrors spec/src/catalogue.rs `Arch::noise_points`.
NOISE_POINTS = {
    "basic": ["input", "conv1", "conv2", "fc1", "fc2"],
    "resnet18": ["input", "stem", "layer1", "layer2", "layer3", "layer4"],
    "wrn": ["input", "stem", "block1", "block2", "block3"],
    "vgg": ["input", "stage1", "stage2", "stage3", "stage4", "stage5"],
}


class Normalize(nn.Module):
    """(x - mean) / std with fixed CIFAR-10 statistics; no state_dict entries."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CIFAR10_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.mean) / self.std


class NoiseSpec:
    def __init__(self, sigma, points, learnable):
        self.sigma = float(sigma)
        self.points = list(points)
        self.learnable = bool(learnable)


class NoisePoint(nn.Module):
    def __init__(self, sigma, learnable, scaled):
        super().__init__()
        self.sigma = sigma
        self.scaled = scaled  # hidden point: scale by the detached per-sample std
        if learnable:
            self.alpha = nn.Parameter(torch.tensor(float(sigma)))
        else:
            self.alpha = None

    def forward(self, x):
        scale = self.alpha.clamp(min=0) if self.alpha is not None else self.sigma
        if self.alpha is None and self.sigma == 0:
            return x
        noise = torch.randn_like(x)
        if self.scaled:
            std = x.detach().flatten(1).std(dim=1).view(-1, *([1] * (x.dim() - 1)))
            noise = noise * std
        return x + scale * noise


class Noisy(nn.Module):
    """Mixin holding the `noise` ModuleDict (empty without noise: no state_dict entries)."""

    def _init_noise(self, family, noise):
        valid = NOISE_POINTS[family]
        self.noise = nn.ModuleDict()
        if noise is None:
            return
        for p in noise.points:
            if p not in valid:
                raise ValueError(f"unknown noise point `{p}` (valid: {', '.join(valid)})")
            self.noise[p] = NoisePoint(noise.sigma, noise.learnable, scaled=(p != "input"))

    def _noise(self, point, x):
        if point in self.noise:
            return self.noise[point](x)
        return x


# --- basic -------------------------------------------------------------------------------------


class BasicNet(Noisy):
    """The seed's LeNet-style CNN (62,006 parameters)."""

    def __init__(self, noise=None):
        super().__init__()
        self.normalize = Normalize()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)
        self._init_noise("basic", noise)

    def forward(self, x):
        x = self.normalize(self._noise("input", x))
        x = self._noise("conv1", F.relu(F.max_pool2d(self.conv1(x), 2)))
        x = self._noise("conv2", F.relu(F.max_pool2d(self.conv2(x), 2)))
        x = torch.flatten(x, 1)
        x = self._noise("fc1", F.relu(self.fc1(x)))
        x = self._noise("fc2", F.relu(self.fc2(x)))
        return self.fc3(x)


# --- resnet18 (kuangliu/pytorch-cifar) ---------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNet(Noisy):
    def __init__(self, block, num_blocks, num_classes=10, noise=None):
        super().__init__()
        self.normalize = Normalize()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        self._init_noise("resnet18", noise)

    def _make_layer(self, block, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.normalize(self._noise("input", x))
        out = self._noise("stem", F.relu(self.bn1(self.conv1(x))))
        out = self._noise("layer1", self.layer1(out))
        out = self._noise("layer2", self.layer2(out))
        out = self._noise("layer3", self.layer3(out))
        out = self._noise("layer4", self.layer4(out))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)


def ResNet18(noise=None):
    return ResNet(BasicBlock, [2, 2, 2, 2], noise=noise)


# --- WideResNet (xternalz/WideResNet-pytorch, as used by TRADES/MART) ---------------------------


class WideBasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, drop_rate=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.droprate = drop_rate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (
            None
            if self.equalInOut
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
            out = x
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, stride, drop_rate=0.0):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(int(nb_layers))
            ]
        )

    def forward(self, x):
        return self.layer(x)


class WideResNet(Noisy):
    def __init__(self, depth=28, widen_factor=10, num_classes=10, drop_rate=0.0, noise=None):
        super().__init__()
        self.normalize = Normalize()
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        assert (depth - 4) % 6 == 0
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.nChannels = ch[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, (2.0 / k) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()
        self._init_noise("wrn", noise)

    def forward(self, x):
        x = self.normalize(self._noise("input", x))
        out = self._noise("stem", self.conv1(x))
        out = self._noise("block1", self.block1(out))
        out = self._noise("block2", self.block2(out))
        out = self._noise("block3", self.block3(out))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        out = out.view(-1, self.nChannels)
        return self.fc(out)


# --- VGG with batch norm (kuangliu/pytorch-cifar) ----------------------------------------------

VGG_CFG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(Noisy):
    def __init__(self, vgg_name, noise=None):
        super().__init__()
        self.normalize = Normalize()
        self.cfg = VGG_CFG[vgg_name]
        self.features = self._make_layers(self.cfg)
        self.classifier = nn.Linear(512, 10)
        self._init_noise("vgg", noise)

    def forward(self, x):
        out = self.normalize(self._noise("input", x))
        stage = 0
        for layer in self.features:
            out = layer(out)
            if isinstance(layer, nn.MaxPool2d):
                stage += 1
                out = self._noise(f"stage{stage}", out)
        out = out.view(out.size(0), -1)
        return self.classifier(out)

    @staticmethod
    def _make_layers(cfg):
        layers = []
        in_channels = 3
        for x in cfg:
            if x == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                layers += [nn.Conv2d(in_channels, x, kernel_size=3, padding=1), nn.BatchNorm2d(x), nn.ReLU(inplace=True)]
                in_channels = x
        layers += [nn.AvgPool2d(kernel_size=1, stride=1)]
        return nn.Sequential(*layers)


# --- catalogue ---------------------------------------------------------------------------------

SPEC_ARCHS = ["basic", "resnet18", "wrn-16-4", "wrn-28-10", "vgg11", "vgg16"]


def build(name, noise=None):
    """The catalogue: `basic`, `resnet18`, `wrn-D-K`, `vgg11`, `vgg16`."""
    if name == "basic":
        return BasicNet(noise=noise)
    if name == "resnet18":
        return ResNet18(noise=noise)
    if name in VGG_CFG:
        return VGG(name, noise=noise)
    if name.startswith("wrn-"):
        _, depth, width = name.split("-")
        return WideResNet(int(depth), int(width), noise=noise)
    raise ValueError(f"unknown model `{name}`")


def parse_noise(text):
    """`SIGMA:POINT,POINT:learnable|fixed`."""
    sigma, points, kind = text.split(":")
    if kind not in ("learnable", "fixed"):
        raise ValueError(f"noise kind must be learnable or fixed, got `{kind}`")
    return NoiseSpec(float(sigma), points.split(","), kind == "learnable")


def safetensors_io():
    """`(load_file, save_file)` of `safetensors.torch`, or equivalents over `safetensors.numpy`
    where `safetensors.torch` cannot be imported (safetensors 0.7.0 imports `packaging`
    without declaring it, and a bare virtualenv may lack it). The file format is the same."""
    try:
        from safetensors.torch import load_file, save_file

        return load_file, save_file
    except ImportError as e:
        import safetensors.numpy as st_np

        print(f"models.py: safetensors.torch unavailable ({e}); using safetensors.numpy", file=sys.stderr)

        def load_file(path):
            return {k: torch.from_numpy(v.copy()) for k, v in st_np.load_file(path).items()}

        def save_file(tensors, path):
            st_np.save_file({k: v.detach().cpu().contiguous().numpy() for k, v in tensors.items()}, path)

        return load_file, save_file


def cmd_spec():
    torch.manual_seed(0)
    for arch in SPEC_ARCHS:
        model = build(arch)
        for key, t in model.state_dict().items():
            shape = "x".join(str(d) for d in t.shape) or "scalar"
            print(f"{arch} {key} {str(t.dtype).removeprefix('torch.')} {shape}")
        print(f"{arch} #params {sum(p.numel() for p in model.parameters())}")


def cmd_logits(arch, ckpt, inp, out, noise=None):
    load_file, save_file = safetensors_io()
    model = build(arch, noise=noise)
    model.load_state_dict(load_file(ckpt))  # strict: every key present, none unexpected
    model.eval()
    x = load_file(inp)["x"]
    with torch.no_grad():
        logits = model(x)
    save_file({"logits": logits.contiguous()}, out)


def cmd_export(arch, ckpt, inp, out):
    load_file, save_file = safetensors_io()
    torch.manual_seed(0)
    model = build(arch)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 3, 32, 32))
    save_file(model.state_dict(), ckpt)
    model.eval()
    x = load_file(inp)["x"]
    with torch.no_grad():
        logits = model(x)
    save_file({"logits": logits.contiguous()}, out)


class ScriptableBasicNet(nn.Module):
    """A noise-free BasicNet's forward written so that `torch.jit.script` compiles it (the
    noise points' dict lookups are not scriptable), over the same submodules, so with the same
    state_dict."""

    def __init__(self, net):
        super().__init__()
        for name in ("normalize", "conv1", "conv2", "fc1", "fc2", "fc3"):
            setattr(self, name, getattr(net, name))

    def forward(self, x):
        x = self.normalize(x)
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class _Broken(nn.Module):
    def __init__(self, model, how):
        super().__init__()
        self.model = model
        self.how = how

    def forward(self, x):
        if self.how == "detached":
            x = x.detach()
        y = self.model(x)
        if self.how == "nan":
            return y * float("nan")
        if self.how == "flat":
            return y.flatten()
        if self.how == "classes-100":
            return torch.cat([y] * 10, dim=1)
        return y


def cmd_torchscript(arch, ckpt, out, mode):
    load_file, _ = safetensors_io()
    model = build(arch)
    model.load_state_dict(load_file(ckpt))
    model.eval()
    example = torch.rand(2, 3, 32, 32)
    if mode == "script":
        if arch != "basic":
            raise SystemExit("torchscript MODE script is for basic; trace the others")
        torch.jit.script(ScriptableBasicNet(model).eval()).save(out)
    elif mode == "trace":
        torch.jit.trace(model, example).save(out)
    elif mode == "unnormalized":
        model.normalize = nn.Identity()  # the module now expects normalized input
        torch.jit.trace(model, example).save(out)
    elif mode == "trace-train":
        model.train()
        torch.jit.trace(model, example, check_trace=False).save(out)
    elif mode in ("detached", "nan", "flat", "classes-100"):
        torch.jit.trace(_Broken(model, mode), example, check_trace=False).save(out)
    elif mode == "pickle":
        torch.save(model, out)
    else:
        raise SystemExit(f"unknown torchscript mode `{mode}`")


def main(argv):
    if len(argv) == 5 and argv[0] == "torchscript":
        cmd_torchscript(*argv[1:])
        return 0
    if len(argv) >= 1 and argv[0] == "spec":
        cmd_spec()
        return 0
    if len(argv) in (5, 7) and argv[0] == "logits":
        noise = None
        if len(argv) == 7:
            if argv[5] != "--noise":
                raise SystemExit(f"unexpected argument `{argv[5]}`")
            noise = parse_noise(argv[6])
        cmd_logits(argv[1], argv[2], argv[3], argv[4], noise)
        return 0
    if len(argv) == 5 and argv[0] == "export":
        cmd_export(*argv[1:])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
