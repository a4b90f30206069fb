r"""Peer check: our PPO + Adam against Brax's own PPO trainer, side by side.

    python -m launchers.peer_check --config=configs/peer_check.py:ant \
        --workdir=runs/peer_check_ant

Same Brax task, settings and env-step budget on both sides; reports env steps
per second after compilation and the return of each side's policy, measured
the same way. Writes results.csv, curves.csv, results.md and returns.png into
--workdir. The work, and what is measured how, is in launchers/lib/peer.py.
"""

from absl import app
from absl import flags

from launchers.lib import peer
from launchers.lib import runtime
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/peer_check.py', 'Config file.')
_WORKDIR = flags.DEFINE_string('workdir', '', 'Output directory.')


def main(argv):
  cfg = runtime.start(argv, _CONFIG.value)
  peer.peer_check(cfg, _WORKDIR.value or f'runs/peer_check_{cfg.env_name}')


if __name__ == '__main__':
  app.run(main)
