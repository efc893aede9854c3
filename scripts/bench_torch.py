#!/usr/bin/env python3
"""GPM + BECAME in PyTorch (CPU, or a CUDA GPU with --device cuda), timed phase by phase: the reference for `host bench update`.

Written the way the authors' code does it (GPM's main_pmnist.py, BECAME's GPM-based variant): an MLP without
biases whose forward stores each layer's input in `net.act`, SGD over a shuffled index, `loss.backward()`, the
projection `grad - grad.view(sz, -1) @ feature_mat` with `feature_mat = U Uᵀ` precomputed per layer, best-
validation restore, a stage 2 with a fresh optimizer, the diagonal Fisher over the task's training split in
batches of 64 in train mode against argmax pseudo-labels (`grad**2 * len(batch)`, then `/ N`), one global α,
the merge, and the basis update from 300 random samples with `np.linalg.svd` and the strict threshold.

One deliberate difference from the reference: each epoch validates but does not re-evaluate the whole training
split (the reference does so only to print the training loss); the Rust learner does not either, so both
implementations do the same work.

Reads MNIST (Fashion-MNIST for split-fmnist) from the gzipped IDX files under data/, cuts task 2 of the stream
with the same sizes as the Rust streams (PMNIST: 54000 train / 6000 val; Split-(F)MNIST task 2 = classes 2,3
with a 5 % hold-out), learns tasks 1..T and times the last one. split-fmnist runs the LeNet CNN of the Rust preset
(conv layers projected on their im2col patches, batch norms frozen after task 1, as GPM's conv-net code does). Writes JSON in the format of `host bench update`:

    {"impl": "pytorch", "stream", "epochs", "threads", "phases": {name: seconds}, "total", "version", ...}

With --device cuda the tasks, the model and GPM's projection matrices live on the GPU (the SVDs stay in numpy, as
in the authors' code) and every phase ends with torch.cuda.synchronize(), so a phase's time includes its kernels:
the peer of `host bench update --method gpm+became@cuda`.

Usage: bench_torch.py --stream pmnist|split-mnist|split-fmnist [--tasks 2] [--epochs 1] [--threads N] [--repeat N] [--device cpu|cuda] [--out FILE.json]
"""

import argparse
import copy
import gzip
import json
import os
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


# ----------------------------------------------------------------------------------------------- data


def read_idx(path):
    """An IDX file (gzipped or raw) as a numpy array."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims)


def find(dirname, stem):
    for name in (stem + ".gz", stem):
        p = os.path.join(dirname, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{stem}[.gz] not found in {dirname} (run scripts/fetch-data.sh)")


def load_mnist(data_dir):
    """Training images (n, 784) normalised as (x/255 - 0.1307)/0.3081, and labels."""
    d = os.path.join(data_dir, "mnist")
    x = read_idx(find(d, "train-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32)
    y = read_idx(find(d, "train-labels-idx1-ubyte")).astype(np.int64)
    x = (x / 255.0 - MNIST_MEAN) / MNIST_STD
    return x.astype(np.float32), y


def load_fashion(data_dir):
    """Fashion-MNIST training images (n, 784) normalised as (x/255 - 0.2860)/0.3530, and labels."""
    d = os.path.join(data_dir, "fashion-mnist")
    x = read_idx(find(d, "train-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32)
    y = read_idx(find(d, "train-labels-idx1-ubyte")).astype(np.int64)
    x = (x / 255.0 - FASHION_MEAN) / FASHION_STD
    return x.astype(np.float32), y


def hold_out(n, frac, rng):
    """(train, val) index lists: a shuffled round(frac·n) go to validation; both sorted (data-set order)."""
    idx = rng.permutation(n)
    n_val = int(round(frac * n))
    return np.sort(idx[n_val:]), np.sort(idx[:n_val])


def make_tasks(stream, tasks, x, y, seed):
    """A list of task dicts: xtr, ytr, xva, yva (torch tensors) and the head index."""
    out = []
    if stream == "pmnist":
        for t in range(tasks):
            rng = np.random.RandomState(seed + t)
            perm = rng.permutation(784)
            tr, va = hold_out(len(y), 0.1, rng)
            xp = x[:, perm]
            out.append(dict(xtr=xp[tr], ytr=y[tr], xva=xp[va], yva=y[va], head=0))
    elif stream in ("split-mnist", "split-fmnist"):
        for t in range(tasks):
            rng = np.random.RandomState(seed + t)
            classes = (2 * t, 2 * t + 1)
            rows = np.nonzero(np.isin(y, classes))[0]
            tr, va = hold_out(len(rows), 0.05, rng)
            local = (y[rows] == classes[1]).astype(np.int64)  # label within the pair
            xs = x[rows]
            out.append(dict(xtr=xs[tr], ytr=local[tr], xva=xs[va], yva=local[va], head=t))
    else:
        raise SystemExit(f"unknown stream {stream} (pmnist, split-mnist, split-fmnist)")
    for task in out:
        for k in ("xtr", "ytr", "xva", "yva"):
            task[k] = torch.from_numpy(np.ascontiguousarray(task[k]))
    return out


# ---------------------------------------------------------------------------------------------- model


class MLPNet(nn.Module):
    """GPM's MLP: linear layers without bias, ReLU, the input of every layer kept in `self.act`."""

    def __init__(self, hidden, heads, n_outputs):
        super().__init__()
        self.act = OrderedDict()
        self.lin1 = nn.Linear(784, hidden, bias=False)
        self.lin2 = nn.Linear(hidden, hidden, bias=False)
        self.fc = nn.ModuleList([nn.Linear(hidden, n_outputs, bias=False) for _ in range(heads)])

    def forward(self, x, head=0):
        self.act["Lin1"] = x
        x = F.relu(self.lin1(x))
        self.act["Lin2"] = x
        x = F.relu(self.lin2(x))
        self.act["fc1"] = x
        return self.fc[head](x)


class LeNet(nn.Module):
    """The GPM/BECAME conv net as the Rust preset builds it (firmware::nn::zoo::lenet): conv 5×5 (20, no bias) →
    BatchNorm(track_running_stats=False) → ReLU → maxpool 2 → conv 5×5 (50, no bias) → BN → ReLU → maxpool 2 →
    linear 800 → hidden (no bias) → ReLU → heads (no bias). `self.act` keeps each projected layer's input."""

    def __init__(self, hidden, heads, n_outputs):
        super().__init__()
        self.act = OrderedDict()
        self.conv1 = nn.Conv2d(1, 20, 5, bias=False)
        self.bn1 = nn.BatchNorm2d(20, track_running_stats=False)
        self.conv2 = nn.Conv2d(20, 50, 5, bias=False)
        self.bn2 = nn.BatchNorm2d(50, track_running_stats=False)
        self.fc1 = nn.Linear(800, hidden, bias=False)
        self.fc = nn.ModuleList([nn.Linear(hidden, n_outputs, bias=False) for _ in range(heads)])

    def forward(self, x, head=0):
        x = x.view(-1, 1, 28, 28)
        self.act["conv1"] = x
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        self.act["conv2"] = x
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = x.reshape(x.size(0), -1)
        self.act["fc1"] = x
        x = F.relu(self.fc1(x))
        return self.fc[head](x)


def get_model(model):
    return copy.deepcopy(model.state_dict())


def set_model_(model, state_dict):
    model.load_state_dict(copy.deepcopy(state_dict))


# ------------------------------------------------------------------------------------------- training


def train_epoch(args, model, x, y, head, optimizer, criterion, feature_mat=None, n_proj=0, task_id=0):
    """One epoch of (projected) SGD over a shuffled index, as GPM's train / train_projected."""
    model.train()
    r = np.arange(x.size(0))
    np.random.shuffle(r)
    r = torch.from_numpy(r).to(x.device)
    total = 0.0
    for i in range(0, len(r), args.batch_size):
        b = r[i : i + args.batch_size]
        data, target = x[b], y[b]
        optimizer.zero_grad()
        output = model(data, head)
        loss = criterion(output, target)
        loss.backward()
        if feature_mat is not None:
            kk = 0
            for k, (m, params) in enumerate(model.named_parameters()):
                if k < n_proj and len(params.size()) != 1:
                    sz = params.grad.data.size(0)
                    params.grad.data = params.grad.data - torch.mm(
                        params.grad.data.view(sz, -1), feature_mat[kk]
                    ).view(params.size())
                    kk += 1
                elif (k < n_proj and len(params.size()) == 1) and task_id != 0:
                    params.grad.data.fill_(0)
        optimizer.step()
        total += loss.item() * len(b)
    return total / len(r)


def test(model, x, y, head, criterion, batch=64):
    model.eval()
    total_loss, correct = 0.0, 0
    r = np.arange(x.size(0))
    np.random.shuffle(r)
    r = torch.from_numpy(r).to(x.device)
    with torch.no_grad():
        for i in range(0, len(r), batch):
            b = r[i : i + batch]
            output = model(x[b], head)
            loss = criterion(output, y[b])
            correct += output.argmax(dim=1).eq(y[b]).sum().item()
            total_loss += loss.item() * len(b)
    return total_loss / len(r), correct / len(r)


def run_stage(args, model, task, criterion, feature_mat=None, n_proj=0, task_id=0, restore_best=True):
    """GPM's epoch loop: SGD, validate, lr decay on plateau, early stop, optional best-validation restore."""
    lr = args.lr
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    best_loss, best_model, patience = np.inf, get_model(model), args.lr_patience
    epochs = 0
    for _epoch in range(args.epochs):
        train_epoch(args, model, task["xtr"], task["ytr"], task["head"], optimizer, criterion, feature_mat, n_proj, task_id)
        epochs += 1
        valid_loss, _ = test(model, task["xva"], task["yva"], task["head"], criterion)
        if valid_loss < best_loss:
            best_loss, best_model, patience = valid_loss, get_model(model), args.lr_patience
        else:
            patience -= 1
            if patience <= 0:
                lr /= args.lr_factor
                if lr < args.lr_min:
                    break
                patience = args.lr_patience
                for g in optimizer.param_groups:
                    g["lr"] = lr
    if restore_best:
        set_model_(model, best_model)
    return epochs


# --------------------------------------------------------------------------------------------- Fisher


def get_fisher(model, x, head, criterion, batch=64):
    """BECAME's diagonal Fisher: train mode, batches of 64 in order, argmax pseudo-labels, grad² · |b|, / N."""
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    model.train()
    for i in range(0, x.size(0), batch):
        data = x[i : i + batch]
        model.zero_grad()
        output = model(data, head)
        label = output.max(1)[1]
        loss = criterion(output, label)
        loss.backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                fisher[n] += p.grad.data.pow(2) * len(data)
    return {n: f / x.size(0) for n, f in fisher.items()}


# ------------------------------------------------------------------------------------------------ GPM


def get_representation_matrix(net, x, head, n_layers, samples=300):
    r = np.arange(x.size(0))
    np.random.shuffle(r)
    r = torch.from_numpy(r).to(x.device)
    b = r[0:samples]
    example_data = x[b]
    with torch.no_grad():
        net(example_data, head)
    mat_list = []
    act_key = list(net.act.keys())
    for i in range(n_layers):
        act = net.act[act_key[i]].detach()
        if act.dim() == 4:
            # A conv layer's representation: its 5×5 im2col patches as columns (C·k·k, samples·positions).
            cols = F.unfold(act[0:samples], 5)  # (N, C·25, L)
            mat_list.append(cols.permute(1, 0, 2).reshape(cols.size(1), -1).cpu().numpy())
        else:
            mat_list.append(act[0:samples].cpu().numpy().transpose())
    return mat_list


def update_GPM(mat_list, threshold, feature_list):
    if not feature_list:
        for i in range(len(mat_list)):
            activation = mat_list[i]
            U, S, Vh = np.linalg.svd(activation, full_matrices=False)
            sval_total = (S**2).sum()
            sval_ratio = (S**2) / sval_total
            r = np.sum(np.cumsum(sval_ratio) < threshold[i])
            feature_list.append(U[:, 0:r])
    else:
        for i in range(len(mat_list)):
            activation = mat_list[i]
            U1, S1, Vh1 = np.linalg.svd(activation, full_matrices=False)
            sval_total = (S1**2).sum()
            act_hat = activation - np.dot(np.dot(feature_list[i], feature_list[i].transpose()), activation)
            U, S, Vh = np.linalg.svd(act_hat, full_matrices=False)
            sval_hat = (S**2).sum()
            sval_ratio = (S**2) / sval_total
            accumulated_sval = (sval_total - sval_hat) / sval_total
            r = 0
            for ii in range(sval_ratio.shape[0]):
                if accumulated_sval < threshold[i]:
                    accumulated_sval += sval_ratio[ii]
                    r += 1
                else:
                    break
            if r == 0:
                continue
            Ui = np.hstack((feature_list[i], U[:, 0:r]))
            feature_list[i] = Ui[:, 0 : Ui.shape[0]] if Ui.shape[1] > Ui.shape[0] else Ui
    return feature_list


# ----------------------------------------------------------------------------------------------- main


def flat(model):
    return torch.cat([p.data.reshape(-1) for p in model.parameters()])


def clock(args):
    """time.perf_counter() after the GPU's queued work has finished (with --device cuda)."""
    if args.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def run_once(args, tasks, hidden, heads, n_out, threshold, cnn=False):
    """Learn every task from a fresh model; return the result dict of the last task (the timed one)."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    n_layers = len(threshold)  # projected layers: the trunk, plus the head on single-head PMNIST
    # named_parameters() order: the trunk's (MLP: lin1.weight, lin2.weight; LeNet: conv1, bn1 ×2, conv2, bn2 ×2,
    # fc1), then the heads; the first n_proj are projected (matrices) or frozen after task 1 (BN vectors).
    n_proj = 7 if cnn else n_layers
    model = (LeNet(hidden, heads, n_out) if cnn else MLPNet(hidden, heads, n_out)).to(args.device)
    criterion = nn.CrossEntropyLoss()
    feature_list = []
    fisher_old = None
    report = None
    for task_id, task in enumerate(tasks):
        timings = OrderedDict()
        if task_id == 0:
            t0 = clock(args)
            epochs1 = run_stage(args, model, task, criterion)
            timings["stage1"] = clock(args) - t0
            t0 = clock(args)
            fisher_old = get_fisher(model, task["xtr"], task["head"], criterion)
            timings["fisher"] = clock(args) - t0
            epochs2, alpha = 0, None
        else:
            # Stage 1: projected SGD from the previous merged model, best-validation restore.
            t0 = clock(args)
            feature_mat = [torch.tensor(np.dot(f, f.transpose()), dtype=torch.float32, device=args.device) for f in feature_list]
            epochs1 = run_stage(args, model, task, criterion, feature_mat, n_proj, task_id, restore_best=True)
            timings["stage1"] = clock(args) - t0
            theta_gp = {n: p.data.clone() for n, p in model.named_parameters()}
            # Stage 2: a fresh optimizer, no projection, no restore.
            t0 = clock(args)
            epochs2 = run_stage(args, model, task, criterion, restore_best=False)
            timings["stage2"] = clock(args) - t0
            theta_hat = {n: p.data.clone() for n, p in model.named_parameters()}
            t0 = clock(args)
            fisher_cur = get_fisher(model, task["xtr"], task["head"], criterion)
            t_fisher = clock(args) - t0
            # Merge: one global α over every parameter.
            t0 = clock(args)
            num, den = 0.0, 0.0
            for n in theta_gp:
                d2 = (theta_hat[n] - theta_gp[n]).double().pow(2)
                num += (fisher_cur[n].double() * d2).sum().item()
                den += ((fisher_cur[n] + fisher_old[n]).double() * d2).sum().item()
            alpha = min(max(num / den, 0.0), 1.0) if den > 0 else 0.0
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_((1 - alpha) * theta_gp[n] + alpha * theta_hat[n])
            timings["merge"] = clock(args) - t0
            t0 = clock(args)
            fisher_merged = get_fisher(model, task["xtr"], task["head"], criterion)
            for n in fisher_old:
                fisher_old[n] += fisher_merged[n]
            timings["fisher"] = t_fisher + clock(args) - t0
        t0 = clock(args)
        mat_list = get_representation_matrix(model, task["xtr"], task["head"], n_layers, args.rep_samples)
        feature_list = update_GPM(mat_list, [t + args.threshold_increment * task_id for t in threshold], feature_list)
        timings["basis"] = clock(args) - t0
        total = sum(timings.values())
        print(
            f"task {task_id + 1}: " + ", ".join(f"{k} {v:.3f} s" for k, v in timings.items()) + f", total {total:.3f} s",
            file=sys.stderr,
        )
        report = {
            "impl": "pytorch",
            "stream": args.stream,
            "epochs": args.epochs,
            "threads": torch.get_num_threads(),
            "phases": dict(timings),
            "total": total,
            "_epochs_run": epochs1 + epochs2,
            "task": task_id,
            "train_samples": len(task["ytr"]),
            "val_samples": len(task["yva"]),
            "batch_size": args.batch_size,
            "alpha": alpha,
            "basis_sizes": [f.shape[1] for f in feature_list],
            "version": torch.__version__,
            "device": torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu",
        }
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stream", default="pmnist", choices=["pmnist", "split-mnist", "split-fmnist"])
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="runs from scratch; each phase reports its fastest run")
    ap.add_argument("--data-dir", default=os.environ.get("EDGELEARN_DATA") or os.path.join(os.path.dirname(__file__), "..", "data"))
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (a CUDA GPU: the peer of gpm+became@cuda)")
    ap.add_argument("--out")
    args = ap.parse_args()
    args.device = torch.device(args.device)
    if args.tasks < 2:
        raise SystemExit("--tasks must be at least 2 (task 1 has no stage 2 and no merge)")
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    args.rep_samples, args.threshold_increment = 300, 0.0
    if args.stream == "pmnist":
        hidden, heads, n_out, batch = 100, 1, 10, 10
        threshold = [0.95, 0.99, 0.99]  # single head: the head is projected too
    elif args.stream == "split-fmnist":
        # The Rust preset: LeNet with hidden 100, 2-way heads, batch 64; GPM over conv1, conv2, fc1 with 0.97
        # + 0.003 per task and 125 samples per representation (the GPM conv-net settings).
        hidden, heads, n_out, batch = 100, 5, 2, 64
        threshold = [0.97, 0.97, 0.97]
        args.rep_samples, args.threshold_increment = 125, 0.003
    else:
        hidden, heads, n_out, batch = 256, 5, 2, 64
        threshold = [0.97, 0.97]  # multi-head: heads are not projected
    args.batch_size, args.lr, args.lr_min, args.lr_patience, args.lr_factor = batch, 0.01, 1e-5, 6, 2.0
    x, y = load_fashion(args.data_dir) if args.stream == "split-fmnist" else load_mnist(args.data_dir)
    tasks = make_tasks(args.stream, args.tasks, x, y, args.seed)
    for task in tasks:
        for k in ("xtr", "ytr", "xva", "yva"):
            task[k] = task[k].to(args.device)
    cnn = args.stream == "split-fmnist"
    runs = [run_once(args, tasks, hidden, heads, n_out, threshold, cnn) for _ in range(args.repeat)]
    report = runs[-1]
    report["phases"] = {k: min(r["phases"][k] for r in runs) for k in report["phases"]}
    report["total"] = sum(report["phases"].values())
    train_time = report["phases"]["stage1"] + report["phases"].get("stage2", 0.0)
    report["samples_per_s"] = report["_epochs_run"] * report["train_samples"] / train_time if train_time > 0 else None
    report["repeats"] = args.repeat
    del report["_epochs_run"]

    text = json.dumps(report, indent=2)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
