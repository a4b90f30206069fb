"""The gridworlds of Oh et al. (2020), as used by Optim4RL, in pure JAX.

Each gridworld is a rectangle of walls (`#`) around an empty interior. The
agent moves with one of 9 actions (stay, the four moves, the four diagonals);
a move whose target cell is a wall leaves the agent where it is (there is no
sliding along walls for diagonals).

A few objects lie on the interior, each given by
`(reward, terminate_prob, respawn_prob)`. When the agent steps onto a present
object it receives `reward`, the object is removed, and the episode terminates
with probability `terminate_prob`. On every later step a removed object
reappears with probability `respawn_prob` at a uniformly random empty interior
cell (one holding neither the agent nor a present object). Respawn is only
tried for objects that were already absent at the start of the step, so an
object collected on a step never reappears on that same step.

Episodes are truncated after `max_steps` steps: `truncated` is True on the
step that brings the step counter to `max_steps`. Both flags are reported as
they are, so a termination on that last step gives `terminated` and
`truncated` both True (learners should treat it as a termination). Observations are float32
arrays of shape `(rows, cols, num_objects + 1)`, channels last: channel `i`
is 1 at object `i`'s cell while it is present, and the last channel is 1 at
the agent's cell.

Usage:

  env = GridWorld('small_dense_short')
  obs, state = env.reset(key)
  obs, state, reward, terminated, truncated, info = env.step(key, state, a)
"""

from typing import Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from agents import env_base

Array = jax.Array
Object = Tuple[float, float, float]  # (reward, terminate_prob, respawn_prob)


class GridSpec(NamedTuple):
  """The layout of one gridworld.

  Attributes:
    rows: Map height, walls included (the interior has `rows - 2` rows).
    cols: Map width, walls included (the interior has `cols - 2` columns).
    objects: One `(reward, terminate_prob, respawn_prob)` tuple per object.
    max_steps: Steps after which an episode is truncated.
  """
  rows: int
  cols: int
  objects: Tuple[Object, ...]
  max_steps: int


class GridState(NamedTuple):
  """The state of one gridworld episode.

  Attributes:
    agent: int32 [2], the agent's (row, col).
    objects: int32 [num_objects, 2], each object's (row, col); meaningless for
      an object that is not present.
    present: bool [num_objects], whether each object is on the map.
    time: int32 scalar, steps taken in this episode.
  """
  agent: Array
  objects: Array
  present: Array
  time: Array


_SPARSE_GOOD = (1.0, 0.0, 0.05)
_SPARSE_BAD = (-1.0, 0.5, 0.05)
_DENSE_GOOD = (1.0, 0.0, 0.5)
_DENSE_BAD = (-1.0, 0.5, 0.5)

GRIDWORLDS: Dict[str, GridSpec] = {
    'small_sparse_short': GridSpec(5, 10, (_SPARSE_GOOD, _SPARSE_BAD), 50),
    'small_sparse_long': GridSpec(10, 5, (_SPARSE_GOOD, _SPARSE_BAD), 500),
    'small_dense_short': GridSpec(6, 8, (_DENSE_GOOD, _DENSE_BAD), 50),
    'small_dense_long': GridSpec(8, 6, (_DENSE_GOOD, _DENSE_BAD), 500),
    'big_sparse_short': GridSpec(
        12, 14, (_SPARSE_GOOD,) * 2 + (_SPARSE_BAD,) * 2, 50),
    'big_sparse_long': GridSpec(
        14, 12, (_SPARSE_GOOD,) * 2 + (_SPARSE_BAD,) * 2, 500),
    'big_dense_short': GridSpec(
        11, 15, (_DENSE_GOOD,) * 2 + (_DENSE_BAD,) * 2, 50),
    'big_dense_long': GridSpec(
        15, 11, (_DENSE_GOOD,) * 2 + (_DENSE_BAD,) * 2, 500),
}

# (d_row, d_col) per action: stay, up, down, left, right, then the diagonals
# up-left, up-right, down-left, down-right.
MOVES = np.array(
    [[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1],
     [-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=np.int32)


class GridWorld(env_base.Environment):
  """One of the gridworlds in `GRIDWORLDS`, pure-functional and jittable.

  Attributes:
    name: The gridworld's name, a key of `GRIDWORLDS`.
    spec: Its `GridSpec`.
    num_actions: 9 (stay, 4 moves, 4 diagonals; see `MOVES`).
    observation_shape: `(rows, cols, num_objects + 1)`.
  """

  num_actions = len(MOVES)

  def __init__(self, name: str):
    if name not in GRIDWORLDS:
      raise ValueError(f'env_name: unknown gridworld {name!r}; '
                       f'allowed: {sorted(GRIDWORLDS)}')
    self.name = name
    self.spec = GRIDWORLDS[name]
    self.num_objects = len(self.spec.objects)
    self.observation_shape = (
        self.spec.rows, self.spec.cols, self.num_objects + 1)
    # Interior size; interior cell (r, c) has flat index
    # (r - 1) * interior_cols + (c - 1).
    self._interior_rows = self.spec.rows - 2
    self._interior_cols = self.spec.cols - 2
    self._num_cells = self._interior_rows * self._interior_cols
    table = np.asarray(self.spec.objects, dtype=np.float32)
    self._rewards = table[:, 0]
    self._terminate_probs = table[:, 1]
    self._respawn_probs = table[:, 2]

  def _to_cell(self, flat: Array) -> Array:
    """Interior flat index (any shape) -> map (row, col), shape [..., 2]."""
    return jnp.stack([flat // self._interior_cols + 1,
                      flat % self._interior_cols + 1], axis=-1).astype(
                          jnp.int32)

  def _occupied(self, cells: Array, mask: Array) -> Array:
    """bool [num_cells]: which interior cells hold one of `cells[mask]`."""
    flat = (cells[:, 0] - 1) * self._interior_cols + (cells[:, 1] - 1)
    hits = jnp.arange(self._num_cells)[:, None] == flat[None, :]
    return jnp.any(hits & mask[None, :], axis=1)

  def observation(self, state: GridState) -> Array:
    """float32 [rows, cols, num_objects + 1]: object channels, then agent."""
    cells = jnp.concatenate([state.objects, state.agent[None]], axis=0)
    shown = jnp.concatenate([state.present, jnp.ones((1,), bool)])
    # One-hot by broadcast comparison rather than scatter: cheap for these
    # small maps and friendly to vmap.
    on_row = jnp.arange(self.spec.rows)[:, None] == cells[None, :, 0]
    on_col = jnp.arange(self.spec.cols)[:, None] == cells[None, :, 1]
    grid = on_row[:, None, :] & on_col[None, :, :] & shown[None, None, :]
    return grid.astype(jnp.float32)

  def reset_env(self, key: Array) -> Tuple[Array, GridState]:
    """Agent and all objects at distinct uniformly random interior cells."""
    return self._reset_drawn(self._reset_draws(key))

  def step_env(self, key: Array, state: GridState, action: Array
               ) -> Tuple[Array, GridState, Array, Array, Array]:
    """Move, collect, maybe respawn; no auto-reset (see `Environment.step`)."""
    return self._step_drawn(self._step_draws(key), state, action)

  def draw(self, key: Array) -> Tuple[Array, Array]:
    """A step's draws: those of `step_env` and of the auto-reset's
    `reset_env`, from the keys `Environment.step` would give them."""
    key_step, key_reset = jax.random.split(key)
    return self._step_draws(key_step), self._reset_draws(key_reset)

  def step_drawn(self, draws: Tuple[Array, Array], state: GridState,
                 action: Array) -> env_base.StepOutput:
    step_draws, reset_draws = draws
    return env_base.auto_reset(self._step_drawn(step_draws, state, action),
                               self._reset_drawn(reset_draws))

  def _reset_draws(self, key: Array) -> Array:
    """float32 [num_cells]: one uniform draw per interior cell."""
    return jax.random.uniform(key, (self._num_cells,))

  def _reset_drawn(self, draws: Array) -> Tuple[Array, GridState]:
    # The cells with the num_objects + 1 largest of independent uniform draws
    # form a uniformly random set of distinct cells, in uniformly random order.
    flat = jax.lax.top_k(draws, self.num_objects + 1)[1]
    cells = self._to_cell(flat)
    state = GridState(
        agent=cells[-1],
        objects=cells[:-1],
        present=jnp.ones((self.num_objects,), bool),
        time=jnp.zeros((), jnp.int32))
    return self.observation(state), state

  def _step_draws(self, key: Array) -> Array:
    """float32 [num_objects, num_cells + 2]: all the randomness of a step in
    one draw (one PRNG call compiles and runs faster than several): per
    object, a terminate draw, a respawn draw and one draw per interior cell
    to pick where it respawns."""
    return jax.random.uniform(key, (self.num_objects, self._num_cells + 2))

  def _step_drawn(self, draws: Array, state: GridState, action: Array
                  ) -> Tuple[Array, GridState, Array, Array, Array]:
    # Move unless the target cell is a wall.
    target = state.agent + jnp.asarray(MOVES)[action]
    inside = ((target[0] >= 1) & (target[0] <= self.spec.rows - 2) &
              (target[1] >= 1) & (target[1] <= self.spec.cols - 2))
    agent = jnp.where(inside, target, state.agent)

    # Collect the present object under the agent (objects never share a cell,
    # so at most one is hit).
    hit = state.present & jnp.all(state.objects == agent[None, :], axis=1)
    reward = jnp.sum(jnp.where(hit, self._rewards, 0.0)).astype(jnp.float32)
    terminated = jnp.any(hit & (draws[:, 0] < self._terminate_probs))
    present = state.present & ~hit

    # Respawn objects that were absent when the step began, one after another
    # so that two respawning objects never land on the same cell. The loop is
    # over a small static number of objects.
    respawn = ~state.present & (draws[:, 1] < self._respawn_probs)
    # Cells taken by the agent (after its move) and the objects still present.
    occupied = self._occupied(
        jnp.concatenate([state.objects, agent[None]], axis=0),
        jnp.concatenate([present, jnp.ones((1,), bool)]))
    all_cells = jnp.arange(self._num_cells)
    objects = state.objects
    for i in range(self.num_objects):
      # The free cell with the largest draw is a uniformly random free cell.
      flat = jnp.argmax(jnp.where(occupied, -1.0, draws[i, 2:]))
      objects = objects.at[i].set(
          jnp.where(respawn[i], self._to_cell(flat), objects[i]))
      occupied = occupied | (respawn[i] & (all_cells == flat))
    present = present | respawn

    time = state.time + 1
    truncated = time >= self.spec.max_steps
    state = GridState(agent=agent, objects=objects, present=present, time=time)
    return self.observation(state), state, reward, terminated, truncated
