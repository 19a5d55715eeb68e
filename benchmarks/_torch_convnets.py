"""PyTorch's side of ``conv_matrix.py``: one cell's layer, whole networks with jaxnet's
layers and Keras's padding, and the training loop, as jaxnet's rows train."""

from __future__ import annotations

import time

BATCH = 128
MOBILENET = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1))  # (filters, stride) per block


def keras_pad(nn, size, k, s, padding):
    """Keras's padding as PyTorch layers: Conv2d's own where it is symmetric, else a pad."""
    if padding == "valid":
        return [], 0
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    before, after = total // 2, total - total // 2
    if before == after:
        return [], before
    return [nn.ZeroPad2d((before, after, before, after))], 0


def cell_model(torch, nn, c):
    k, s, cin, cout = c["kernel"], c["stride"], c["cin"], c["cout"]
    pad_layers, pad = keras_pad(nn, c["image"], k, s, c["padding"])
    groups = cin if c["kind"] == "depthwise" else 1
    conv = nn.Conv2d(cin, cout, k, s, pad, groups=groups, bias=c["kind"] != "bn")
    norm = [nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)] if c["kind"] == "bn" else []
    return nn.Sequential(*pad_layers, conv, *norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(cout, 10))


def train_epochs(torch, model, x, y, channels_last: bool, epochs: int = 3) -> list[float]:
    """Epoch times of Adam on shuffled batches, as the other rows train."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        order = torch.randperm(len(x))
        for i in range(0, len(x), BATCH):
            idx = order[i:i + BATCH]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        times.append(time.perf_counter() - t)
    return times


def network(torch, nn, name):
    bn = lambda c: nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)  # noqa: E731  Keras's
    if name == "keras_convnet":
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Dropout(0.5), nn.Linear(1600, 10))
    if name == "mobilenet":
        layers, c = [nn.Conv2d(3, 32, 3, 1, 1, bias=False), bn(32), nn.ReLU()], 32
        for filters, stride in MOBILENET:
            pad = [nn.ZeroPad2d((0, 1, 0, 1))] if stride == 2 else []  # Keras's "same"
            layers += [*pad, nn.Conv2d(c, c, 3, stride, 0 if pad else 1, groups=c, bias=False),
                       bn(c), nn.ReLU(), nn.Conv2d(c, filters, 1, bias=False), bn(filters),
                       nn.ReLU()]
            c = filters
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))

    class Block(nn.Module):  # jaxnet.resnet's: option-B shortcut where the shape changes
        def __init__(self, cin, cout, stride):
            super().__init__()
            pad = [nn.ZeroPad2d((0, 1, 0, 1))] if stride == 2 else []
            self.branch = nn.Sequential(*pad, nn.Conv2d(cin, cout, 3, stride, 0 if pad else 1,
                                                        bias=False), bn(cout), nn.ReLU(),
                                        nn.Conv2d(cout, cout, 3, 1, 1, bias=False), bn(cout))
            self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))
                             if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.branch(x) + self.shortcut(x))

    layers, c = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), bn(16), nn.ReLU()], 16
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            layers.append(Block(c, filters, 2 if stage > 0 and block == 0 else 1))
            c = filters
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


def best_layout(torch, build, x, y, steps: int) -> dict:
    """The model ``build()`` trained channels-first and channels-last (the same seed): the
    faster layout's steady step in ms, the layout and the wall of both."""
    t = time.perf_counter()
    best = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        best[channels_last] = min(train_epochs(torch, build(), x, y, channels_last)[1:])
    layout = min(best, key=best.get)
    return {"step_ms": best[layout] / steps * 1e3, "compile_s": None,
            "e2e_s": time.perf_counter() - t,
            "layout": "channels_last" if layout else "channels_first"}

