"""An asyncio micro-batcher: concurrent requests share one forward pass.

    request ─► submit(item) ─► queue ─► collector task:
        take the first item, then more until max_batch items or
        batch_wait_s has passed since the first ─► run(batch) in the
        worker thread ─► each request's future gets its own result

One worker thread runs the passes one after another: while a pass runs,
new requests queue up and form the next batch, so under load batches
grow on their own and at low load a request waits at most batch_wait_s.
With max_batch = 1 every request gets its own pass (the no-batching
reference the load benchmark compares against). Knows nothing of models:
`run` maps a list of items to a list of results.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
from typing import Any, Callable, Sequence


@dataclasses.dataclass(frozen=True)
class BatchResult:
  """What a request gets back.

  Attributes:
    value: its element of `run`'s result.
    queue_s: seconds from `submit` to its batch's start.
    run_s: seconds its batch's `run` took.
    batch: items in its batch.
  """

  value: Any
  queue_s: float
  run_s: float
  batch: int


class MicroBatcher:
  """Gathers submitted items into batches for a blocking `run`."""

  def __init__(self, run: Callable[[list], Sequence], *, max_batch: int,
               batch_wait_s: float,
               on_batch: Callable[[int], None] | None = None):
    """Args:
      run: blocking function, list of n items -> n results (called in the
        worker thread, one call at a time).
      max_batch: most items per call.
      batch_wait_s: longest a first item waits for company.
      on_batch: called with each batch's size (e.g. a histogram).
    """
    if max_batch < 1:
      raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if batch_wait_s < 0:
      raise ValueError(f"batch_wait_s must be >= 0, got {batch_wait_s}")
    self._run = run
    self.max_batch = max_batch
    self.batch_wait_s = batch_wait_s
    self._on_batch = on_batch
    self._queue: asyncio.Queue | None = None
    self._task: asyncio.Task | None = None
    self._executor: concurrent.futures.ThreadPoolExecutor | None = None

  async def start(self) -> None:
    """Starts the collector on the running loop (the app's lifespan)."""
    self._queue = asyncio.Queue()
    self._executor = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="hecsb-forward")
    self._task = asyncio.create_task(self._collect(), name="hecsb-batcher")

  async def stop(self) -> None:
    """Stops the collector; requests still queued get an error."""
    if self._task is not None:
      self._task.cancel()
      try:
        await self._task
      except asyncio.CancelledError:
        pass
      self._task = None
    while self._queue is not None and not self._queue.empty():
      _, _, future = self._queue.get_nowait()
      if not future.done():
        future.set_exception(RuntimeError("server shutting down"))
    if self._executor is not None:
      self._executor.shutdown(wait=True)
      self._executor = None

  async def submit(self, item: Any) -> BatchResult:
    """Queues `item` and waits for its result (run's exceptions re-raise)."""
    if self._task is None:
      raise RuntimeError("MicroBatcher.submit before start()")
    future = asyncio.get_running_loop().create_future()
    await self._queue.put((item, time.perf_counter(), future))
    return await future

  async def _collect(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      batch = [await self._queue.get()]
      deadline = loop.time() + self.batch_wait_s
      while len(batch) < self.max_batch:
        # What is queued already joins at once; then wait for more only
        # until the deadline.
        if not self._queue.empty():
          batch.append(self._queue.get_nowait())
          continue
        remaining = deadline - loop.time()
        if remaining <= 0:
          break
        try:
          batch.append(await asyncio.wait_for(self._queue.get(), remaining))
        except TimeoutError:
          break
      # A request whose client went away (cancelled) is dropped here.
      batch = [b for b in batch if not b[2].done()]
      if batch:
        await self._run_batch(loop, batch)

  async def _run_batch(self, loop, batch) -> None:
    start = time.perf_counter()
    items = [item for item, _, _ in batch]
    try:
      results = await loop.run_in_executor(self._executor, self._run, items)
      if len(results) != len(items):
        raise RuntimeError(f"run returned {len(results)} results for"
                           f" {len(items)} items")
    except Exception as e:  # every waiting request learns of the failure
      for _, _, future in batch:
        if not future.done():
          future.set_exception(e)
      return
    run_s = time.perf_counter() - start
    if self._on_batch is not None:
      self._on_batch(len(items))
    for (_, submitted, future), value in zip(batch, results):
      if not future.done():
        future.set_result(BatchResult(value, start - submitted, run_s,
                                      len(items)))
