"""Two-stage distillation of a split student from a frozen teacher.

    batch {"image": [B, H, W, 3], "label": [B] (-1 = unlabelled)}
      │
      ├─► teacher (frozen, stored BatchNorm statistics) ─► features at the
      │   split [B, h, w, C_t], logits [B, K]        (same step: no caches)
      └─► student `SplitModel` ─► head ─► y_tilde, bits ─► decoder ─► tail

    stage 1 (head distillation):  ‖decoder(y_tilde) − teacher features‖²
                                   + β · bits per image
    stage 2 (fine-tuning):         α · CE(labels) + (1 − α) · T² ·
                                   KL(softmax(t / T) ‖ softmax(s / T))

Stage 1 is the head distillation of Matsubara et al. (sc2bench; "Supervised
compression for resource-constrained edge computing systems", WACV 2022),
the rate term that of Ballé et al.; stage 2 is Hinton et al.'s
knowledge distillation (2015), with sc2bench's α = 0.5 and T = 1 as the
defaults. The T² keeps the KL gradient's scale independent of T.

Units: the distortion is the mean squared error per feature element, the
rate the bits of one image's symbols under the prior (-Σ log2 p), so β is
"MSE per bit per image" (β = 1e-5: 100 kbit cost 1 MSE unit).

The loss functions have the trainer's signature
``loss_fn(model, batch, rng) -> (loss, metrics)`` with ``model`` a
`TeacherStudent`; the teacher is part of the model, frozen by the
``trainable=`` filter (`stage1_trainable`, `stage2_trainable`), so its
features and logits are computed inside every step. Which side of the
bottleneck is noisy follows the student's mode (``.train()``: noise,
``.eval()``: rounding) unless a factory says otherwise.
"""

from __future__ import annotations

from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from hecsb_jax.models.split import SplitModel

LossFn = Callable[[nnx.Module, Any, jax.Array], tuple[jax.Array, dict]]


class TeacherStudent(nnx.Module):
  """The frozen teacher beside the split student it trains.

  Attributes:
    teacher: backbone with ``features``/``tail``/``__call__``; always run
      with its stored BatchNorm statistics.
    student: `SplitModel` cut at ``student.split``.
  """

  def __init__(self, teacher: nnx.Module, student: SplitModel):
    """Holds both; arrays shared between them are copied (see below).

    Args:
      teacher: the frozen network.
      student: a `SplitModel` whose backbone (and a `TeacherPrefix`
        acquisition) are typically `nnx.clone`s of the teacher.
    """
    self.teacher = teacher
    self.student = student
    _unshare_arrays(self)

  def _teacher(self) -> nnx.Module:
    # fit() puts the whole model in training mode; the teacher must still
    # compute its inference-time function.
    return nnx.view(self.teacher, only=nnx.BatchNorm,
                    use_running_average=True)

  def teacher_features(self, x: jax.Array) -> jax.Array:
    """[B, H, W, 3] -> the teacher's split features (no gradient)."""
    return jax.lax.stop_gradient(
        self._teacher().features(x, until=self.student.split))

  def teacher_logits(self, x: jax.Array) -> jax.Array:
    """[B, H, W, 3] -> the teacher's logits [B, K] (no gradient)."""
    return jax.lax.stop_gradient(self._teacher()(x))

  def project_(self) -> None:
    """The student's constraints (the measurement's norm bound)."""
    self.student.project_()


def _unshare_arrays(module: nnx.Module) -> None:
  """Gives every variable its own buffer.

  `nnx.clone` makes new variables around the same immutable arrays; the
  trainer donates its state to each step, and XLA refuses to donate one
  buffer twice, so a clone of the teacher beside the teacher would fail
  at the first step.
  """
  seen = set()

  def own(x):
    if not isinstance(x, jax.Array):
      return x
    if id(x) in seen:
      return jnp.copy(x)
    seen.add(id(x))
    return x

  nnx.update(module, jax.tree.map(own, nnx.state(module)))


# ------------------------------------------------------------ pure losses


def distortion_rate(
    decoded: jax.Array, target: jax.Array, bits: jax.Array, beta: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Stage-1 objective: MSE + β · bits per image.

  Args:
    decoded: [B, h, w, C] float32, decoder(y_tilde).
    target: [B, h, w, C] float32, the teacher's features.
    bits: [B] float32, -Σ log2 p of each image's symbols.
    beta: rate weight (MSE per bit per image).

  Returns:
    (loss, {"mse", "bits_per_image"}) scalars.
  """
  mse = jnp.mean(jnp.square(decoded - target))
  bits_per_image = jnp.mean(bits)
  return mse + beta * bits_per_image, {"mse": mse,
                                       "bits_per_image": bits_per_image}


def knowledge_distillation(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    labels: jax.Array,
    alpha: float = 0.5,
    temperature: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """α · CE + (1 − α) · T² · KL(teacher ‖ student), batch means.

  Unlabelled examples (label < 0) contribute to the KL term only; the CE
  and top-1 are means over the labelled ones (0 when there are none).

  Args:
    student_logits: [B, K] float32.
    teacher_logits: [B, K] float32.
    labels: [B] int32 class indices, -1 for unlabelled.
    alpha: weight of the cross-entropy.
    temperature: T of both softmaxes in the KL term.

  Returns:
    (loss, {"ce", "kl", "top1"}) scalars; ``kl`` is the plain KL at T
    (without the T² factor).
  """
  labels = jnp.asarray(labels, jnp.int32)
  labelled = (labels >= 0).astype(jnp.float32)
  count = jnp.maximum(jnp.sum(labelled), 1.0)
  safe = jnp.maximum(labels, 0)
  ce_each = optax.softmax_cross_entropy_with_integer_labels(
      student_logits, safe)
  ce = jnp.sum(labelled * ce_each) / count
  log_p_t = jax.nn.log_softmax(teacher_logits / temperature)
  log_p_s = jax.nn.log_softmax(student_logits / temperature)
  kl = jnp.mean(jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1))
  correct = (jnp.argmax(student_logits, axis=-1) == labels)
  top1 = jnp.sum(labelled * correct) / count
  loss = alpha * ce + (1.0 - alpha) * temperature**2 * kl
  return loss, {"ce": ce, "kl": kl, "top1": top1}


# ----------------------------------------------------- trainer loss_fns


def make_stage1_loss(
    beta: float, *, reuse_teacher_features: bool = False
) -> LossFn:
  """Head distillation: ``loss_fn(model: TeacherStudent, batch, rng)``.

  Args:
    beta: rate weight, see `distortion_rate`.
    reuse_teacher_features: feed the teacher's split features to the
      student's measurement instead of running its acquisition network.
      Only valid when that network is a frozen `TeacherPrefix` of the same
      teacher (then the two are equal and this halves the work before the
      split).

  Returns:
    The loss function; metrics ``mse`` and ``bits_per_image``.
  """

  def loss_fn(model: TeacherStudent, batch, rng):
    x = batch["image"]
    target = model.teacher_features(x)
    h, aux = model.student.head(
        x, rng, features=target if reuse_teacher_features else None)
    return distortion_rate(model.student.decode(h), target, aux["bits"],
                           beta)

  return loss_fn


def make_stage2_loss(
    alpha: float = 0.5,
    temperature: float = 1.0,
    *,
    beta: float = 0.0,
    noisy: bool = False,
) -> LossFn:
  """Fine-tuning by KD: ``loss_fn(model: TeacherStudent, batch, rng)``.

  Args:
    alpha, temperature: see `knowledge_distillation`.
    beta: rate weight added to the loss (matters only when the encoder
      is trained in this stage).
    noisy: False (default) rounds the measurements in training too, so the
      decoder and tail adapt to exactly the symbols they will receive;
      True uses the uniform-noise proxy in training mode.

  Returns:
    The loss function; metrics ``ce``, ``kl``, ``top1``,
    ``bits_per_image``.
  """

  def loss_fn(model: TeacherStudent, batch, rng):
    x = batch["image"]
    teacher_logits = model.teacher_logits(x)
    training = None if noisy else False
    logits, aux = model.student(x, rng, training=training)
    loss, metrics = knowledge_distillation(
        logits, teacher_logits, batch["label"], alpha, temperature)
    if "bits" in aux:
      bits_per_image = jnp.mean(aux["bits"])
      loss = loss + beta * bits_per_image
      metrics["bits_per_image"] = bits_per_image
    return loss, metrics

  return loss_fn


# --------------------------------------------------- what each stage trains


def stage1_trainable(train_acquisition: bool = True) -> Any:
  """nnx filter: the student's bottleneck (acquisition optional)."""
  parts = [nnx.Param, nnx.PathContains("student"),
           nnx.PathContains("bottleneck")]
  if not train_acquisition:
    parts.append(nnx.Not(nnx.PathContains("acquisition")))
  return nnx.All(*parts)


def entropy_model_lr(multiplier: float) -> Callable[[nnx.State], Any]:
  """`fit`'s ``lr_multipliers``: the prior's parameters at ``multiplier``×.

  The factorized prior must describe the measurements the encoder makes
  now: the bits it charges are the rate term's only gradient path to W.
  When W shrinks (a larger β) faster than the prior's density narrows,
  the prior charges for a width y no longer has (measured on the first
  full run: 67 kbit per image under the prior for symbols whose
  empirical entropy was 9.6 kbit), and the rate term barely moves.
  """

  def multipliers(params: nnx.State) -> Any:
    flat = nnx.to_flat_state(params)
    return nnx.from_flat_state([
        (path, jax.tree.map(
            lambda _: float(multiplier) if "entropy" in path else 1.0,
            var))
        for path, var in flat])

  return multipliers


def stage2_trainable(
    train_encoder: bool = False, train_acquisition: bool = False
) -> Any:
  """nnx filter of stage 2.

  Args:
    train_encoder: False (sc2bench): decoder and tail only, encoder
      (measurement) and prior frozen; True: measurement and prior too
      (the paper's whole student).
    train_acquisition: also the acquisition network (with
      ``train_encoder``).

  Returns:
    An nnx filter over `TeacherStudent` paths.
  """
  student = nnx.All(nnx.Param, nnx.PathContains("student"))
  if not train_encoder:
    server = nnx.Any(
        nnx.PathContains("decoder"),
        # The student backbone's layers (its tail); a TeacherPrefix also
        # calls its copy "backbone", under "acquisition".
        nnx.All(nnx.PathContains("backbone"),
                nnx.Not(nnx.PathContains("acquisition"))),
    )
    return nnx.All(student, server)
  if not train_acquisition:
    return nnx.All(student, nnx.Not(nnx.PathContains("acquisition")))
  return student


def project(model: nnx.Module) -> None:
  """`fit`'s ``project_fn``: ``model.project_()`` (a `TeacherStudent`'s
  measurement bound; a no-op for models without constraints, such as the
  image codec)."""
  model.project_()
