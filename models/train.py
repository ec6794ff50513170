#!/usr/bin/env python3
"""Train the part-based ensemble (see README.md and ../shared/DESIGN.md).

  stage1  landmark regression per part (MAE on the teacher's 68 points, paper augmentation applied to
          image and targets alike). Backbones + landmark heads.
  stage2  frozen backbones (BatchNorm in inference mode), new classification heads
          Dense(128)-Dense(128)-Dense(C), cross-entropy, class-balanced batches. The frozen backbone's
          features are computed once (original + horizontally flipped crop) and cached.
  stage3  fine-tune everything with a small learning rate: cross-entropy + landmark MAE (the auxiliary
          landmark loss keeps the exported landmark output meaningful), class-balanced batches,
          augmentation.

Every stage checkpoints (<out>/last.pt every --ckpt-every steps and at each epoch end, best.pt for the
best public_test accuracy) and resumes from last.pt when rerun with the same --out. --max-minutes stops
cleanly (checkpoint written) so a run fits a time budget; rerun to continue.

    python3 models/train.py stage1 --size 48 --epochs 4 --out models/runs/s1_48
    python3 models/train.py stage2 --init models/runs/s1_48/last.pt --out models/runs/s2_48
    python3 models/train.py stage3 --init models/runs/s2_48/best.pt --epochs 2 --out models/runs/s3_48
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import data as D
import fermodel as fm


def seed_all(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


def subset(n, limit, seed=12345) -> np.ndarray:
    """The same seeded random subset of `limit` training images for every stage (--limit)."""
    return np.sort(np.random.RandomState(seed).choice(n, min(limit, n), replace=False))


def save(path, **state):
    tmp = str(path) + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def _config(args) -> dict:
    return {k: v for k, v in vars(args).items() if k != "fn"}


def widths_arg(text: str) -> tuple[int, ...]:
    try:
        return fm.parse_widths(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def load_model(path, n_classes=None) -> tuple[fm.Ensemble, dict]:
    import __main__  # early stage-1 checkpoints pickled the CLI's stage function as __main__.stageN
    for n in ("stage1", "stage2", "stage3"):
        if not hasattr(__main__, n):
            setattr(__main__, n, globals()[n])
    ck = torch.load(path, map_location="cpu", weights_only=False)
    ck["config"].pop("fn", None)
    cfg = ck["config"]
    m = fm.Ensemble(n_classes=n_classes or cfg["n_classes"], widths=tuple(cfg.get("widths", fm.PAPER_WIDTHS)))
    sd = ck["model"]
    if n_classes and n_classes != cfg["n_classes"]:
        sd = {k: v for k, v in sd.items() if ".cls_head." not in k}
    m.load_state_dict(sd, strict=False)
    return m, ck


def balanced_indices(labels: np.ndarray, n: int, gen: np.random.RandomState, weight: np.ndarray | None = None) -> np.ndarray:
    """n indices drawn so that every class is equally likely (class-balanced batches). Within a class, image i
    is drawn in proportion to weight[i] (default equal): how a small posed set is oversampled next to FER2013."""
    classes = np.unique(labels)
    weight = np.ones(len(labels)) if weight is None else np.asarray(weight, dtype=np.float64)
    w = np.zeros(len(labels))
    for c in classes:
        w[labels == c] = weight[labels == c] / weight[labels == c].sum() / len(classes)
    return gen.choice(len(labels), n, replace=True, p=w / w.sum())


def part_lm_loss(pred, target):
    """MAE per part, summed over the five parts (independent backbones -> independent gradients)."""
    return sum(F.l1_loss(pred[:, a:b], target[:, a:b]) for _, a, b in fm.PARTS)


@torch.no_grad()
def predict(model, x: torch.Tensor, bs=256):
    """Batched inference on the model's device; results on the CPU."""
    model.eval()
    dev = next(model.parameters()).device
    logits, lms = [], []
    for i in range(0, len(x), bs):
        lg, lm = model(fm.channels_last(x[i:i + bs].to(dev)))
        logits.append(lg.cpu())
        lms.append(lm.cpu())
    return torch.cat(logits), torch.cat(lms)


def accuracy_report(part_logits: torch.Tensor, y: np.ndarray):
    part_p = F.softmax(part_logits, -1)
    ens = part_p.mean(1).argmax(-1).numpy()
    return {"ensemble": float((ens == y).mean()),
            **{n: float((part_p[:, i].argmax(-1).numpy() == y).mean()) for i, n in enumerate(fm.PART_NAMES)}}


# ---------------------------------------------------------------- stage 1
def stage1(args):
    dev = fm.pick_device()
    precision = fm.pick_precision(args.precision, dev)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = D.load_split(args.train, args.cache)
    x = D.to_tensor(D.preprocessed(d, args.size, args.train, args.cache))
    lm = torch.from_numpy(d["landmarks"])
    if args.limit:
        sel = torch.from_numpy(subset(len(x), args.limit))
        x, lm = x[sel], lm[sel]
    vd = D.load_split(args.val, args.cache)
    vx = D.to_tensor(D.preprocessed(vd, args.size, args.val, args.cache))[:2000]
    vlm = torch.from_numpy(vd["landmarks"])[:2000]
    x, lm = x.to(dev), lm.to(dev)  # the whole split fits on any GPU; augmentation then runs there too
    model = fm.Ensemble(n_classes=7, widths=args.widths)
    with torch.no_grad():  # start the landmark heads at the mean shape
        mean = lm.mean(0)
        for s, (_, a, b) in zip(model.subnets, fm.PARTS):
            s.lm_head[-1].bias.copy_(mean[a:b].reshape(-1))
    model = fm.channels_last(model.to(dev))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = len(x) // args.batch
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=0.05)
    step, hist = 0, []
    if (out / "last.pt").exists():
        ck = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
        was = tuple(ck["config"].get("widths", fm.PAPER_WIDTHS))
        if was != tuple(args.widths):
            raise SystemExit(f"stage1: {out} holds a run with widths {list(was)}, not {list(args.widths)}: "
                             "pass its --widths or another --out")
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); sched.load_state_dict(ck["sched"])
        step, hist = ck["step"], ck["hist"]
        print(f"resumed at step {step}/{total}")
    cfg = dict(_config(args), n_classes=7, stage=1)
    t0 = time.time()
    print(f"stage1: {len(x)} images, widths {list(args.widths)}, {precision}, channels_last, "
          f"{torch.get_num_threads()} threads on {dev}", flush=True)
    pbar = tqdm(total=total, initial=step, desc="stage1", unit="step", mininterval=15)
    run_loss = 0.0
    while step < total:
        ep = step // steps_per_epoch
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed + ep))
        gen = torch.Generator().manual_seed(args.seed * 1000 + step)
        model.train()
        ep_t0, ep_start_step = time.time(), step
        for bi in range(step % steps_per_epoch, steps_per_epoch):
            idx = perm[bi * args.batch:(bi + 1) * args.batch].to(dev)
            xb, lb = D.augment(x[idx], lm[idx], gen)
            with fm.autocast(dev, precision):
                _, pred = model(fm.channels_last(xb))
            loss = part_lm_loss(pred.float(), lb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step(); sched.step()
            step += 1
            run_loss = 0.98 * run_loss + 0.02 * loss.item() if step > 1 else loss.item()
            pbar.update(1); pbar.set_postfix(mae_sum=f"{run_loss:.4f}", refresh=False)
            stop = args.max_minutes and (time.time() - t0) > args.max_minutes * 60
            if step % args.ckpt_every == 0 or stop or bi == steps_per_epoch - 1:
                save(out / "last.pt", model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                     step=step, hist=hist, config=cfg)
            if stop:
                print(f"--max-minutes reached at step {step}/{total}; rerun to resume")
                return
        _, vp = predict(model, vx)
        model.train()
        per = {n: float((vp[:, a:b] - vlm[:, a:b]).abs().mean()) for n, a, b in fm.PARTS}
        hist.append({"epoch": ep + 1, "step": step, "val_mae": per, "elapsed_s": time.time() - t0,
                     "images_per_s": round((step - ep_start_step) * args.batch / (time.time() - ep_t0), 1)})
        print(json.dumps(hist[-1]))
        save(out / "last.pt", model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
             step=step, hist=hist, config=cfg)
    pbar.close()
    (out / "history.json").write_text(json.dumps(hist, indent=1))


# ---------------------------------------------------------------- stage 2
@torch.no_grad()
def backbone_features(model: fm.Ensemble, x: torch.Tensor, bs=256, desc="features") -> torch.Tensor:
    """[N,5,128] features of the five frozen backbones (eval mode)."""
    model.eval()
    dev = next(model.parameters()).device
    feats = []
    for i in tqdm(range(0, len(x), bs), desc=desc, unit="batch", mininterval=15):
        xb = fm.channels_last(x[i:i + bs].to(dev))
        feats.append(torch.stack([s.backbone(xb) for s in model.subnets], 1).cpu())
    return torch.cat(feats)


def cached_features(model, init_path, split, size, x, cache, flip):
    """Features of the frozen backbones for a split (and its horizontal flip), cached next to the checkpoint."""
    p = Path(init_path).with_suffix("") .as_posix() + f"__feat_{split}_{size}_{'flip' if flip else 'orig'}.pt"
    if os.path.exists(p):
        return torch.load(p)
    f = backbone_features(model, D.hflip(x) if flip else x, desc=f"{split}{' flip' if flip else ''}")
    torch.save(f, p)
    return f


def train_heads(model: fm.Ensemble, ftr, ytr, fva=None, yva=None, epochs=30, lr=1e-3, batch=256, seed=0,
                steps_per_epoch=None, wd=1e-4, log=lambda m: print(m, flush=True)):
    """Stage 2 on cached features: train the five classification heads, class-balanced batches.
    Returns the best epoch's state (by validation ensemble accuracy if given, else last)."""
    seed_all(seed)
    model.reset_cls_heads(seed)
    heads = nn.ModuleList([s.cls_head for s in model.subnets])
    opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=wd)
    rs = np.random.RandomState(seed)
    spe = steps_per_epoch or max(1, len(ytr) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * spe)
    dev = next(heads.parameters()).device
    ftr, ytr_t = ftr.to(dev), torch.from_numpy(ytr).to(dev)
    fva = fva.to(dev) if fva is not None else None
    best, best_state, hist = -1, None, []
    for ep in range(epochs):
        heads.train()
        idx = balanced_indices(ytr, spe * batch, rs)
        for s in range(spe):
            b = torch.from_numpy(idx[s * batch:(s + 1) * batch]).to(dev)
            fb, yb = ftr[b], ytr_t[b]
            loss = sum(F.cross_entropy(h(fb[:, i]), yb) for i, h in enumerate(heads))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step(); sched.step()
        if fva is not None:
            heads.eval()
            with torch.no_grad():
                lg = torch.stack([h(fva[:, i]) for i, h in enumerate(heads)], 1).cpu()
            rep = accuracy_report(lg, yva)
            hist.append({"epoch": ep + 1, "loss": float(loss), **rep})
            if log:
                log(f"heads epoch {ep + 1}/{epochs} loss {float(loss):.3f} val ensemble {rep['ensemble']:.4f}")
            if rep["ensemble"] > best:
                best = rep["ensemble"]
                best_state = {k: v.clone() for k, v in heads.state_dict().items()}
    if best_state is not None:
        heads.load_state_dict(best_state)
    return hist, best


def stage2(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d, vd = D.load_split(args.train, args.cache), D.load_split(args.val, args.cache)
    n_classes = len(d["classes"])  # 7 for FER2013; your own data may have another count
    model, ck = load_model(args.init, n_classes=n_classes)
    fm.channels_last(model.to(fm.pick_device())).eval()
    x = D.to_tensor(D.preprocessed(d, args.size, args.train, args.cache))
    vx = D.to_tensor(D.preprocessed(vd, args.size, args.val, args.cache))
    y, vy = d["labels"], vd["labels"]
    if args.limit:
        sel = subset(len(x), args.limit)
        x, y = x[torch.from_numpy(sel)], y[sel]
    f0 = cached_features(model, args.init, args.train + (f"_l{args.limit}" if args.limit else ""), args.size, x, args.cache, False)
    f1 = cached_features(model, args.init, args.train + (f"_l{args.limit}" if args.limit else ""), args.size, x, args.cache, True)
    fv = cached_features(model, args.init, args.val, args.size, vx, args.cache, False)
    ftr, ytr = torch.cat([f0, f1]), np.concatenate([y, y])
    t0 = time.time()
    hist, best = train_heads(model, ftr, ytr, fv, vy, epochs=args.epochs, lr=args.lr, seed=args.seed)
    for h in hist:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()}))
    cfg = dict(ck["config"], stage=2, stage2=_config(args), n_classes=n_classes, classes=[str(c) for c in d["classes"]])
    model.cpu()
    save(out / "best.pt", model=model.state_dict(), config=cfg, hist=hist)
    save(out / "last.pt", model=model.state_dict(), config=cfg, hist=hist)
    (out / "history.json").write_text(json.dumps(hist, indent=1))
    print(f"stage2 best public_test ensemble accuracy {best:.4f} ({time.time() - t0:.0f}s)")


# ---------------------------------------------------------------- stage 3
@torch.no_grad()
def teacher_targets(teachers, xb: torch.Tensor, precision: str, temp: float) -> torch.Tensor:
    """What a set of trained models says about a batch, softened: the mean over teachers and their
    five parts of softmax(logits / temp). [B, C], fp32."""
    dev = xb.device
    probs = []
    for teacher in teachers:
        with fm.autocast(dev, precision):
            logits, _ = teacher(fm.channels_last(xb))
        probs.append(F.softmax(logits.float() / temp, -1).mean(1))
    return torch.stack(probs).mean(0)


def distill_loss(part_logits: torch.Tensor, target: torch.Tensor, temp: float) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015): per part, KL(target || softmax(logits / temp)),
    scaled by temp^2 so its gradients keep the size of the cross-entropy's; summed over the parts."""
    return sum(F.kl_div(F.log_softmax(part_logits[:, i] / temp, -1), target, reduction="batchmean")
               for i in range(part_logits.shape[1])) * temp ** 2


def finetune(model, x, y, lm, steps, lr, batch, seed, lm_weight=1.0, val=None, eval_every=None, ckpt=None,
             max_minutes=None, start_step=0, opt_state=None, desc="stage3", precision="fp32", label_smoothing=0.0,
             erase=0.0, scale_jitter=0.0, sample_weight=None, camera=0.0, raw=None, teachers=(),
             distill_weight=1.0, distill_temp=2.0):
    """Unfreeze everything; CE (per part, class-balanced batches, optional label smoothing) + lm_weight *
    landmark MAE; the paper's augmentation plus optional crop-scale jitter and random erasing.
    camera > 0 replaces that fraction of each batch with its faces sent down a camera's path and
    cropped as the runtime crops them (data.camera_batch), from `raw` (the unprocessed uint8 images,
    aligned with x). With `teachers` (trained Ensembles, e.g. several seeds), distill_weight *
    distill_loss towards their softened mean prediction on the same augmented batch is added."""
    dev = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    if opt_state:
        opt.load_state_dict(opt_state["opt"]); sched.load_state_dict(opt_state["sched"])
    rs = np.random.RandomState(seed)
    idx_all = balanced_indices(y, steps * batch, rs, sample_weight)
    lm_np = lm.numpy()
    x, lm, yt = x.to(dev), lm.to(dev), torch.from_numpy(y).to(dev)
    t0 = time.time()
    best, hist = opt_state.get("best", -1) if opt_state else -1, opt_state.get("hist", []) if opt_state else []
    pbar = tqdm(total=steps, initial=start_step, desc=desc, unit="step", mininterval=15)
    for step in range(start_step, steps):
        model.train()
        gen = torch.Generator().manual_seed(seed * 100003 + step)
        b_np = idx_all[step * batch:(step + 1) * batch]
        b = torch.from_numpy(b_np).to(dev)
        xb, lb = x[b], lm[b]
        if camera > 0:
            hit, crops, moved = D.camera_batch(raw[b_np], lm_np[b_np], raw, np.random.default_rng([seed, step]),
                                               camera, size=x.shape[-1])
            if len(hit):
                hit = torch.from_numpy(hit).to(dev)
                xb, lb = xb.clone(), lb.clone()
                xb[hit] = D.to_tensor(crops).to(dev)
                lb[hit] = torch.from_numpy(moved).to(dev)
        xb, lb = D.augment(xb, lb, gen, scale=scale_jitter)
        xb = D.random_erase(xb, gen, erase)
        with fm.autocast(dev, precision):
            logits, pred = model(fm.channels_last(xb))
        logits, pred, yb = logits.float(), pred.float(), yt[b]
        loss = (sum(F.cross_entropy(logits[:, i], yb, label_smoothing=label_smoothing) for i in range(5))
                + lm_weight * part_lm_loss(pred, lb))
        if teachers:
            loss = loss + distill_weight * distill_loss(logits, teacher_targets(teachers, xb, precision, distill_temp),
                                                        distill_temp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step(); sched.step()
        pbar.update(1); pbar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        done = step + 1
        stop = max_minutes and (time.time() - t0) > max_minutes * 60
        if val is not None and (done % eval_every == 0 or done == steps or stop):
            lg, vp = predict(model, val[0])
            rep = accuracy_report(lg, val[1])
            rep["lm_mae"] = float((vp - val[2]).abs().mean())
            rep["images_per_s"] = round((done - start_step) * batch / (time.time() - t0), 1)
            hist.append({"step": done, **rep})
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in hist[-1].items()}))
            if rep["ensemble"] > best and ckpt:
                best = rep["ensemble"]
                ckpt("best", model, opt, sched, done, best, hist)
        if ckpt and (done % 200 == 0 or done == steps or stop):
            ckpt("last", model, opt, sched, done, best, hist)
        if stop:
            print(f"--max-minutes reached at step {done}/{steps}; rerun to resume")
            break
    pbar.close()
    return hist, best


def training_set(args, labels: list[str]):
    """The --train splits (comma-separated cache names) in one label space: the first split as it is (with
    --limit), later ones mapped onto its labels by name (CK+ anger=angry, sadness=sad, contempt dropped) and
    drawn --mix-weight times as often as a first-split image of the same class. --exclude-fold K drops the
    subjects of CK+ fold K (of --folds), the cross-validation protocol (models/cv_ckplus.py)."""
    xs, ys, lms, ws, raws = [], [], [], [], []
    for i, name in enumerate(args.train.split(",")):
        excl = args.exclude_fold if (args.exclude_fold is not None and name.startswith("ckplus")) else None
        s = D.mapped_split(name, args.cache, args.size, labels, exclude_fold=excl, folds=args.folds)
        x, y, lm = s["x"], s["y"], s["landmarks"]
        if i == 0 and args.limit:
            sel = subset(len(x), args.limit)
            x, y, lm, s["raw"] = x[sel], y[sel], lm[sel], s["raw"][sel]
        print(f"training split {name}: {len(y)} images ({s['dropped']} dropped: unmapped classes or held-out fold)")
        xs.append(x); ys.append(y); lms.append(lm); raws.append(s["raw"])
        ws.append(np.full(len(y), 1.0 if i == 0 else args.mix_weight))
    return (D.to_tensor(np.concatenate(xs)), np.concatenate(ys), torch.from_numpy(np.concatenate(lms)),
            np.concatenate(ws), np.concatenate(raws))


def stage3(args):
    dev = fm.pick_device()
    precision = fm.pick_precision(args.precision, dev)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, ck = load_model(args.init)
    cfg = dict(ck["config"], stage=3, stage3=_config(args))
    if args.widen:
        model = fm.widen(model, args.widen, noise=args.widen_noise, seed=args.seed)
        cfg["widths"] = args.widen
        print(f"widened {list(ck['config'].get('widths', fm.PAPER_WIDTHS))} -> {list(args.widen)}: "
              f"{fm.ensemble_param_count(model)[1]:,} parameters")
    labels = [str(c) for c in D.load_split(args.train.split(",")[0], args.cache)["classes"]]
    x, y, lm, weight, raw = training_set(args, labels)
    vd = D.mapped_split(args.val, args.cache, args.size, labels)
    val = (D.to_tensor(vd["x"]), vd["y"], torch.from_numpy(vd["landmarks"]))
    steps = args.epochs * len(y) // args.batch
    start, ost = 0, None
    if (out / "last.pt").exists():
        r = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(r["model"]); start = r["step"]
        ost = {"opt": r["opt"], "sched": r["sched"], "best": r["best"], "hist": r["hist"]}
        print(f"resumed at step {start}/{steps}")
    model = fm.channels_last(model.to(dev))
    teachers = []
    for path in filter(None, args.teachers.split(",")):
        teacher, _ = load_model(path)
        teachers.append(fm.channels_last(teacher.to(dev)).eval())
    if teachers:
        print(f"distilling {len(teachers)} teacher(s), weight {args.distill_weight}, temperature {args.distill_temp}")
    print(f"stage3: {len(y)} images, {steps} steps of {args.batch}, {precision}, channels_last, "
          f"{torch.get_num_threads()} threads on {dev}", flush=True)

    def ckpt(kind, model, opt, sched, step, best, hist):
        save(out / f"{kind}.pt", model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(), step=step,
             best=best, hist=hist, config=cfg)

    t0 = time.time()
    hist, best = finetune(model, x, y, lm, steps, args.lr, args.batch, args.seed, args.lm_weight, val,
                          args.eval_every, ckpt, args.max_minutes, start, ost, precision=precision,
                          label_smoothing=args.label_smoothing, erase=args.erase, scale_jitter=args.scale_jitter,
                          sample_weight=weight, camera=args.camera, raw=raw, teachers=teachers,
                          distill_weight=args.distill_weight, distill_temp=args.distill_temp)
    if hist and hist[-1]["step"] == steps:  # history.json marks a finished stage (models/recipe_v2.sh)
        (out / "history.json").write_text(json.dumps(hist, indent=1))
    print(f"stage3 best public_test ensemble accuracy {best:.4f} ({time.time() - t0:.0f}s this run)")


def main():
    torch.set_num_threads(int(os.environ.get("FERRITE_THREADS", "2")))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    for name, fn, epochs, lr in [("stage1", stage1, 4, 2e-3), ("stage2", stage2, 40, 1e-3), ("stage3", stage3, 2, 1e-4)]:
        p = sub.add_parser(name)
        p.set_defaults(fn=fn)
        p.add_argument("--out", required=True, help="run directory (checkpoints, history)")
        p.add_argument("--size", type=int, default=48, help="input resolution (square)")
        p.add_argument("--epochs", type=int, default=epochs)
        p.add_argument("--lr", type=float, default=lr)
        p.add_argument("--batch", type=int, default=64)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--train", default="fer2013_train", help="cache name of the training split")
        p.add_argument("--val", default="fer2013_public_test", help="cache name of the selection split")
        p.add_argument("--cache", default=str(D.CACHE))
        p.add_argument("--limit", type=int, default=0, help="use a fixed random subset of N training images (smoke tests, reduced protocols)")
        p.add_argument("--max-minutes", type=float, default=0, help="stop cleanly after this wall time (resumable)")
        p.add_argument("--ckpt-every", type=int, default=200)
        p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                       help="bf16 autocast (fp32 master weights) or fp32; auto: bf16 where the CPU (AVX512-BF16, "
                            "AMX) or the GPU runs it natively, else fp32")
        if name == "stage1":
            p.add_argument("--widths", type=widths_arg, default=fm.PAPER_WIDTHS,
                           help="the backbone's four block widths (default 16,32,64,128, the paper's); "
                                "later stages take them from --init")
        else:
            p.add_argument("--init", required=True, help="checkpoint of the previous stage")
        if name == "stage3":
            p.add_argument("--lm-weight", type=float, default=1.0)
            p.add_argument("--eval-every", type=int, default=300)
            p.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing")
            p.add_argument("--erase", type=float, default=0.0, help="random-erasing probability per image (occlusion)")
            p.add_argument("--scale-jitter", type=float, default=0.0,
                           help="crop zoom in [1-s, 1+s] (the runtime's detector-crop scale spread)")
            p.add_argument("--camera", type=float, default=0.0,
                           help="fraction of each batch sent down a camera's path (capture size, blur, exposure, "
                                "JPEG) and cropped with the runtime detector's measured framing spread")
            p.add_argument("--teachers", default="",
                           help="comma-separated checkpoints (e.g. s3 runs with other seeds) to distil into this model")
            p.add_argument("--distill-weight", type=float, default=1.0, help="weight of the distillation loss")
            p.add_argument("--distill-temp", type=float, default=2.0, help="softmax temperature of the distillation")
            p.add_argument("--widen", type=widths_arg, default=None,
                           help="widen the --init model's backbones to these block widths first, keeping what it "
                                "computes (fermodel.widen), e.g. 32,64,128,256")
            p.add_argument("--widen-noise", type=float, default=0.01,
                           help="noise added to the widened weights (relative to their spread) so copies can diverge")
            p.add_argument("--mix-weight", type=float, default=1.0,
                           help="sampling weight of an image of the 2nd.. --train split relative to the 1st")
            p.add_argument("--exclude-fold", type=int, default=None, help="drop CK+ subject fold K (cross-validation)")
            p.add_argument("--folds", type=int, default=10, help="CK+ subject folds for --exclude-fold")
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
