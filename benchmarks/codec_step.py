"""Training throughput of the image codec: sub-pixel vs dilated synthesis.

    python -m benchmarks.codec_step [--batch-size 32] [--repeats 3] [--quick]

The codec of split_rd's full-scale config (Ballé et al.'s factorized prior,
N = 64, M = 96, on 128×128 training windows) with random weights. Prints,
from one run on one machine, images/s of one jitted training step (rate–
distortion loss, gradient, Adam update) with its synthesis transposed
convolutions computed sub-pixel-wise (ours, `models/subpixel.py`) and as
`nnx.ConvTranspose` (the reference it must beat: XLA's lhs-dilated
convolution), the same parameters in both, and the ratio.
"""

from __future__ import annotations

import argparse

from flax import nnx
import jax
import optax

from benchmarks.timing import best_time
from hecsb_jax.configs import split_rd as split_rd_config
from hecsb_jax.models import neural_codec as nc

LAMBDA = 0.0067


def with_dilated_synthesis(codec: nc.FactorizedPriorCodec) -> None:
  """Swaps each of g_s's layers for an `nnx.ConvTranspose` holding the
  same kernel and bias (the reference implementation)."""
  for i, layer in enumerate(codec.g_s.deconvs):
    kh, kw, c_in, c_out = layer.kernel.shape
    ref = nnx.ConvTranspose(c_in, c_out, (kh, kw), strides=2,
                            padding="SAME", rngs=nnx.Rngs(0))
    ref.kernel[...] = layer.kernel[...]
    ref.bias[...] = layer.bias[...]
    codec.g_s.deconvs[i] = ref


def build_step(config, impl: str):
  """(jitted training step, its state) on a fresh codec."""
  c = config.neural_codec
  codec = nc.FactorizedPriorCodec(c.n, c.m, prior_init_scale=c.prior_init_scale,
                                  rngs=nnx.Rngs(0))
  if impl == "dilated":
    with_dilated_synthesis(codec)
  codec.train()
  optimizer = optax.adam(1e-4)
  graph, params, rest = nnx.split(codec, nnx.Param, ...)

  @jax.jit
  def step(params, opt_state, x, key):
    def loss_fn(params):
      model = nnx.merge(graph, params, rest)
      x_hat, aux = model(x, key)
      return nc.rate_distortion_loss(x, x_hat, aux["bits"], LAMBDA)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step, (params, optimizer.init(params))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--quick", action="store_true",
                      help="batch 4, one repeat (a smoke run)")
  args = parser.parse_args(argv)
  batch_size, repeats = args.batch_size, args.repeats
  if args.quick:
    batch_size, repeats = 4, 1
  config = split_rd_config.get_config()
  side = config.neural_codec.train_patch
  x = jax.random.uniform(jax.random.key(1), (batch_size, side, side, 3))
  key = jax.random.key(2)
  rates = {}
  for impl in ("subpixel", "dilated"):
    step, (params, opt_state) = build_step(config, impl)
    seconds = best_time(lambda: step(params, opt_state, x, key), repeats)
    rates[impl] = batch_size / seconds
    print(f"  measured {impl}: {rates[impl]:.1f} images/s", flush=True)
  print(f"device: {jax.devices()[0].device_kind}; codec N="
        f"{config.neural_codec.n}, M={config.neural_codec.m}, batch "
        f"{batch_size}, {side}x{side}")
  print(f"{'synthesis':32s}{'images/s':>10s}")
  print(f"{'ours: sub-pixel convolution':32s}{rates['subpixel']:10.1f}")
  print(f"{'reference: nnx.ConvTranspose':32s}{rates['dilated']:10.1f}")
  print(f"sub-pixel is {rates['subpixel'] / rates['dilated']:.2f}x the "
        "reference")


if __name__ == "__main__":
  main()
