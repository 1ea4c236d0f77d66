rule baselines:
    """Persistence and mean-course rollout errors on the test trajectories: the error a model must beat."""
    input:
        train=f"{RESULTS}/{{system}}/trajectories/train.zarr/zarr.json",
        test=f"{RESULTS}/{{system}}/trajectories/test.zarr/zarr.json",
    output:
        f"{RESULTS}/{{system}}/baselines.json",
    log:
        f"{RESULTS}/logs/{{system}}/baselines.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{system}}/baselines.tsv"
    conda:
        ENVIRONMENT
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: need("baselines", wildcards, attempt).mem_mb,
        runtime=lambda wildcards, attempt: need("baselines", wildcards, attempt).runtime,
    shell:
        "OMP_NUM_THREADS={threads} macroclosure baselines --train {input.train} --test {input.test} --out {output} > {log} 2>&1"
