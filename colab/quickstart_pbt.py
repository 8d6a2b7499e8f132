"""Section 9 of colab/quickstart.ipynb: an optional population-based-training study.

``colab/make_quickstart.py`` inserts these cells before its last one; edit here, then run it.
"""

from __future__ import annotations

MD, CODE = "markdown", "code"

CELLS: list[tuple[str, str, list[str]]] = [
    (
        MD,
        """\
## 9. Optional: population-based training (set `PBT = True`)

PBT trains a population together and, every `pbt_interval` epochs, lets the worst quarter take
the weights (and optimizer state) of a member of the best quarter and try nearby learning
rates and dropout rates. Here the population is the slots of one compiled program: the copy is
one device call, no file, no retrace. The study goes to its own directory. Each exploit prints
a line; `summary.json`'s `pbt` and the last panel of `summary.png` show the schedule of
hyperparameters that trained the best member's weights, back through every member it copied.""",
        [],
    ),
    (
        CODE,
        """\
if PBT:
    pbt_dir = OUTPUT_DIR.rstrip("/") + "_pbt"
    pbt = tpu_bo.run_study(
        accelerator=ACCELERATOR,
        dataset="mnist",
        data_dir=DATA_DIR,
        train_split=TRAIN_SPLIT,
        eval_split=EVAL_SPLIT,
        model="mnist_cnn",
        epochs=PBT_EPOCHS,
        space={
            "dropout_2": ("float", 0.1, 0.6),
            "learning_rate": ("log", 1e-4, 1e-2),
            "label_smoothing": ("float", 0.0, 0.2),
        },
        scheduler="pbt",
        parallel_trials=PBT_MEMBERS,  # the population
        pbt_interval=max(1, PBT_EPOCHS // 3),
        init_points=PBT_MEMBERS,  # the first population: random
        n_iter=PBT_MEMBERS,  # the second: guided by the first's scores
        mixed_precision=ON_TPU,
        output_dir=pbt_dir,
    )
    from tpu_bo.results import load_summary

    lineage = load_summary(pbt_dir)["pbt"]
    print(f"PBT: best val_accuracy {pbt.best_target:.4f}, {lineage['exploits']} exploit(s)")
    for segment in lineage["best"]["ancestry"]:
        first, last = segment["epochs"]
        print(f"  epochs {first}-{last}: trial {segment['trial']} with {segment['values']}")
    with tf.io.gfile.GFile(os.path.join(pbt_dir, "summary.png"), "rb") as f:
        display(Image(data=f.read()))
else:
    print("PBT is off: set PBT = True in the parameters cell to run it")""",
        [],
    ),
]
