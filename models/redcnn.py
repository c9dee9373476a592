"""RED-CNN (Chen et al., 2017), the residual encoder-decoder for low-dose CT: five 5x5
convolutions without padding (each shrinks the image by 4) and five 5x5 transposed convolutions
that grow it back, all with biases and 96 filters, ReLUs, and three residual shortcuts (input to
output, after the 2nd conv to after the 3rd deconv, after the 4th conv to after the 1st deconv).

Paper size (Table 2): 1.8489 M parameters, 24.9226 G MACs at 1x1x128x128 (thop's convention for
a transposed convolution: output elements x input channels x k^2). Inputs smaller than 21 pixels,
which the unpadded encoder cannot take, are padded (replication) and cropped back.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._contract import RestorationModel
from ._input import check_image, pad_image
from ._registry import register_model

KERNEL, LAYERS = 5, 5
MIN_SIDE = LAYERS * (KERNEL - 1) + 1   # 21


class REDCNN(RestorationModel):
    def __init__(self, in_chans: int = 1, features: int = 96):
        super().__init__()
        if features < 1:
            raise ValueError(f"REDCNN needs features >= 1; got {features}")
        self.in_chans = in_chans
        widths = [in_chans] + [features] * LAYERS
        self.encoder = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], KERNEL) for i in range(LAYERS))
        self.decoder = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], KERNEL)
                                     for i in reversed(range(LAYERS)))

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        check_image("REDCNN", x, self.in_chans, self.encoder[0].weight.dtype)
        height, width = x.shape[2:]
        image = pad_image(x, minimum=MIN_SIDE)
        e = self.encoder
        out = torch.relu(e[1](torch.relu(e[0](image))))
        skip2 = out
        out = torch.relu(e[3](torch.relu(e[2](out))))
        skip4 = out
        out = torch.relu(e[4](out))
        d = self.decoder
        out = d[0](out) + skip4
        out = d[2](torch.relu(d[1](torch.relu(out)))) + skip2
        out = d[4](torch.relu(d[3](torch.relu(out)))) + image
        return torch.relu(out)[:, :, :height, :width]


@register_model(paper="REDCNN")
def redcnn(**kwargs) -> REDCNN:
    return REDCNN(**kwargs)


# The paper's size / 150 would be 8 filters (13,273 parameters); at smoke scale those ReLU layers die
# while the initial offset of the default biases is removed (docs/calibration.md): 16 filters.
@register_model(widened="16 filters (52,145 parameters) where the paper's size / 150 gives 8 (13,273): at 8 the "
                        "ReLU layers die at smoke scale and the network outputs its input (docs/calibration.md)")
def redcnn_tiny(**kwargs) -> REDCNN:
    return REDCNN(**{"features": 16, **kwargs})
