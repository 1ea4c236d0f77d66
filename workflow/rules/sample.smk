rule sample:
    """Partial forces: a random fraction p of the sampling units per configuration."""
    input:
        trajectories=f"{RESULTS}/{{system}}/trajectories/train.zarr/zarr.json",
    output:
        f"{RESULTS}/{{system}}/forces/p{{p}}/seed{{seed}}.zarr/zarr.json",
    params:
        settings=lambda wildcards: section(wildcards, "sample"),
        device=config["device"],
    log:
        f"{RESULTS}/logs/{{system}}/sample_p{{p}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{system}}/sample_p{{p}}_seed{{seed}}.tsv"
    conda:
        ENVIRONMENT
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: need("sample", wildcards, attempt).mem_mb,
        runtime=lambda wildcards, attempt: need("sample", wildcards, attempt).runtime,
        gpu=GPUS,
    shell:
        "macroclosure sample --trajectories {input.trajectories} --p {wildcards.p} --seed {wildcards.seed}"
        " --settings {params.settings:q} --device {params.device} --out {output} > {log} 2>&1"
