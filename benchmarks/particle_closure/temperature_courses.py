"""The LJ baselines beside a course linear in T0, from a results folder's trajectory stores (the
numbers in README.md here): mean course and linear course on the test trajectories and leave-one-out
over the training ones; the last line, a 5-frame running mean, is not a floor estimate (it smooths
the dynamics away as well).

    .venv/bin/python benchmarks/particle_closure/temperature_courses.py /work/exp_results/lj_particles
"""
import numpy as np, xarray as xr, sys
root = sys.argv[1]
def temps(split):
    ds = xr.open_zarr(f"{root}/lennard_jones/trajectories/{split}.zarr", consolidated=False)
    s = ds["state"].values  # [traj, time, dof]
    atoms = s.shape[-1] // 6
    return (s[..., 3*atoms:]**2).sum(-1) / (3 * (atoms - 1)), ds["time"].values
train, t = temps("train"); test, _ = temps("test")
def err(pred, truth): return (np.abs(pred - truth).sum(1) / np.abs(truth).sum(1))
mean_course = test[:, :1] * (train / train[:, :1]).mean(0)
print("frames", train.shape, "mean course", err(mean_course, test).mean())
# linear course in T0: T(t) = a(t) + b(t) T0 fitted on train
A = np.stack([np.ones(len(train)), train[:, 0]], 1)
coef, *_ = np.linalg.lstsq(A, train, rcond=None)
lin = np.stack([np.ones(len(test)), test[:, 0]], 1) @ coef
print("linear course in T0", err(lin, test).mean())
# leave-one-out on training trajectories for a less noisy estimate
e_mc, e_lin = [], []
for i in range(len(train)):
    rest = np.delete(train, i, 0)
    e_mc.append(err(train[i:i+1, :1] * (rest / rest[:, :1]).mean(0), train[i:i+1])[0])
    A = np.stack([np.ones(len(rest)), rest[:, 0]], 1); c, *_ = np.linalg.lstsq(A, rest, rcond=None)
    e_lin.append(err(np.array([[1, train[i, 0]]]) @ c, train[i:i+1])[0])
print("leave-one-out over train: mean course", np.mean(e_mc), "linear course", np.mean(e_lin))
# fluctuation: residual of each trajectory about a 5-frame running mean
k = 5
def smooth(x): 
    pad = np.pad(x, ((0,0),(k//2,k//2)), mode="edge"); return np.stack([pad[:, i:i+x.shape[1]] for i in range(k)]).mean(0)
print("own running mean (5 frames) residual", err(smooth(train), train).mean())
