"""Multiply-adds per image are counted, and the count is the one a hand count gives."""

from __future__ import annotations

import torch
from torch import nn

from benchmark.compute import inference_images_per_s, macs_per_image
from datasets.tensors import TensorData
from draw.baselines import ConvBaseline, ConvConfig
from draw.classifier import AttentionClassifier, ClassifierConfig


class Tiny(nn.Module):
    """conv 2@3x3 on 1x5x5 -> 2x3x3, flatten 18 -> linear 4 -> LSTM cell of 3 units."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(18, 4)
        self.cell = nn.LSTMCell(4, 3)

    def forward(self, x):
        h = torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1)))
        return self.cell(h)[0]


def test_count_matches_a_hand_count():
    conv = 2 * 3 * 3 * (1 * 3 * 3)  # outputs x (inputs per output)
    fc = 18 * 4
    lstm = 4 * 3 * (4 + 3)  # four gates of 3 units, each reading the input (4) and the state (3)
    assert macs_per_image(Tiny(), (1, 5, 5)) == conv + fc + lstm


def test_the_rams_papers_conv_baseline_and_the_attention_model():
    conv2 = ConvBaseline(ConvConfig(arch="conv2"))  # 8 filters 10x10 stride 5 -> 19x19, FC 256, 10 classes
    assert macs_per_image(conv2, (1, 100, 100)) == 8 * 19 * 19 * 100 + 8 * 19 * 19 * 256 + 256 * 10
    T, N, A, H = 3, 4, 30, 16
    att = AttentionClassifier(ClassifierConfig(image_shape=(1, A, A), glimpses=T, read_n=N, lstm_size=H))
    per_glimpse = (N * A * A + N * A * N  # F_y x F_x^T (eq. 27)
                   + H * 5  # the window from h (eq. 21)
                   + 4 * H * (N * N + H))  # the LSTM
    assert macs_per_image(att, (1, A, A)) == T * per_glimpse + H * 10


def test_inference_speed_is_positive_and_leaves_the_mode_alone():
    model = Tiny().train()
    data = TensorData(torch.rand(64, 1, 5, 5), torch.zeros(64, dtype=torch.long), scale=1.0)
    assert inference_images_per_s(model, data, batch_size=16) > 0
    assert model.training
