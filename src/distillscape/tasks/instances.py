"""distillscape-instances: the distilled batch image by image (figure, likeness to real data against
random real images and noise) and one-step models against the direct model on the real test set
(confusion matrices, divergence of the minima, an ensemble of one-step models)."""
from __future__ import annotations


import matplotlib.pyplot as plt
import torch
from omegaconf import DictConfig
from rich.table import Table

from ..artifacts import write_json
from ..data import to_pixels
from ..inner import label_distribution
from ..job import Job
from ..instances import (RealReference, compare_models, confusion_matrix, held_out_real, label_classes, likeness,
                         logits_of, stack_logits, summarize_stats)
from ..plots import confusion_figure, distilled_pages, likeness_figure, neighbours_figure, save_figure
from ..resume import check_owner
from ..run import Run
from .cli import script
from .common import build_logger, console, job_of, start_job


def per_image_table(d, classes, stats, names, inner_loss) -> list[dict]:
    dist = label_distribution(d.labels, inner_loss)
    s = stats
    return [{"index": i, "label": names[int(classes[i])], "label_weight": round(dist[i].max().item(), 4),
             "direct_prediction": names[int(s["_direct_pred"][i])],
             "pixel_neighbours": s["_pixel_nn"][i].tolist(), "feature_neighbours": s["_feature_nn"][i].tolist(),
             "cosine_own_class_mean": round(s["class_mean_cosine_own"][i].item(), 4),
             "pixel_nn_rms": round(s["pixel_nn_rms"][i].item(), 4)} for i in range(len(classes))]


def likeness_table(summary: dict) -> Table:
    t = Table(title="likeness to the real training data (mean ± std over images)")
    t.add_column("statistic")
    for kind in summary:
        t.add_column(f"{kind} (n={next(iter(summary[kind].values()))['n']})")
    for stat in next(iter(summary.values())):
        t.add_row(stat, *(f"{summary[k][stat]['mean']:.3f} ± {summary[k][stat]['std']:.3f}" for k in summary))
    return t


def public(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


# keys an instances job must be given, each with the line that says so (common.job_of)
NEEDED = {"distilled": "distilled=??? : give the distilled batch to look at, distilled=<distillscape-distill "
                       "output dir or distilled.safetensors>"}


def check(job: Job):
    """The checks before work (also run for each job of a multirun at submission): the run and its data, each
    refused before the directory is touched; (run, data)."""
    s = job.settings
    check_owner(job)
    run = Run.open(s.distilled)  # a wrong distilled= refused before the directory is touched
    # the run's own dataset settings, its files where they are now
    return run, run.datamodule(data_dir=s.instances.data_dir)


def instances(cfg: DictConfig) -> dict:
    """distillscape-instances: the distilled batch image by image. Returns what instances.json holds."""
    job = job_of(cfg, NEEDED)
    run, dm = check(job)
    s = job.settings
    d, meta, ic = run.distilled, run.meta, s.instances
    out = start_job(job)
    src = run.source
    inner_loss = run.inner_loss
    names = [str(c) for c in dm.classes]
    mean, std = meta["normalization"]["mean"], meta["normalization"]["std"]
    direct_path = run.direct_minimum_path(ic.direct_minimum, key="instances.direct_minimum")
    net = run.direct_minimum(ic.direct_minimum, key="instances.direct_minimum").eval()

    # the batch as pictures, paged so that 100 images stay readable
    context = f"{run.dataset_name} / {run.arch_name}"  # leads every figure's title
    pages = distilled_pages(d.images, d.labels, d.lrs, mean, std, inner_loss, out, classes=names,
                            per_page=ic.per_page, context=context)

    # likeness of distilled, random real and noise batches with the same classes
    real = RealReference.build(dm.train_x, dm.train_y, dm.num_classes, mean, std, net)
    classes = label_classes(d.labels, inner_loss)
    g = torch.Generator().manual_seed(ic.compare_seed)
    batches = {"distilled": d.images, "random_real": held_out_real(dm.val_x, dm.val_y, classes, g)[0],
               "noise": torch.randn(d.images.shape, generator=g)}
    stats = {kind: likeness(x, classes, real, net, ic.neighbours) for kind, x in batches.items()}
    summary = {kind: summarize_stats(s) for kind, s in stats.items()}
    dpix = to_pixels(d.images, mean, std)
    real_pix = to_pixels(dm.train_x, mean, std)
    neighbour_pages = []
    for p, start in enumerate(range(0, len(classes), ic.per_page), 1):
        sl = slice(start, start + ic.per_page)
        fig = neighbours_figure(dpix[sl], real_pix, dm.train_y, stats["distilled"]["_pixel_nn"][sl],
                                stats["distilled"]["_feature_nn"][sl], classes[sl], names, first_index=start,
                                context=context)
        neighbour_pages.append(save_figure(fig, out / f"neighbours_p{p:02d}.png"))
        plt.close(fig)
    fig = likeness_figure(summary, stats["distilled"]["_cosine"], classes, names, context=context)
    save_figure(fig, out / "likeness.png")
    plt.close(fig)

    # one-step models from held-out inits against the direct model, on the real test set
    x_test, y_test = dm.test_x, dm.test_y
    if ic.test_limit:
        x_test, y_test = x_test[:ic.test_limit], y_test[:ic.test_limit]
    loop = run.loop()
    inits = run.inits(ic.models, seed=ic.init_seed)
    landed = run.land(inits, loop)
    onestep_logits = stack_logits(loop, landed, x_test)
    direct_logits = logits_of(net, x_test)
    direct_params = {k: v.detach() for k, v in net.named_parameters()}
    comparison = compare_models(direct_logits, onestep_logits, y_test, direct_params, landed, inits, loop.names)
    comparisons = {"random_inits": public(comparison)}
    m = ic.models
    matrices = {
        f"direct model (acc {comparison['direct_acc']:.3f})": confusion_matrix(direct_logits.argmax(-1), y_test, dm.num_classes),
        f"{m} one-step models, pooled (acc {comparison['member_acc']['mean']:.3f})":
            confusion_matrix(onestep_logits.argmax(-1).flatten(), y_test.repeat(m), dm.num_classes),
        f"ensemble of {m} one-step models (acc {comparison['ensemble_acc']:.3f})":
            confusion_matrix(comparison["_ensemble_pred"], y_test, dm.num_classes),
    }
    if d.fixed_init is not None:  # a fixed-init distillation is meant for its own init: compare that landing too
        fixed = {k: v.unsqueeze(0) for k, v in d.fixed_init.items()}
        fixed_landed = run.land(fixed, loop)
        fixed_cmp = compare_models(direct_logits, stack_logits(loop, fixed_landed, x_test), y_test, direct_params,
                                   fixed_landed, fixed, loop.names)
        comparisons["fixed_init"] = public(fixed_cmp)
    fig = confusion_figure(matrices, names, context=context)
    save_figure(fig, out / "confusion.png")
    plt.close(fig)

    result = {
        "source": str(src.resolve()), "direct_minimum": str(direct_path.resolve()),
        "dataset": meta["dataset"], "arch": meta["arch"].get("_target_"), "images": len(classes),
        "lrs": d.lrs.flatten().tolist(), "test_examples": len(y_test),
        "likeness": summary, "comparisons": comparisons,
        "confusion_matrices": {k: v.tolist() for k, v in matrices.items()},
        "per_image": per_image_table(d, classes, stats["distilled"], names, inner_loss),
        "figures": [p.name for p in [*pages, *neighbour_pages]] + ["likeness.png", "confusion.png"],
        "config": job.resolved(),
    }
    write_json(out / "instances.json", result)

    logger = build_logger(job)
    if logger:
        logger.log_metrics(scalar_metrics(result))
        logger.save()
    console.print(likeness_table(summary))
    c = comparison
    console.print(f"test set: direct {c['direct_acc']:.4f}; one-step {c['member_acc']['mean']:.4f} ± "
                  f"{c['member_acc']['std']:.4f} (best {c['best_member_acc']:.4f}, {m} inits); ensemble "
                  f"{c['ensemble_acc']:.4f}; disagreement with direct {c['prediction_disagreement']['mean']:.3f}, "
                  f"symmetric KL {c['symmetric_kl']['mean']:.3f}, parameter distance "
                  f"{c['param_distance']['mean']:.2f} (relative {c['param_distance_relative']['mean']:.3f})")
    console.print(f"instances: {out / 'instances.json'} (+ {len(result['figures'])} figures)")
    return result


def scalar_metrics(result: dict) -> dict[str, float]:
    """The numbers of instances.json as flat `instances/...` metrics (means only, for loggers)."""
    out = {}
    for kind, stats in result["likeness"].items():
        for stat, v in stats.items():
            out[f"instances/{kind}/{stat}"] = v["mean"]
    for name, comp in result["comparisons"].items():
        for k, v in comp.items():
            out[f"instances/{name}/{k}"] = v["mean"] if isinstance(v, dict) else float(v)
    return out


main, cli = script(instances, "instances")

if __name__ == "__main__":  # python -m: the module under its own name runs (tasks.cli.run)
    from .cli import run
    run("instances")
