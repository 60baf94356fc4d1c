"""Time one epoch of `shapes` through core.data.BatchLoader against a torchvision DataLoader
with per-sample PIL transforms, same augmentations (pad-4 random crop + horizontal flip) and the
same normalisation. Prints images/s for both and the ratio.

    python3 benchmarks/bench_data.py [--batch-size 128] [--workers 2] [--device cpu|cuda] [--threads N]

Both sides produce float32 [B, 3, 32, 32] normalised batches on ``--device``; the DataLoader side
is the usual torchvision recipe (Image.fromarray -> RandomCrop(32, padding=4) ->
RandomHorizontalFlip -> ToTensor -> Normalize in worker processes, then .to(device)).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from core.data import AugmentConfig, BatchLoader, compute_normalization, load_dataset


class PILDataset(torch.utils.data.Dataset):
    """CIFAR-style dataset: uint8 HWC arrays, one PIL image and transform chain per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def time_epoch(loader, device) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        n += int(y.shape[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="DataLoader worker processes (default: min(2, cores))")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads of this process (default: torch's choice). DataLoader "
                         "workers always use 1. On a busy shared machine 1 avoids OpenMP threads "
                         "waiting for each other, which made small ops 10-20x slower here")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)   # explicit benchmark knob, off by default

    from torchvision import transforms

    ds = load_dataset("shapes")
    mean, std = compute_normalization(ds.train)
    n = len(ds.train)

    fast = BatchLoader(ds.train, args.batch_size, shuffle=True, augment=AugmentConfig.preset("crop-flip"),
                       normalize=(mean, std), device=device, seed=0)
    next(iter(fast))                                   # warm-up (allocator, kernels)
    fast.set_epoch(1)
    fast_s, fast_n = time_epoch(fast, device)

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(mean, std)])
    slow = torch.utils.data.DataLoader(PILDataset(ds.train.images, ds.train.labels, tf), batch_size=args.batch_size,
                                       shuffle=True, num_workers=args.workers,
                                       pin_memory=device.type == "cuda")
    slow_s, slow_n = time_epoch(slow, device)          # includes worker start-up, as every epoch does by default

    assert fast_n == slow_n == n
    fast_ips, slow_ips = fast_n / fast_s, slow_n / slow_s
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"shapes train split: {n} images 32x32, batch {args.batch_size}, device {device}, "
          f"torch threads {torch.get_num_threads()}, load average {load:.1f}")
    print(f"BatchLoader (uint8 tensor, per-batch crop+flip): {fast_s:7.2f} s  {fast_ips:10.0f} images/s")
    print(f"DataLoader + PIL transforms ({args.workers} workers):   {slow_s:7.2f} s  {slow_ips:10.0f} images/s")
    print(f"ratio: BatchLoader is {fast_ips / slow_ips:.1f}x the DataLoader's throughput")


if __name__ == "__main__":
    main()
