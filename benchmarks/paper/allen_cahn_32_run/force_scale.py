"""Mean squared force f_i^2 of 2 000 random training states of the 32 x 32 run (the scale of the L_x,p loss).
    .venv/bin/python benchmarks/paper/allen_cahn_32_run/force_scale.py
Printed on 2026-12-04: mean f_i^2 over 2000 training states: 351.6221085276305 median per state: 245.24705111256935
"""
import json, numpy as np, jax
from macroclosure.store import open_store
from macroclosure.systems import build_system
from macroclosure.runtime import use_float64
use_float64(True)
store = open_store("/work/exp/paper_allen_cahn_32/efficiency/allen_cahn/size32/trajectories/train.zarr", "trajectories")
settings = json.loads(store.attrs["provenance"])["settings"]
system = build_system(store.attrs["system"], settings)
states = store["state"].values.reshape(-1, store.sizes["dof"])
rng = np.random.default_rng(0)
x = states[rng.choice(len(states), 2000, replace=False)].astype(np.float64)
f = np.asarray(jax.vmap(system.rhs)(x))
print("mean f_i^2 over 2000 training states:", (f**2).mean(), "median per state:", np.median((f**2).mean(1)))
