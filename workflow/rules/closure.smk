rule closure:
    """The closure autoencoder and the latent normalisation (torch)."""
    input:
        trajectories=f"{RESULTS}/{{system}}/trajectories/train.zarr/zarr.json",
    output:
        directory(f"{RESULTS}/{{system}}/closure"),
    params:
        settings=lambda wildcards: section(wildcards, "closure"),
        device=config["device"],
    log:
        f"{RESULTS}/logs/{{system}}/closure.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{system}}/closure.tsv"
    conda:
        ENVIRONMENT
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: need("closure", wildcards, attempt).mem_mb,
        runtime=lambda wildcards, attempt: need("closure", wildcards, attempt).runtime,
        gpu=GPUS,
    shell:
        "OMP_NUM_THREADS={threads} macroclosure closure --trajectories {input.trajectories}"
        " --settings {params.settings:q} --device {params.device} --out {output} > {log} 2>&1"
