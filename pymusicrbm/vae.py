"""Convolutional variational autoencoder on fixed-length mel-spectrogram excerpts.

Plain PyTorch (no custom ops): the VAE is a feature learner and a generator to compare with the RBM models.
Spectrograms are standardised per mel band (statistics of the training data, stored with the model) and the
decoder is a Gaussian with a learned per-band standard deviation, so the reconstruction term is a real
log-likelihood and the balance with the KL term does not depend on the dB scale of the input.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import load_state, save_state

__all__ = ["ConvVAE", "cut_excerpts", "receptive_field"]

_KERNEL, _STRIDE = 4, 2
_TRAIN_FORMAT = "pymusicrbm.ConvVAE.training"
_MODEL_FORMAT = "pymusicrbm.ConvVAE"
# Hyper-parameters that must match for a checkpoint to be resumed (the run would differ otherwise).
_RESUME_KEYS = ("n_mels", "n_frames", "latent_dim", "channels", "beta", "kl_warmup_epochs", "lr", "batch_size",
                "validation_fraction", "weight_decay", "random_state")


def receptive_field(n_layers: int) -> int:
    """Receptive field (in bins/frames) of ``n_layers`` stacked kernel-4 stride-2 convolutions."""
    return 1 + (_KERNEL - 1) * (2 ** n_layers - 1)


def cut_excerpts(mel: np.ndarray, n_frames: int, hop: int | None = None) -> np.ndarray:
    """Cut a (n_mels, T) spectrogram into excerpts (k, n_mels, n_frames) starting every ``hop`` frames.

    ``hop`` defaults to ``n_frames`` (no overlap). The tail that does not fill a whole excerpt is dropped.
    """
    mel = np.asarray(mel)
    if mel.ndim != 2:
        raise ValueError(f"cut_excerpts: mel must be 2-D (n_mels, n_frames), got shape {mel.shape}")
    hop = n_frames if hop is None else int(hop)
    if n_frames < 1 or hop < 1:
        raise ValueError(f"cut_excerpts: n_frames and hop must be >= 1, got n_frames={n_frames}, hop={hop}")
    if mel.shape[1] < n_frames:
        raise ValueError(f"cut_excerpts: spectrogram has {mel.shape[1]} frames, shorter than one excerpt "
                         f"of n_frames={n_frames}")
    starts = range(0, mel.shape[1] - n_frames + 1, hop)
    return np.stack([mel[:, s:s + n_frames] for s in starts])


class _Net(nn.Module):
    """Encoder: strided Conv2d + BatchNorm + GELU, then a linear map to (mu, logvar); decoder mirrors it."""

    def __init__(self, n_mels, n_frames, latent_dim, channels):
        super().__init__()
        self.n_mels, self.n_frames = n_mels, n_frames
        scale = 2 ** len(channels)
        # Inputs are padded up to a multiple of 2**depth so every stride-2 layer halves the size exactly.
        self.h, self.w = -(-n_mels // scale), -(-n_frames // scale)
        self.pad_h, self.pad_w = self.h * scale - n_mels, self.w * scale - n_frames
        enc, c_in = [], 1
        for c in channels:
            enc += [nn.Conv2d(c_in, c, _KERNEL, _STRIDE, 1), nn.BatchNorm2d(c), nn.GELU()]
            c_in = c
        self.encoder = nn.Sequential(*enc)
        flat = channels[-1] * self.h * self.w
        self.to_latent = nn.Linear(flat, 2 * latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, flat), nn.GELU())
        dec = []
        rev = list(channels[::-1]) + [1]
        for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
            dec.append(nn.ConvTranspose2d(a, b, _KERNEL, _STRIDE, 1))
            if i < len(rev) - 2:
                dec += [nn.BatchNorm2d(b), nn.GELU()]
        self.decoder = nn.Sequential(*dec)
        # log standard deviation of the Gaussian decoder, one per mel band (the "calibrated decoder").
        self.log_sigma = nn.Parameter(torch.zeros(n_mels))
        self.channels_last = channels[-1]

    def encode(self, x):  # x: (B, n_mels, n_frames), standardised
        x = nn.functional.pad(x.unsqueeze(1), (0, self.pad_w, 0, self.pad_h))
        mu, logvar = self.to_latent(self.encoder(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z):
        h = self.from_latent(z).view(-1, self.channels_last, self.h, self.w)
        return self.decoder(h)[:, 0, :self.n_mels, :self.n_frames]


def _to_state(d: dict, prefix: str) -> dict:
    return {prefix + k: v.detach().to("cpu", copy=True).contiguous() for k, v in d.items()}


def _from_state(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


class ConvVAE:
    """Convolutional VAE on mel-spectrogram excerpts of shape (n_mels, n_frames), in dB.

    Parameters
    ----------
    n_mels, n_frames : int
        Excerpt size (64 or 96 mel bands; 128 frames is about 3 s at 22050 Hz, hop 512). Both must be at least
        the encoder's receptive field, ``receptive_field(len(channels))`` (46 for the default 4 layers).
    latent_dim : int
        Dimension of the Gaussian latent.
    channels : tuple of int
        Output channels of the strided convolutions (the decoder mirrors them).
    beta : float
        Weight of the KL term (beta < 1 gives sharper reconstructions and more informative latents).
    kl_warmup_epochs : int
        The KL weight rises linearly from beta/kl_warmup_epochs to beta over these epochs (0: no warm-up).
        Early stopping does not count epochs inside the warm-up.
    lr, batch_size, weight_decay : Adam settings.
    n_epochs, patience : int
        At most ``n_epochs`` epochs; stop after ``patience`` epochs without improvement of the validation
        objective (the negative ELBO with the target beta: the ELBO itself when beta=1). The weights of the best
        epoch are kept. ``patience=None`` disables early stopping.
    validation_fraction : float
        Fraction of the excerpts held out for validation when ``fit`` gets no ``X_valid``.
    device : str or None
        'cpu', 'cuda', ...; None picks cuda when available.
    random_state : int
        Seeds initialisation, shuffling, the validation split and the reparameterisation noise.
    verbose : int
        0 silent, 1 a progress bar over epochs.

    Attributes after ``fit``: ``history_`` (per epoch, in nats per excerpt: ``elbo``, ``recon`` (Gaussian negative
    log-likelihood) and ``kl`` on the training excerpts, the same with ``_valid`` on the validation excerpts (NaN
    without any), and the ``kl_weight`` used), ``best_epoch_``, ``n_epochs_`` (epochs run), ``mean_``/``std_`` (per-band
    standardisation statistics, dB), ``range_`` (min and max dB of the training data; decoded spectrograms
    are clipped to it).
    """

    def __init__(self, n_mels=64, n_frames=128, latent_dim=32, channels=(32, 64, 128, 256), beta=1.0,
                 kl_warmup_epochs=10, lr=1e-3, batch_size=64, n_epochs=100, patience=10,
                 validation_fraction=0.1, weight_decay=0.0, device=None, random_state=0, verbose=1):
        self.n_mels, self.n_frames, self.latent_dim = n_mels, n_frames, latent_dim
        self.channels = tuple(int(c) for c in channels)
        self.beta, self.kl_warmup_epochs = beta, kl_warmup_epochs
        self.lr, self.batch_size, self.n_epochs, self.patience = lr, batch_size, n_epochs, patience
        self.validation_fraction, self.weight_decay = validation_fraction, weight_decay
        self.device, self.random_state, self.verbose = device, random_state, verbose
        self._check_params()
        self.net_ = None

    # ------------------------------------------------------------------ checks
    def _check_params(self):
        if not isinstance(self.latent_dim, (int, np.integer)) or self.latent_dim < 1:
            raise ValueError(f"latent_dim must be an integer >= 1, got {self.latent_dim!r}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {self.channels!r}")
        rf = receptive_field(len(self.channels))
        for name in ("n_mels", "n_frames"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < rf:
                raise ValueError(f"{name}={v!r} is smaller than the receptive field of the {len(self.channels)}-"
                                 f"layer encoder ({rf}); use longer excerpts / more mel bands or fewer layers")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.kl_warmup_epochs < 0:
            raise ValueError(f"kl_warmup_epochs must be >= 0, got {self.kl_warmup_epochs}")
        if self.lr <= 0 or self.batch_size < 1 or self.n_epochs < 1:
            raise ValueError(f"need lr > 0, batch_size >= 1, n_epochs >= 1; got lr={self.lr}, "
                             f"batch_size={self.batch_size}, n_epochs={self.n_epochs}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be None or >= 1, got {self.patience}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")

    def _check_X(self, X, name="X"):
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 2:
            X = X[None]
        if X.ndim != 3:
            raise ValueError(f"{name} must be 3-D (n_excerpts, n_mels, n_frames), got shape {X.shape}")
        if X.shape[1] != self.n_mels:
            raise ValueError(f"{name} has {X.shape[1]} mel bins but the model expects n_mels={self.n_mels}")
        if X.shape[2] != self.n_frames:
            raise ValueError(f"{name} has {X.shape[2]} frames but the model expects excerpts of "
                             f"n_frames={self.n_frames} (cut longer spectrograms with cut_excerpts)")
        if X.shape[0] == 0:
            raise ValueError(f"{name} holds no excerpts")
        if not np.isfinite(X).all():
            raise ValueError(f"{name} contains NaN or infinite values (spectrograms must be finite dB values)")
        return X

    def _check_fitted(self):
        if self.net_ is None:
            raise RuntimeError("this ConvVAE is not fitted yet: call fit() or ConvVAE.load()")

    def _config(self):
        return {k: getattr(self, k) for k in ("n_mels", "n_frames", "latent_dim", "beta", "kl_warmup_epochs",
                                              "lr", "batch_size", "n_epochs", "patience", "validation_fraction",
                                              "weight_decay", "random_state")} | {"channels": list(self.channels)}

    @property
    def device_(self):
        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # ------------------------------------------------------------------ core
    def _standardise(self, xb):
        return (xb - self._mean_t[:, None]) / self._std_t[:, None]

    def _terms(self, x, eps):
        """Per-excerpt reconstruction NLL and KL (nats); eps None decodes the posterior mean."""
        mu, logvar = self.net_.encode(x)
        z = mu if eps is None else mu + eps * torch.exp(0.5 * logvar)
        xhat = self.net_.decode(z)
        log_sigma = self.net_.log_sigma.clamp(min=-4.0)[:, None]
        nll = 0.5 * (((x - xhat) * torch.exp(-log_sigma)) ** 2 + 2 * log_sigma + math.log(2 * math.pi))
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar)
        return nll.flatten(1).sum(1), kl.sum(1)

    def _kl_weight(self, epoch):
        if self.kl_warmup_epochs <= 0:
            return float(self.beta)
        return float(self.beta) * min(1.0, (epoch + 1) / self.kl_warmup_epochs)

    def _batches(self, X, order):
        dev = self.device_
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            yield self._standardise(torch.from_numpy(X[idx]).to(dev, non_blocking=True))

    @torch.no_grad()
    def _evaluate(self, X):
        """Single-sample ELBO estimate with fixed noise, so successive epochs are compared on equal terms."""
        self.net_.eval()
        g = torch.Generator(device=self.device_).manual_seed(int(self.random_state) + 7919)
        nll_sum = kl_sum = 0.0
        for xb in self._batches(X, np.arange(len(X))):
            eps = torch.randn((len(xb), self.latent_dim), generator=g, device=self.device_)
            nll, kl = self._terms(xb, eps)
            nll_sum += nll.sum().item()
            kl_sum += kl.sum().item()
        return nll_sum / len(X), kl_sum / len(X)

    def fit(self, X, y=None, X_valid=None, checkpoint=None, resume=False):
        """Train on excerpts X (n, n_mels, n_frames) in dB. ``y`` is ignored (sklearn compatibility).

        X_valid : held-out excerpts for early stopping (better: excerpts of other clips than X). When None, a
            random ``validation_fraction`` of X is held out.
        checkpoint : path of a safetensors file rewritten (atomically) after every epoch with the whole training
            state; with ``resume=True`` and an existing file, training continues from it and ends exactly as an
            uninterrupted run would.
        """
        X = self._check_X(X)
        if X_valid is None and self.validation_fraction > 0:
            perm = np.random.default_rng(self.random_state).permutation(len(X))
            n_val = max(1, int(round(self.validation_fraction * len(X))))
            if n_val >= len(X):
                raise ValueError(f"X has {len(X)} excerpts: too few to hold out a validation set")
            X, X_valid = X[np.sort(perm[n_val:])], X[np.sort(perm[:n_val])]
        elif X_valid is not None:
            X_valid = self._check_X(X_valid, "X_valid")
        X = np.ascontiguousarray(X)
        dev = self.device_
        seed = int(self.random_state)

        # Per-band statistics over all training excerpts and frames (float64 to avoid cancellation).
        self.mean_ = X.mean(axis=(0, 2), dtype=np.float64).astype(np.float32)
        self.std_ = np.maximum(X.std(axis=(0, 2), dtype=np.float64), 1e-3).astype(np.float32)
        self.range_ = np.array([X.min(), X.max()], dtype=np.float32)
        self._set_norm()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net_ = _Net(self.n_mels, self.n_frames, self.latent_dim, self.channels).to(dev)
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        g_shuffle = torch.Generator().manual_seed(seed)
        g_noise = torch.Generator(device=dev).manual_seed(seed + 1)
        keys = ("elbo", "recon", "kl", "elbo_valid", "recon_valid", "kl_valid", "kl_weight")
        self.history_ = {k: [] for k in keys}
        state = {"epoch": 0, "best_score": math.inf, "best_epoch": -1, "bad_epochs": 0}
        best = copy.deepcopy(self.net_.state_dict())
        fingerprint = [len(X), float(X.sum(dtype=np.float64))]

        if checkpoint is not None and resume and Path(checkpoint).exists():
            best, state = self._restore_training(checkpoint, opt, g_shuffle, g_noise, fingerprint)

        bar = tqdm(range(state["epoch"], self.n_epochs), desc="ConvVAE", unit="epoch", disable=not self.verbose,
                   initial=state["epoch"], total=self.n_epochs)
        for epoch in bar:
            if self.patience is not None and state["bad_epochs"] >= self.patience:
                break
            w = self._kl_weight(epoch)
            self.net_.train()
            order = torch.randperm(len(X), generator=g_shuffle).numpy()
            nll_sum = kl_sum = 0.0
            for xb in self._batches(X, order):
                eps = torch.randn((len(xb), self.latent_dim), generator=g_noise, device=dev)
                nll, kl = self._terms(xb, eps)
                loss = (nll + w * kl).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                nll_sum += nll.detach().sum().item()
                kl_sum += kl.detach().sum().item()
            if not math.isfinite(nll_sum):
                raise FloatingPointError(f"ConvVAE: training diverged at epoch {epoch} (non-finite loss); "
                                         f"lower lr (now {self.lr})")
            h = self.history_
            h["recon"].append(nll_sum / len(X))
            h["kl"].append(kl_sum / len(X))
            h["elbo"].append(-(nll_sum + kl_sum) / len(X))
            h["kl_weight"].append(w)
            if X_valid is not None:
                v_nll, v_kl = self._evaluate(X_valid)
                score = v_nll + self.beta * v_kl
            else:
                v_nll = v_kl = math.nan
                score = (nll_sum + self.beta * kl_sum) / len(X)
            h["recon_valid"].append(v_nll)
            h["kl_valid"].append(v_kl)
            h["elbo_valid"].append(-(v_nll + v_kl))
            in_warmup = epoch + 1 < self.kl_warmup_epochs
            if score < state["best_score"] or in_warmup:
                # During warm-up the objective is still moving, so the latest epoch is the best so far.
                state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
                best = copy.deepcopy(self.net_.state_dict())
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch + 1
            bar.set_postfix(elbo=f"{h['elbo'][-1]:.1f}", elbo_valid=f"{h['elbo_valid'][-1]:.1f}")
            if checkpoint is not None:
                self._save_training(checkpoint, opt, g_shuffle, g_noise, best, state, fingerprint)
        bar.close()
        self.net_.load_state_dict(best)
        self.net_.eval()
        self.best_epoch_ = state["best_epoch"]
        self.n_epochs_ = state["epoch"]
        return self

    def _norm_from(self, tensors):
        self.mean_, self.std_ = tensors["norm.mean"].numpy(), tensors["norm.std"].numpy()
        self.range_ = tensors["norm.range"].numpy()
        self._set_norm()

    def _set_norm(self):
        dev = self.device_
        self._mean_t = torch.as_tensor(self.mean_, device=dev)
        self._std_t = torch.as_tensor(self.std_, device=dev)

    # ------------------------------------------------------------------ checkpoints
    def _save_training(self, path, opt, g_shuffle, g_noise, best, state, fingerprint):
        tensors = _to_state(self.net_.state_dict(), "model.") | _to_state(best, "best.")
        params = list(self.net_.parameters())
        for i, p in enumerate(params):
            for k, v in opt.state.get(p, {}).items():
                tensors[f"opt.{i}.{k}"] = v.detach().to("cpu", copy=True).reshape(v.shape).contiguous()
        tensors["rng.shuffle"] = g_shuffle.get_state()
        tensors["rng.noise"] = g_noise.get_state()
        tensors["norm.mean"] = torch.from_numpy(self.mean_.copy())
        tensors["norm.std"] = torch.from_numpy(self.std_.copy())
        tensors["norm.range"] = torch.from_numpy(self.range_.copy())
        meta = {"format": _TRAIN_FORMAT, "config": self._config(), "state": state,
                "history": self.history_, "fingerprint": fingerprint}
        save_state(path, tensors, meta)

    def _restore_training(self, path, opt, g_shuffle, g_noise, fingerprint):
        tensors, meta = load_state(path)
        if meta.get("format") != _TRAIN_FORMAT:
            raise ValueError(f"{path} is not a ConvVAE training checkpoint (format {meta.get('format')!r})")
        mine = self._config()
        diff = [k for k in _RESUME_KEYS if meta["config"].get(k) != mine[k]]
        if diff:
            theirs = ", ".join(f"{k}={meta['config'].get(k)!r}" for k in diff)
            raise ValueError(f"{path} was written with other settings ({theirs}); resume with the same settings "
                             f"or use another checkpoint path")
        if meta.get("fingerprint") != fingerprint:
            raise ValueError(f"{path} was written for other training data ({meta.get('fingerprint')} vs "
                             f"{fingerprint} [n_excerpts, sum]); cannot resume")
        self.net_.load_state_dict(_from_state(tensors, "model."))
        best = {k: v.to(self.device_) for k, v in _from_state(tensors, "best.").items()}
        params = list(self.net_.parameters())
        opt_state = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                # Adam keeps 'step' on the CPU unless capturable/fused; the other moments live with the params.
                opt_state.setdefault(int(i), {})[name] = v if name == "step" else v.to(self.device_)
        sd = opt.state_dict()
        sd["state"] = opt_state
        opt.load_state_dict(sd)
        g_shuffle.set_state(tensors["rng.shuffle"])
        g_noise.set_state(tensors["rng.noise"])
        self._norm_from(tensors)
        self.history_ = meta["history"]
        return best, dict(meta["state"])

    def save(self, path):
        """Write the fitted model (weights, normalisation, settings, history) to a safetensors file, atomically."""
        self._check_fitted()
        tensors = _to_state(self.net_.state_dict(), "model.")
        tensors["norm.mean"] = torch.from_numpy(self.mean_.copy())
        tensors["norm.std"] = torch.from_numpy(self.std_.copy())
        tensors["norm.range"] = torch.from_numpy(self.range_.copy())
        meta = {"format": _MODEL_FORMAT, "config": self._config(), "history": self.history_,
                "best_epoch": self.best_epoch_, "n_epochs_run": self.n_epochs_}
        save_state(path, tensors, meta)

    @classmethod
    def load(cls, path, device=None, verbose=0):
        """Load a model written by ``save``."""
        tensors, meta = load_state(path)
        if meta.get("format") != _MODEL_FORMAT:
            raise ValueError(f"{path} is not a saved ConvVAE (format {meta.get('format')!r})")
        cfg = dict(meta["config"])
        model = cls(**cfg, device=device, verbose=verbose)
        model._norm_from(tensors)
        model.net_ = _Net(model.n_mels, model.n_frames, model.latent_dim, model.channels).to(model.device_)
        model.net_.load_state_dict(_from_state(tensors, "model."))
        model.net_.eval()
        model.history_, model.best_epoch_, model.n_epochs_ = meta["history"], meta["best_epoch"], meta["n_epochs_run"]
        return model

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _encode(self, X):
        self._check_fitted()
        X = self._check_X(X)
        self.net_.eval()
        mus, lvs = [], []
        for xb in self._batches(X, np.arange(len(X))):
            mu, lv = self.net_.encode(xb)
            mus.append(mu.cpu())
            lvs.append(lv.cpu())
        return torch.cat(mus).numpy(), torch.cat(lvs).numpy()

    def transform(self, X, return_logvar=False):
        """Posterior means (n, latent_dim); with ``return_logvar`` the log-variances are appended: (n, 2*latent)."""
        mu, lv = self._encode(X)
        return np.hstack([mu, lv]) if return_logvar else mu

    def fit_transform(self, X, y=None, **fit_params):
        return self.fit(X, **fit_params).transform(X)

    @torch.no_grad()
    def decode(self, z):
        """Decode latents (n, latent_dim) to mel spectrograms in dB, (n, n_mels, n_frames)."""
        self._check_fitted()
        z = np.asarray(z, dtype=np.float32)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (n, latent_dim={self.latent_dim}), got {z.shape}")
        if not np.isfinite(z).all():
            raise ValueError("z contains NaN or infinite values")
        self.net_.eval()
        out = []
        for s in range(0, len(z), self.batch_size):
            xhat = self.net_.decode(torch.from_numpy(z[s:s + self.batch_size]).to(self.device_))
            xhat = xhat * self._std_t[:, None] + self._mean_t[:, None]
            # Never beyond the dB range seen in training (e.g. above the 0 dB reference of ref='max' spectrograms).
            out.append(xhat.clamp(float(self.range_[0]), float(self.range_[1])).cpu())
        return torch.cat(out).numpy()

    def reconstruct(self, X):
        """Decode the posterior means of X: reconstructions in dB, same shape as X."""
        return self.decode(self.transform(X))

    def sample(self, n, center=None, scale=1.0, random_state=None):
        """Draw ``n`` spectrograms: z ~ N(center, scale^2) decoded (center None: the prior's 0).

        ``scale`` is a scalar or a per-dimension vector (e.g. the spread of one genre's latent means).
        Returns (spectrograms in dB (n, n_mels, n_frames), z (n, latent_dim)).
        """
        self._check_fitted()
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        rng = np.random.default_rng(random_state)
        center = np.zeros(self.latent_dim) if center is None else np.asarray(center, dtype=np.float64)
        if center.shape != (self.latent_dim,):
            raise ValueError(f"center must have shape ({self.latent_dim},), got {center.shape}")
        z = center + rng.standard_normal((n, self.latent_dim)) * np.asarray(scale, dtype=np.float64)
        return self.decode(z), z.astype(np.float32)

    def interpolate(self, x_a, x_b, n_steps=8):
        """Decode ``n_steps`` points on the line between the posterior means of excerpts x_a and x_b."""
        if n_steps < 2:
            raise ValueError(f"n_steps must be >= 2, got {n_steps}")
        z = self.transform(np.stack([np.asarray(x_a), np.asarray(x_b)]))
        t = np.linspace(0.0, 1.0, n_steps)[:, None]
        return self.decode((1 - t) * z[0] + t * z[1])

    @torch.no_grad()
    def score(self, X, y=None):
        """Mean ELBO per excerpt (nats, beta=1, one fixed-seed posterior sample): higher is better."""
        self._check_fitted()
        nll, kl = self._evaluate(self._check_X(X))
        return -(nll + kl)
