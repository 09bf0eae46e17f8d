"""Exploratory dev A/B for issue 8: HECS-B with m measurements (not committed)."""
import sys
from hecsb_jax.configs import split_rd as cfg
from experiments import split_rd
m = int(sys.argv[1])
_orig = cfg.get_config
def patched(arg=None):
  c = _orig(arg)
  c.hecsb.num_measurements = m
  return c
cfg.get_config = patched
split_rd.main(sys.argv[2:])
