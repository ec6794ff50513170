#!/usr/bin/env python3
"""Training throughput of the whole 5-part ensemble: one stage-3 step (forward + backward + Adam, CE on the five
heads + landmark MAE, the paper's augmentation) in each memory layout and precision this machine can run.
Random inputs: the speed does not depend on the data. Prints images per second, the median of --steps timed
steps after --warmup untimed ones, so you can check what `--precision auto` chose against the alternatives.

    python3 models/train_speed.py                    # batch 128, 2 threads (FERRITE_THREADS)
    python3 models/train_speed.py --batch 64 --steps 5 --json models/results/train_speed.json
    python3 models/train_speed.py --widths 32,64,128,256 --auto-only   # a wider backbone
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import data as D
import fermodel as fm
from train import part_lm_loss, widths_arg


def images_per_second(layout: str, precision: str, batch: int, size: int, steps: int, warmup: int,
                      widths=fm.PAPER_WIDTHS) -> float:
    dev = fm.pick_device()
    model = fm.Ensemble(n_classes=7, widths=widths).to(dev)
    if layout == "channels_last":
        model = fm.channels_last(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, size, size, generator=gen) * 2 - 1
    lm = torch.rand(batch, 68, 2, generator=gen)
    y = torch.randint(0, 7, (batch,), generator=gen)
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        xb, lb = D.augment(x.to(dev), lm.to(dev), gen)
        if layout == "channels_last":
            xb = fm.channels_last(xb)
        with fm.autocast(dev, precision):
            logits, pred = model(xb)
        loss = sum(F.cross_entropy(logits[:, k].float(), y.to(dev)) for k in range(5)) + part_lm_loss(pred.float(), lb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--steps", type=int, default=9, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--widths", type=widths_arg, default=fm.PAPER_WIDTHS,
                    help="the backbone's block widths (train.py stage1 --widths)")
    ap.add_argument("--auto-only", action="store_true",
                    help="time only what train.py runs here: channels_last at --precision auto's choice")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("FERRITE_THREADS", "2")))
    dev = fm.pick_device()
    auto = fm.pick_precision("auto", dev)
    print(f"device {dev}, {torch.get_num_threads()} threads, native bf16 on the CPU: {fm.cpu_has_native_bf16()}, "
          f"--precision auto picks {auto}; widths {list(args.widths)}, "
          f"{fm.ensemble_param_count(fm.Ensemble(widths=args.widths))[1]:,} parameters")
    rows = []
    combos = ([("channels_last", auto)] if args.auto_only else
              [(layout, precision) for layout in ("nchw", "channels_last") for precision in ("fp32", "bf16")])
    for layout, precision in combos:
        ips = images_per_second(layout, precision, args.batch, args.size, args.steps, args.warmup, args.widths)
        rows.append({"layout": layout, "precision": precision, "images_per_s": round(ips, 1)})
        print(f"{layout:14s} {precision:5s} {ips:7.1f} images/s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"batch": args.batch, "size": args.size, "widths": list(args.widths),
                                               "threads": torch.get_num_threads(), "device": str(dev), "auto": auto,
                                               "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
