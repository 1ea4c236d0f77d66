rule simulate:
    """Microscopic trajectories of one system and split (JAX, batched and jit-compiled; LJ with LAMMPS or jax-md)."""
    output:
        f"{RESULTS}/{{system,{SIMULATED_SYSTEMS}}}/trajectories/{{split}}.zarr/zarr.json",
    params:
        system=lambda wildcards: module_of(wildcards.system),
        settings=lambda wildcards: section(wildcards, "simulate"),
        device=config["device"],
    log:
        f"{RESULTS}/logs/{{system}}/simulate_{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{system}}/simulate_{{split}}.tsv"
    conda:
        ENVIRONMENT
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: need("simulate", wildcards, attempt).mem_mb,
        runtime=lambda wildcards, attempt: need("simulate", wildcards, attempt).runtime,
        gpu=simulate_gpus,
    shell:
        "OMP_NUM_THREADS={threads} macroclosure simulate --system {params.system} --split {wildcards.split}"
        " --settings {params.settings:q} --device {params.device} --out {output} > {log} 2>&1"


rule adopt:
    """An imported trajectory store (`simulate.source`), checked against the simulate settings and
    copied into place instead of simulating: a changed imported store reruns what reads it."""
    input:
        source_store,
    output:
        f"{RESULTS}/{{system,{IMPORTED_SYSTEMS}}}/trajectories/{{split}}.zarr/zarr.json",
    params:
        settings=lambda wildcards: section(wildcards, "simulate"),
    log:
        f"{RESULTS}/logs/{{system}}/adopt_{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{system}}/adopt_{{split}}.tsv"
    conda:
        ENVIRONMENT
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: need("adopt", wildcards, attempt).mem_mb,
        runtime=lambda wildcards, attempt: need("adopt", wildcards, attempt).runtime,
    shell:
        "macroclosure adopt --source {input} --split {wildcards.split} --settings {params.settings:q}"
        " --out {output} > {log} 2>&1"
