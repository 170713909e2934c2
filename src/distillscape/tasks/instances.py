"""distillscape-instances: the distilled batch image by image (figure, likeness to real data against
random real images and noise) and one-step models against the direct model on the real test set
(confusion matrices, divergence of the minima, an ensemble of one-step models)."""
from __future__ import annotations

from pathlib import Path

import hydra
import matplotlib.pyplot as plt
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from ..artifacts import ArtifactError, load_distilled, write_json
from ..config import ConfigError
from ..data import TensorDataModule
from ..direct import load_direct_minimum
from ..inner import InitSampler, InnerLoop
from ..instances import (RealReference, compare_models, confusion_figure, confusion_matrix, held_out_real,
                         label_classes, likeness, likeness_figure, logits_of, neighbours_figure, stack_logits,
                         summarize_stats)
from ..plots import distilled_pages, label_distribution, save_figure, to_pixels
from .common import CONF_DIR, build_logger, console, net_from_meta, output_dir, resolved, task

KINDS = ("distilled", "random_real", "noise")


def datamodule_for(meta: dict, cfg: DictConfig) -> TensorDataModule:
    """The data the batch was distilled from: the run's own dataset config (same split, same
    normalization), with the data directory moved if `instances.data_dir` says so."""
    ds = dict(meta.get("config", {}).get("dataset") or {"_target_": "distillscape.data.TensorDataModule",
                                                          "name": meta["dataset"]})
    if cfg.instances.data_dir:
        ds["root"] = cfg.instances.data_dir
    dm = instantiate(ds)
    dm.setup()
    if list(dm.image_shape) != list(meta["image_shape"]) or dm.num_classes != meta["num_classes"]:
        raise ArtifactError(f"the dataset {ds.get('name')} has images {list(dm.image_shape)} and "
                            f"{dm.num_classes} classes, the distilled batch {meta['image_shape']} and "
                            f"{meta['num_classes']}: point distilled= at a batch of this dataset")
    if not torch.allclose(dm.mean, torch.tensor(meta["normalization"]["mean"]), atol=1e-4):
        raise ArtifactError(f"the normalization of {ds.get('name')} here differs from the one the batch was "
                            f"distilled with (another train_subset/split?): use the run's dataset settings")
    return dm


def direct_model(cfg: DictConfig, meta: dict, run_dir: Path):
    path = Path(cfg.instances.direct_minimum) if cfg.instances.direct_minimum else run_dir / "direct_minimum.safetensors"
    if path.is_dir():
        path = path / "direct_minimum.safetensors"
    if not path.exists():
        raise ArtifactError(f"no direct minimum at {path}: give one with instances.direct_minimum=<path> "
                            f"(distillscape-train writes one)")
    net, _ = load_direct_minimum(path, net_from_meta(meta))
    return net.eval(), path


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


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="instances")
@task
def main(cfg: DictConfig) -> dict:
    if OmegaConf.is_missing(cfg, "distilled"):
        raise ConfigError("distilled=??? : give the distilled batch to look at, distilled=<distillscape-distill "
                          "output dir or distilled.safetensors>")
    out = output_dir(cfg)
    src = Path(cfg.distilled)
    d = load_distilled(src)
    run_dir = src if src.is_dir() else src.parent
    meta, ic = d.meta, cfg.instances
    inner_loss = meta["inner"]["loss"]
    dm = datamodule_for(meta, cfg)
    names = [str(c) for c in dm.classes]
    mean, std = meta["normalization"]["mean"], meta["normalization"]["std"]
    net, direct_path = direct_model(cfg, meta, run_dir)

    # the batch as pictures, paged so that 100 images stay readable
    pages = distilled_pages(d.images, d.labels, d.lrs, mean, std, inner_loss, out, classes=names,
                            per_page=ic.per_page)

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
                                stats["distilled"]["_feature_nn"][sl], classes[sl], names, first_index=start)
        neighbour_pages.append(save_figure(fig, out / f"neighbours_p{p:02d}.png"))
        plt.close(fig)
    fig = likeness_figure(summary, stats["distilled"]["_cosine"], classes, names)
    save_figure(fig, out / "likeness.png")
    plt.close(fig)

    # one-step models from held-out inits against the direct model, on the real test set
    x_test, y_test = dm.test_x, dm.test_y
    if ic.test_limit:
        x_test, y_test = x_test[:ic.test_limit], y_test[:ic.test_limit]
    loop = InnerLoop(net_from_meta(meta), inner_loss)
    inits = InitSampler(loop.net, meta["inner"].get("init_scheme", "default")).sample(ic.models, seed=ic.init_seed)
    with torch.enable_grad():  # the inner step is a gradient step
        landed = {k: v.detach() for k, v in loop.run_stack(inits, d.images, d.labels, d.lrs).items()}
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
        with torch.enable_grad():
            fixed_landed = {k: v.detach() for k, v in loop.run_stack(fixed, d.images, d.labels, d.lrs).items()}
        fixed_cmp = compare_models(direct_logits, stack_logits(loop, fixed_landed, x_test), y_test, direct_params,
                                   fixed_landed, fixed, loop.names)
        comparisons["fixed_init"] = public(fixed_cmp)
    fig = confusion_figure(matrices, names)
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
        "config": resolved(cfg),
    }
    write_json(out / "instances.json", result)

    logger = build_logger(cfg)
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


if __name__ == "__main__":
    main()
