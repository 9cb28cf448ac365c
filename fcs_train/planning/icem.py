"""iCEM (Pinneri et al., "Sample-efficient Cross-Entropy Method for Real-time Planning", CoRL 2020).

Three changes to CEM that cut the candidates a plan needs:

- coloured noise: samples are correlated along the plan's raw steps (power spectrum 1/f^beta), so
  a candidate is a smooth motion rather than jitter around the mean;
- kept elites: a fraction of each iteration's elites is evaluated again in the next (the best
  found so far is never lost to resampling);
- a shrinking population: iteration i draws `samples / shrink^i` candidates (the mean needs fewer
  samples once sigma is small).

It refits mean and sigma with a little momentum, adds the mean itself in the last iteration and,
as every solver here, returns the best candidate evaluated.
"""

from __future__ import annotations

import threading

import torch

from fcs_train.planning.config import ICemConfig
from fcs_train.planning.solvers import Best, CostFn, EarlyStop, SolverResult, budget, check_cancel, finite
from fcs_train.planning.space import ActionSpace


def coloured_noise(n: int, steps: int, dims: int, beta: float, generator: torch.Generator,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """`(n, steps, dims)` standard normal noise whose power spectrum along `steps` is 1/f^beta (beta 0:
    white; 1: pink; 2: red): unit variance at every step, exactly (normalised by the spectrum, not by
    each sample, which would take away its mean and with it the slowest component)."""
    if beta == 0 or steps < 2:
        return torch.randn((n, steps, dims), generator=generator, device=device)
    freqs = torch.fft.rfftfreq(steps, device=device, dtype=torch.float64)
    freqs[0] = freqs[1]  # no infinite power at frequency 0
    scale = freqs ** (-beta / 2)
    shape = (n, dims, len(freqs))
    re = torch.randn(shape, generator=generator, device=device, dtype=torch.float64)
    im = torch.randn(shape, generator=generator, device=device, dtype=torch.float64)
    im[..., 0] = 0.0
    if steps % 2 == 0:
        im[..., -1] = 0.0  # the Nyquist coefficient of a real signal is real
    signal = torch.fft.irfft(torch.complex(re * scale, im * scale), n=steps)  # (n, dims, steps)
    # the variance of every step of that signal: (s_0^2 + 4 sum s_k^2 [+ s_Nyquist^2]) / steps^2
    weights = torch.full_like(scale, 4.0)
    weights[0] = 1.0
    if steps % 2 == 0:
        weights[-1] = 1.0
    std = torch.sqrt((weights * scale**2).sum()) / steps
    return (signal / std).transpose(1, 2).float()


@torch.no_grad()
def icem(cost: CostFn, space: ActionSpace, mu: torch.Tensor, cfg: ICemConfig, generator: torch.Generator,
         proprio_raw: torch.Tensor, cancel: threading.Event | None = None, warm: bool = False) -> SolverResult:
    """iCEM from mean `mu (H, fs * A)` (a warm start when `warm`, else the training mean)."""
    mu = space.project(mu, proprio_raw)
    horizon, fs, a = mu.shape[0], space.frameskip, space.action_dim
    n_iterations, sigma0 = budget(cfg, warm)
    sigma = torch.full_like(mu, sigma0)
    best, trace, stop = Best(), [], EarlyStop(cfg.early_stop_patience, cfg.early_stop_tol)
    kept = mu[None][:0]  # (0, H, fs * A): nothing kept before the first iteration
    rollouts, stopped, iterations, elites = 0, "budget", 0, mu[None]
    for iterations in range(1, n_iterations + 1):
        check_cancel(cancel)
        n = cfg.population(iterations - 1)
        noise = coloured_noise(n, horizon * fs, a, cfg.noise_beta, generator, mu.device)
        x = space.sample(mu, sigma, n, generator, proprio_raw, normals=noise.reshape(n, horizon, fs * a))
        extra = [kept] + ([mu[None]] if iterations == n_iterations else [])
        x = torch.cat([x, *extra])
        c = cost(x).float()
        rollouts += len(x)
        before = best.cost
        best.update(x, c)
        trace.append((rollouts, best.cost))
        order = torch.argsort(finite(c), stable=True)
        elites = x[order[: cfg.elites]]
        kept = elites[: round(cfg.keep_elites * len(elites))]
        new_sigma = elites.std(dim=0) if len(elites) > 1 else torch.zeros_like(mu)
        mu = cfg.momentum * mu + (1 - cfg.momentum) * elites.mean(dim=0)
        sigma = (cfg.momentum * sigma + (1 - cfg.momentum) * new_sigma).clamp_min(cfg.sigma_min)
        if stop(before, best.cost):
            stopped = "early_stop"
            break
    return best.result(iterations=iterations, rollouts=rollouts, stopped=stopped, trace=trace, elites=elites)
