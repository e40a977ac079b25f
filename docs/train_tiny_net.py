"""Train a tiny two-layer convolutional autoencoder with plain SGD.

Conv2d (stride 2, 1 -> 8 channels) -> ReLU -> ConvTranspose2d (stride 2,
8 -> 1 channel), fitted to reconstruct synthetic 16x16 images of Gaussian
blobs under a mean-squared error.  Everything is numbaconv and NumPy; the
loss printed every 50 steps falls.

Run:  python docs/train_tiny_net.py
"""

import numpy as np

import numbaconv


def blobs(rng, n, size=16, count=3):
    """n images (N, 1, size, size), each the sum of ``count`` random Gaussian blobs."""
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(0, size, (n, count, 2))
    widths = rng.uniform(1.5, 3.0, (n, count))
    d2 = (yy - centres[..., 0, None, None]) ** 2 + (xx - centres[..., 1, None, None]) ** 2
    return np.exp(-d2 / (2 * widths[..., None, None] ** 2)).sum(axis=1)[:, None].astype(
        np.float32)


def train(steps=300, lr=0.05, batch=32, seed=0, every=50):
    """Returns the list of (step, loss) it printed."""
    rng = np.random.default_rng(seed)
    encode = numbaconv.Conv2d(1, 8, 3, stride=2, padding=1, activation="relu", rng=rng)
    decode = numbaconv.ConvTranspose2d(8, 1, 3, stride=2, padding=1, output_padding=1, rng=rng)
    history = []
    for step in range(steps + 1):
        x = blobs(rng, batch)
        a = encode.forward(x)                    # (32, 8, 8, 8), ReLU fused
        y = decode.forward(a)                    # (32, 1, 16, 16)
        loss = float(np.mean((y - x) ** 2))
        grad_y = 2 * (y - x) / y.size            # d loss / d y
        grad_a = decode.backward(grad_y)
        encode.backward(grad_a)                  # through the ReLU too
        for layer in (encode, decode):           # plain SGD
            for param, grad in layer.parameters():
                param -= lr * grad
        if step % every == 0:
            history.append((step, loss))
            print(f"step {step:4d}  loss {loss:.5f}")
    return history


if __name__ == "__main__":
    train()
