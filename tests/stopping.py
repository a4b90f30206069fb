"""A stop request that comes at a known point of a run, for resume tests."""

import os

from launchers.lib import driver


class StopAfterRows(driver.StopFlag):
  """Asks for a stop once the CSV at `path` has `rows` rows: as SIGTERM
  would between two jitted calls, but at a point the test chooses (the
  train loop appends a chunk's row before it checks for a stop)."""

  def __init__(self, path, rows):
    super().__init__()
    self.path, self.rows = path, rows

  @property
  def requested(self):
    if not os.path.exists(self.path):
      return False
    with open(self.path) as f:
      return len(f.read().splitlines()) - 1 >= self.rows

  @requested.setter
  def requested(self, value):
    del value  # set by the signal handler in a real run
