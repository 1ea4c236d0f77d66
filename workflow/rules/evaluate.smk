rule evaluate:
    """RK4 rollouts against the encoded test trajectories: error and figure."""
    input:
        model=f"{RESULTS}/{{system}}/dynamics/{{model}}_{{loss}}_p{{p}}_seed{{seed}}",
        closure=f"{RESULTS}/{{system}}/closure",
        trajectories=f"{RESULTS}/{{system}}/trajectories/test.zarr/zarr.json",
    output:
        metrics=f"{RESULTS}/{{system}}/evaluation/{{model}}_{{loss}}_p{{p}}_seed{{seed}}/metrics.json",
        rollout=rollout_figure(f"{RESULTS}/{{system}}/evaluation/{{model}}_{{loss}}_p{{p}}_seed{{seed}}/rollout.png"),
    params:
        settings=lambda wildcards: section(wildcards, "evaluate"),
        folder=lambda wildcards, output: os.path.dirname(output.metrics),
        device=config["device"],
    log:
        f"{RESULTS}/logs/{{system}}/evaluate_{{model}}_{{loss}}_p{{p}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{system}}/evaluate_{{model}}_{{loss}}_p{{p}}_seed{{seed}}.tsv"
    conda:
        ENVIRONMENT
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: need("evaluate", wildcards, attempt).mem_mb,
        runtime=lambda wildcards, attempt: need("evaluate", wildcards, attempt).runtime,
        gpu=GPUS,
    shell:
        "OMP_NUM_THREADS={threads} macroclosure evaluate --model-dir {input.model} --closure {input.closure}"
        " --trajectories {input.trajectories} --settings {params.settings:q} --device {params.device} --out {params.folder} > {log} 2>&1"
