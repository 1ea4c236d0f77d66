# L_z at the force budget of L_x,p (`sample.equal_budget`, planning.budget_runs): full forces on
# fewer configurations. Each rule is a pipeline rule on its own paths, whose run name carries
# the configuration count (`_c{configurations}`); the jobs read their count from that wildcard.
BUDGET_RUN = "{model}_{loss}_p{p}_c{configurations}_seed{seed}"
BUDGET_FORCES = f"{RESULTS}/{{system}}/forces/p{{p}}/c{{configurations}}_seed{{seed}}.zarr/zarr.json"


use rule sample as sample_budget with:
    output:
        BUDGET_FORCES,
    log:
        f"{RESULTS}/logs/{{system}}/sample_p{{p}}_c{{configurations}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{system}}/sample_p{{p}}_c{{configurations}}_seed{{seed}}.tsv"


use rule train as train_budget with:
    input:
        trajectories=f"{RESULTS}/{{system}}/trajectories/train.zarr/zarr.json",
        forces=BUDGET_FORCES,
        closure=f"{RESULTS}/{{system}}/closure",
    output:
        directory(f"{RESULTS}/{{system}}/dynamics/{BUDGET_RUN}"),
    log:
        f"{RESULTS}/logs/{{system}}/train_{BUDGET_RUN}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{system}}/train_{BUDGET_RUN}.tsv"


use rule evaluate as evaluate_budget with:
    input:
        model=f"{RESULTS}/{{system}}/dynamics/{BUDGET_RUN}",
        closure=f"{RESULTS}/{{system}}/closure",
        trajectories=f"{RESULTS}/{{system}}/trajectories/test.zarr/zarr.json",
    output:
        metrics=f"{RESULTS}/{{system}}/evaluation/{BUDGET_RUN}/metrics.json",
        rollout=rollout_figure(f"{RESULTS}/{{system}}/evaluation/{BUDGET_RUN}/rollout.png"),
    log:
        f"{RESULTS}/logs/{{system}}/evaluate_{BUDGET_RUN}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{system}}/evaluate_{BUDGET_RUN}.tsv"
