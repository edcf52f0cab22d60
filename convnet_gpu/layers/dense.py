"""Dense: y = x @ W with W (in, out); no bias of its own (see Bias)."""

from __future__ import annotations

from .base import Layer, ParamSpec, check_weight_init, init_note


class Dense(Layer):
    def __init__(self, out_features: int, init: str = "he"):
        super().__init__()
        if out_features < 1:
            raise ValueError("Dense needs out_features >= 1")
        self.out_features = out_features
        self.init = check_weight_init(init)
        # True in a CPU worker's copy (workers.py): the weight's gradient is taken once, over
        # the whole batch, after the workers' backward, instead of once per worker.
        self.weight_grad_elsewhere = False

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense expects flat (features,) inputs, got {input_shape}; put a Flatten before it"
            )
        return (self.out_features,)

    def param_specs(self, input_shape):
        (in_features,) = input_shape
        return [
            ParamSpec("weight", (in_features, self.out_features), self.init, fan_in=in_features)
        ]

    def forward(self, x, y, train):
        self.backend.matmul(x, self.params["weight"], y)

    def backward(self, x, y, dy, dx):
        be = self.backend
        if not self.weight_grad_elsewhere:
            be.matmul(x.T, dy, self.grads["weight"])  # (in, n) @ (n, out)
        if dx is not None:
            be.matmul(dy, self.params["weight"].T, dx)  # (n, out) @ (out, in)

    def describe(self):
        return f"Dense({self.out_features}{init_note(self.init)})"
