rule train:
    """One latent model trained with one loss on one force sample."""
    input:
        trajectories=f"{RESULTS}/{{system}}/trajectories/train.zarr/zarr.json",
        forces=f"{RESULTS}/{{system}}/forces/p{{p}}/seed{{seed}}.zarr/zarr.json",
        closure=f"{RESULTS}/{{system}}/closure",
    output:
        directory(f"{RESULTS}/{{system}}/dynamics/{{model}}_{{loss}}_p{{p}}_seed{{seed}}"),
    params:
        settings=lambda wildcards: section(wildcards, "train"),
        device=config["device"],
    log:
        f"{RESULTS}/logs/{{system}}/train_{{model}}_{{loss}}_p{{p}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{system}}/train_{{model}}_{{loss}}_p{{p}}_seed{{seed}}.tsv"
    conda:
        ENVIRONMENT
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: need("train", wildcards, attempt).mem_mb,
        runtime=lambda wildcards, attempt: need("train", wildcards, attempt).runtime,
        gpu=GPUS,
    shell:
        "OMP_NUM_THREADS={threads} macroclosure train --trajectories {input.trajectories} --forces {input.forces}"
        " --closure {input.closure} --model {wildcards.model} --loss {wildcards.loss} --seed {wildcards.seed}"
        " --settings {params.settings:q} --device {params.device} --out {output} > {log} 2>&1"
