"""One-line errors for the experiments' command lines.

A user's mistake (a missing folder, a malformed file, checkpoints of other
settings) ends the command with ``error: <one line>`` on stderr and exit
status 2, the traceback only with ``--debug``; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from typing import Callable, Iterator


@contextlib.contextmanager
def one_line_errors(
    errors: tuple[type[BaseException], ...],
    *,
    debug: bool = False,
    hint: Callable[[BaseException], str] | None = None,
) -> Iterator[None]:
  """Turns ``errors`` raised inside the block into one line and exit 2.

  Args:
    errors: the exception types that are the user's to fix.
    debug: print the traceback too.
    hint: what to add to the message for a given exception ("" for
      nothing), e.g. the option that fixes it.

  Raises:
    SystemExit: 2, for one of ``errors``.
  """
  try:
    yield
  except errors as e:
    if debug:
      traceback.print_exc()
    message = str(e).replace("\n", " ") + (hint(e) if hint else "")
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2) from None
