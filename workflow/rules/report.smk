rule report:
    """Summary table (CSV, Markdown) and figures over every evaluated model."""
    input:
        metrics=[f"{RESULTS}/{system}/evaluation/{run}/metrics.json" for system in SYSTEMS
                 for run in run_names(config["systems"][system])],
        models=[f"{RESULTS}/{system}/dynamics/{run}" for system in SYSTEMS for run in run_names(config["systems"][system])],
        baselines=[f"{RESULTS}/{system}/baselines.json" for system in SYSTEMS],
    output:
        table=report(f"{RESULTS}/report/summary.html", caption="../report/summary.rst", category="Summary"),
        csv=report(f"{RESULTS}/report/summary.csv", caption="../report/summary_csv.rst", category="Summary"),
        markdown=f"{RESULTS}/report/summary.md",
        cost=report(f"{RESULTS}/report/error_vs_force_evaluations.png", caption="../report/cost.rst", category="Summary"),
        losses=report(f"{RESULTS}/report/loss_curves.png", caption="../report/losses.rst", category="Training"),
        page=report(f"{RESULTS}/report/config.html", caption="../report/config.rst", category="Configuration"),
        config=report(f"{RESULTS}/report/config.yaml", caption="../report/config_yaml.rst", category="Configuration"),
    params:
        folder=lambda wildcards, output: os.path.dirname(output.csv),
        config_digest=digest(config),
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    conda:
        ENVIRONMENT
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "macroclosure report --metrics {input.metrics} --models {input.models} --baselines {input.baselines}"
        ' --config "$MACROCLOSURE_CONFIG" --out {params.folder} > {log} 2>&1'
