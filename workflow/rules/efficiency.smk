# The `efficiency` target: rollout error against force evaluations (config `efficiency:`).
# Every run of the grid reuses a pipeline rule (`use rule ... with:`) on its own paths under
# {results}/efficiency/{system}/size{size}/, so a run is one ordinary job of each stage; its
# params and resources come from the pipeline rule (common.smk reads the `size` wildcard).
EFFICIENCY = f"{RESULTS}/efficiency"
EFFICIENCY_RUNS = plan(config)
# Inline in the first output of each rule below: the global `system` constraint names the
# pipeline's systems, which need not include the efficiency ones.
EFFICIENCY_SYSTEM = "{system," + ("|".join(EFFICIENCY_GRIDS) or "none") + "}"
EFFICIENCY_SIZE = f"{EFFICIENCY}/{EFFICIENCY_SYSTEM}/size{{size,\\d+}}"
SIZE_FOLDER = f"{EFFICIENCY}/{{system}}/size{{size}}"
RUN = "{model}_{loss}_{subset}_c{configurations}_seed{seed}"
EFFICIENCY_LOGS = f"{RESULTS}/logs/efficiency/{{system}}/size{{size}}"
EFFICIENCY_BENCHMARKS = f"{RESULTS}/benchmarks/efficiency/{{system}}/size{{size}}"


use rule simulate as efficiency_simulate with:
    output:
        f"{EFFICIENCY_SIZE}/trajectories/{{split}}.zarr/zarr.json",
    log:
        f"{EFFICIENCY_LOGS}/simulate_{{split}}.log",
    benchmark:
        f"{EFFICIENCY_BENCHMARKS}/simulate_{{split}}.tsv"


use rule sample as efficiency_sample with:
    input:
        trajectories=f"{SIZE_FOLDER}/trajectories/train.zarr/zarr.json",
    output:
        f"{EFFICIENCY_SIZE}/forces/p{{p}}/c{{configurations,\\d+}}_seed{{seed}}.zarr/zarr.json",
    log:
        f"{EFFICIENCY_LOGS}/sample_p{{p}}_c{{configurations}}_seed{{seed}}.log",
    benchmark:
        f"{EFFICIENCY_BENCHMARKS}/sample_p{{p}}_c{{configurations}}_seed{{seed}}.tsv"


use rule closure as efficiency_closure with:
    input:
        trajectories=f"{SIZE_FOLDER}/trajectories/train.zarr/zarr.json",
    output:
        directory(f"{EFFICIENCY_SIZE}/closure"),
    log:
        f"{EFFICIENCY_LOGS}/closure.log",
    benchmark:
        f"{EFFICIENCY_BENCHMARKS}/closure.tsv"


use rule train as efficiency_train with:
    input:
        trajectories=f"{SIZE_FOLDER}/trajectories/train.zarr/zarr.json",
        forces=efficiency_forces,
        closure=f"{SIZE_FOLDER}/closure",
    output:
        directory(f"{EFFICIENCY_SIZE}/dynamics/{{model}}_{{loss}}_{{subset,[pk][0-9.e-]+}}_c{{configurations,\\d+}}_seed{{seed}}"),
    log:
        f"{EFFICIENCY_LOGS}/train_{RUN}.log",
    benchmark:
        f"{EFFICIENCY_BENCHMARKS}/train_{RUN}.tsv"


use rule evaluate as efficiency_evaluate with:
    input:
        model=f"{SIZE_FOLDER}/dynamics/{RUN}",
        closure=f"{SIZE_FOLDER}/closure",
        trajectories=f"{SIZE_FOLDER}/trajectories/test.zarr/zarr.json",
    output:
        metrics=f"{EFFICIENCY_SIZE}/evaluation/{{model}}_{{loss}}_{{subset,[pk][0-9.e-]+}}_c{{configurations,\\d+}}_seed{{seed}}/metrics.json",
        rollout=f"{SIZE_FOLDER}/evaluation/{RUN}/rollout.png",
    log:
        f"{EFFICIENCY_LOGS}/evaluate_{RUN}.log",
    benchmark:
        f"{EFFICIENCY_BENCHMARKS}/evaluate_{RUN}.tsv"


use rule baselines as efficiency_baselines with:
    input:
        train=f"{SIZE_FOLDER}/trajectories/train.zarr/zarr.json",
        test=f"{SIZE_FOLDER}/trajectories/test.zarr/zarr.json",
    output:
        f"{EFFICIENCY_SIZE}/baselines.json",
    log:
        f"{EFFICIENCY_LOGS}/baselines.log",
    benchmark:
        f"{EFFICIENCY_BENCHMARKS}/baselines.tsv"


rule efficiency_report:
    """Tables and figures of the efficiency grid: error against force evaluations, cost to e_tol."""
    input:
        metrics=[f"{EFFICIENCY}/{run.folder}/evaluation/{run.name}/metrics.json" for run in EFFICIENCY_RUNS],
        baselines=[f"{EFFICIENCY}/{system}/size{size}/baselines.json" for system, grid in EFFICIENCY_GRIDS.items()
                   for size in sizes(system, grid)],
    output:
        points=report(f"{EFFICIENCY}/points.html", caption="../report/efficiency_points.rst", category="Efficiency"),
        reached=report(f"{EFFICIENCY}/to_tolerance.html", caption="../report/efficiency_tolerance.rst", category="Efficiency"),
        ratios=report(f"{EFFICIENCY}/ratios.html", caption="../report/efficiency_ratios.rst", category="Efficiency"),
        csv=[report(f"{EFFICIENCY}/{table}.csv", caption="../report/efficiency_csv.rst", category="Efficiency")
             for table in ("points", "to_tolerance", "ratios")],
        markdown=f"{EFFICIENCY}/to_tolerance.md",
        data=[
            report(f"{EFFICIENCY}/data_efficiency_{system}.png", caption="../report/efficiency_data.rst", category="Efficiency")
            for system in EFFICIENCY_GRIDS
        ],
        scaling=[
            report(f"{EFFICIENCY}/scaling_{system}.png", caption="../report/efficiency_scaling.rst", category="Efficiency")
            for system, grid in EFFICIENCY_GRIDS.items()
            if len(sizes(system, grid)) > 1
        ],
    params:
        settings_digest=digest(config["efficiency"]),
        folder=lambda wildcards, output: os.path.dirname(output.points),
    log:
        f"{RESULTS}/logs/efficiency/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/efficiency/report.tsv"
    conda:
        ENVIRONMENT
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "macroclosure efficiency --metrics {input.metrics} --baselines {input.baselines}"
        ' --settings "$MACROCLOSURE_EFFICIENCY" --out {params.folder} > {log} 2>&1'


rule efficiency:
    """Target: the efficiency tables and figures (not part of `all`)."""
    input:
        rules.efficiency_report.output if EFFICIENCY_RUNS else [],
