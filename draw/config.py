"""Model configurations (dataclasses) and the paper's named settings (Table 3).

A checkpoint stores ``asdict(config)`` with the model's kind, so every model can be
rebuilt from the file alone (see :func:`draw.registry.build_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

LIKELIHOODS = ("bernoulli", "logistic")
WINDOW_INITS = ("zero", "smooth")


@dataclass
class DrawConfig:
    """DRAW generative model. Defaults: the paper's MNIST model (Table 3)."""

    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) = (C, B, A)
    T: int = 64  # glimpses (time steps)
    read_n: int = 2  # read patch N x N
    write_n: int = 5  # write patch N x N
    enc_size: int = 256  # LSTM_enc units
    dec_size: int = 256  # LSTM_dec units
    z_size: int = 100
    attention: bool = True  # False: read = [x, x^], write = W(h_dec)
    # D(x | c_T), eq. 9. "bernoulli": Bernoulli(sigmoid(c_T)), for binary images (MNIST).
    # "logistic": for 8-bit (colour) images, a logistic with mean sigmoid(c_T) and a learned
    # scale per channel, discretised to the 256 levels (PixelCNN++'s likelihood with one
    # component). Chosen over a Gaussian density because it is a probability mass on the
    # 256 values the data can take: its NLL is a true negative log-likelihood, comparable
    # across models (as bits per dimension) and bounded below by 0, where a density on
    # discrete data can be driven to -inf by shrinking its variance.
    likelihood: str = "bernoulli"
    # Initial attention windows (the paper does not say). "zero": the default init of the
    # linear maps of eq. 21, so every window starts centred with its grid spanning the image,
    # sigma = 1 pixel and gamma = 1; with a 2x2 read the encoder then sees only the 4 corner
    # pixels and learning is slow to start. "smooth": sigma starts at delta / 2, so the N x N
    # filters tile the whole image smoothly (the read sees a blurred overview), and the write
    # gain 1/gamma^ starts where a patch value of 1 adds 1 to the canvas at a filter's centre.
    window_init: str = "zero"

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(s) for s in self.image_shape)  # JSON round trip gives lists
        for name in ("T", "read_n", "write_n", "enc_size", "dec_size", "z_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.window_init not in WINDOW_INITS:
            raise ValueError(f"window_init must be one of {WINDOW_INITS}, got {self.window_init!r}")


@dataclass
class ClassifierConfig:
    """The read-only attention classifier of section 4.1 ("Differentiable RAM")."""

    image_shape: tuple[int, int, int] = (1, 100, 100)
    glimpses: int = 8
    read_n: int = 12
    hidden: int = 256
    n_classes: int = 10
    # 0: the glimpse patch goes straight into the LSTM (the paper's description). > 0: a
    # RAM-style glimpse network (Mnih et al., 2014) of this width first mixes the patch
    # ("what") with the window parameters ("where") through a ReLU layer.
    glimpse_net: int = 0
    # The paper maps h linearly to the window centre g~ (eq. 21). A linear g~ can carry the
    # window off the image, where every filter collapses onto the border, the gradient
    # with respect to the centre vanishes and training stalls at chance (seen on 100x100
    # cluttered MNIST). True passes g~ through tanh, keeping the centre on the image.
    bounded_centre: bool = True

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(s) for s in self.image_shape)
        if self.glimpse_net < 0:
            raise ValueError(f"glimpse_net must be >= 0, got {self.glimpse_net}")
        for name in ("glimpses", "read_n", "hidden", "n_classes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class TrainConfig:
    """Optimisation settings shared by every model (one training loop for all)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    schedule: str = "constant"  # "constant" | "cosine" (with linear warm-up)
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 10.0  # max global grad norm; 0 disables
    seed: int = 0
    checkpoint_every: int = 500  # steps; plus one at every epoch end
    log_every: int = 25  # steps between host syncs (progress bar, NaN check)
    max_steps: int | None = None  # stop early (smoke runs)
    max_minutes: float | None = None  # wall-clock training budget; stops at a step boundary
    eval_batch_size: int = 500
    extra: dict = field(default_factory=dict)


# Table 3 of the paper: the settings per data set.
PAPER_DRAW = {
    "mnist": DrawConfig(image_shape=(1, 28, 28), T=64, read_n=2, write_n=5, enc_size=256, dec_size=256, z_size=100),
    "svhn": DrawConfig(image_shape=(3, 32, 32), T=32, read_n=12, write_n=12, enc_size=800, dec_size=800, z_size=100),
    "cifar10": DrawConfig(image_shape=(3, 32, 32), T=64, read_n=5, write_n=5, enc_size=400, dec_size=400, z_size=200),
}
PAPER_CLASSIFIER = ClassifierConfig(image_shape=(1, 100, 100), glimpses=8, read_n=12, hidden=256)
