"""The README's optax example runs and trains (plain optax + jax, no agents)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_example_trains():
  with open(os.path.join(ROOT, 'README.md')) as f:
    text = f.read()
  blocks = re.findall(r'```python\n(.*?)```', text, re.S)
  assert blocks, 'README has no python example'
  namespace = {}
  exec(compile(blocks[0], 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  final = float(namespace['loss'](namespace['params']))
  assert final < 0.05 * 5.25, final


def test_readme_names_the_two_commands():
  with open(os.path.join(ROOT, 'README.md')) as f:
    text = f.read()
  assert './run.sh' in text and './test.sh' in text
  with open(os.path.join(ROOT, '.ci', 'run')) as f:
    assert './test.sh' in f.read()
