rule closure:
    """The closure autoencoder and the latent normalisation (torch)."""
    input:
        trajectories=f"{RESULTS}/{{system}}/trajectories/train.zarr",
    output:
        directory(f"{RESULTS}/{{system}}/closure"),
    params:
        settings=lambda wildcards: section(wildcards.system, "closure"),
        device=config["device"],
    log:
        f"{RESULTS}/logs/{{system}}/closure.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{system}}/closure.tsv"
    conda:
        "../../envs/macroclosure.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    shell:
        "macroclosure closure --trajectories {input.trajectories}"
        " --settings {params.settings:q} --device {params.device} --out {output} > {log} 2>&1"
