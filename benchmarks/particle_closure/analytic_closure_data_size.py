"""Data-size checks of analytic_closure.py's MLP on (T, u, p, w) (README, "The ceiling of a thermodynamic closure"),
run once after analytic_closure.py has cached its variables in the results folder:

    .venv/bin/python benchmarks/particle_closure/analytic_closure_data_size.py

Output of 2026-12-04 (loaded machine, about 10 minutes): analytic_closure_data_size.txt."""
import sys, numpy as np, torch
sys.path.insert(0, "benchmarks/particle_closure")
import analytic_closure as ac
torch.set_num_threads(1)
train, test, dt, box = ac.cached_variables("/work/exp/lj800_t128_test32", 1)
dz = ac.rates(train, dt, box.atoms)
t_test = test[..., :1]
rng = np.random.default_rng(0)
cols = (0, 1, 2, 3)
for n in (2000, 8000):
    flat = train.reshape(-1, 4); dflat = dz.reshape(-1, 4)
    pick = rng.choice(len(flat), n, replace=False)
    g = ac.fit_network(flat[pick][None], dflat[pick][None])
    pred = ac.rollout(g, test[:, 0, cols], test.shape[1] - 1, dt)
    print(f"(T,u,p,w) MLP tanh 2x64 on {n} random frames: {ac.temperature_error(pred, t_test):.3e}", flush=True)
    for deg in (2,):
        g = ac.fit(flat[pick][None][..., cols], dflat[pick][None][..., cols], deg)
        pred = ac.rollout(g, test[:, 0, cols], test.shape[1] - 1, dt)
        print(f"(T,u,p,w) poly {deg} on {n}: {ac.temperature_error(pred, t_test):.3e}", flush=True)
for seed in (1, 2):
    g = ac.fit_network(train, dz, seed=seed)
    pred = ac.rollout(g, test[:, 0, cols], test.shape[1] - 1, dt)
    print(f"(T,u,p,w) MLP tanh all frames seed {seed}: {ac.temperature_error(pred, t_test):.3e}", flush=True)

# the default run's data: the first 32 trajectories, every 10th frame (a second run: its own stream)
rng = np.random.default_rng(0)
for trajectories, every, n in ((32, 10, 400), (32, 1, 400), (128, 1, 400), (32, 10, 832)):
    z = train[:trajectories, ::every].reshape(-1, 4); d = dz[:trajectories, ::every].reshape(-1, 4)
    pick = rng.choice(len(z), min(n, len(z)), replace=False)
    for seed in (0, 1):
        g = ac.fit_network(z[pick][None], d[pick][None], seed=seed)
        pred = ac.rollout(g, test[:, 0], test.shape[1] - 1, dt)
        print(f"{trajectories} trajectories, every {every}th frame, {n} states, seed {seed}: {ac.temperature_error(pred, test[..., :1]):.3e}", flush=True)
