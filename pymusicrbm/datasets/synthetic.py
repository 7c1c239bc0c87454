"""The synthetic genre set: ten classes of generated music written in the GTZAN layout (the default data).

:func:`make_synthetic_genres` writes ``root/genres/<genre>/<genre>.000NN.wav``; each clip is rendered by
:func:`_synth_clip` from its parts (grid, harmony, lead, bass, chords, drums, recording), vectorised voices read from
band-limited wavetables.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import SR
from .core import AudioDataset
from .loaders import GTZAN_GENRES, _audio_files, load_gtzan

__all__ = ["make_synthetic_genres"]

# Each genre is a distribution over arrangements: tempo range, swing, drum patterns (16 steps per bar, digit d =
# hit probability d/9), instruments with weights, pitch ranges, note lengths (in 16th steps), bass and chord
# figures, background noise and "recording" bandwidth. Neighbouring genres share tempi, instruments and figures,
# and every clip draws its own gains, EQ and noise, so classes overlap: an MFCC + SVM baseline is well above
# chance but not perfect.
_SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10), "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10), "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
    "major_pent": (0, 2, 4, 7, 9), "minor_pent": (0, 3, 5, 7, 10), "blues": (0, 3, 5, 6, 7, 10),
}
# Harmonic profile (amplitude k**-slope, even harmonics times `even`, a formant bump at harmonic `formant[0]`
# of gain `formant[1]`), envelope (attack s, decay s, sustain level, release s), vibrato depth (relative pitch),
# and whether the genre's distortion drive applies.
_INSTRUMENTS = {
    "piano": dict(slope=1.3, even=1.0, formant=(0, 0.0), env=(0.004, 0.45, 0.05, 0.05), vib=0.0, dist=False),
    "ac_guitar": dict(slope=1.1, even=0.8, formant=(6, 1.5), env=(0.003, 0.3, 0.0, 0.03), vib=0.0, dist=False),
    "el_guitar": dict(slope=1.4, even=0.9, formant=(3, 1.0), env=(0.005, 0.6, 0.25, 0.05), vib=0.003,
                      dist=False),
    "dist_guitar": dict(slope=1.0, even=1.0, formant=(4, 1.0), env=(0.005, 1.0, 0.7, 0.03), vib=0.0, dist=True),
    "organ": dict(slope=0.6, even=1.0, formant=(8, 1.0), env=(0.01, 1.0, 1.0, 0.02), vib=0.004, dist=False),
    "strings": dict(slope=1.0, even=1.0, formant=(5, 0.8), env=(0.12, 1.0, 0.9, 0.15), vib=0.006, dist=False),
    "brass": dict(slope=0.7, even=1.0, formant=(4, 2.0), env=(0.04, 0.5, 0.7, 0.06), vib=0.004, dist=False),
    "sax": dict(slope=0.9, even=0.7, formant=(3, 2.5), env=(0.03, 0.6, 0.75, 0.05), vib=0.008, dist=False),
    "clarinet": dict(slope=1.0, even=0.1, formant=(0, 0.0), env=(0.03, 1.0, 0.85, 0.05), vib=0.003, dist=False),
    "flute": dict(slope=2.5, even=1.0, formant=(0, 0.0), env=(0.06, 1.0, 0.9, 0.08), vib=0.008, dist=False),
    "synth_lead": dict(slope=1.0, even=0.0, formant=(0, 0.0), env=(0.01, 1.0, 0.8, 0.03), vib=0.003, dist=False),
    "synth_pad": dict(slope=1.2, even=1.0, formant=(0, 0.0), env=(0.3, 1.0, 1.0, 0.4), vib=0.002, dist=False),
    "upright_bass": dict(slope=2.0, even=1.0, formant=(0, 0.0), env=(0.01, 0.5, 0.1, 0.05), vib=0.0, dist=False),
    "el_bass": dict(slope=1.6, even=1.0, formant=(0, 0.0), env=(0.005, 0.8, 0.5, 0.03), vib=0.0, dist=False),
    "synth_bass": dict(slope=1.0, even=1.0, formant=(0, 0.0), env=(0.005, 0.4, 0.6, 0.02), vib=0.0, dist=False),
    "sub_bass": dict(slope=4.0, even=1.0, formant=(0, 0.0), env=(0.005, 1.2, 0.3, 0.05), vib=0.0, dist=False),
    "dist_bass": dict(slope=1.2, even=1.0, formant=(0, 0.0), env=(0.005, 1.0, 0.7, 0.03), vib=0.0, dist=True),
}
_GENRES = {
    "blues": dict(
        tempo=(66, 112), swing=(0.12, 0.17), jitter=0.010, drum_prob=0.9,
        kick="9000000070000000", snare="0000900000009000", hat="9060906090609060", hats=("ride", "closed"),
        snare_kind="snare", lead=(("el_guitar", 80), ("organ", 10), ("piano", 5), ("sax", 5)),
        lead_range=(52, 79), durs=((1, 2, 3, 4, 6, 8), (1, 3, 2, 2, 1, 1)), rest=0.25, legato=(0.6, 0.95),
        scales=("blues", "minor_pent"), harmony="mixolydian", progs=((0, 0, 3, 0, 4, 3, 0, 4), (0, 3, 0, 4)),
        bass="walk", bass_inst=(("el_bass", 75), ("upright_bass", 25)), bass_range=(33, 50),
        chords="comp", chord_inst=(("organ", 50), ("piano", 50)), sevenths=True, drive=(0.0, 1.5),
        noise=("pink", (-44, -32)), bandwidth=(2000, 5000)),
    "classical": dict(
        tempo=(50, 120), swing=(0.0, 0.0), jitter=0.030, drum_prob=0.0,
        kick=None, snare=None, hat=None, hats=("closed",), snare_kind="snare",
        lead=(("strings", 80), ("piano", 8), ("flute", 8), ("clarinet", 4)), lead_range=(55, 91),
        durs=((2, 4, 6, 8, 12, 16), (2, 3, 1, 3, 1, 1)), rest=0.1, legato=(0.9, 1.0),
        scales=("major", "minor", "harmonic_minor"), harmony="major", progs=((0, 3, 4, 0), (0, 5, 3, 4), (0, 4)),
        bass="long", bass_inst=(("strings", 90), ("piano", 10)), bass_range=(36, 55),
        chords="pad", chord_inst=(("strings", 85), ("piano", 10), ("organ", 5)), sevenths=False, drive=(0.0, 0.0),
        noise=("white", (-62, -45)), bandwidth=(4000, 11000)),
    "country": dict(
        tempo=(90, 150), swing=(0.0, 0.06), jitter=0.008, drum_prob=0.85,
        kick="9000000090000000", snare="0050905000509050", hat="9090909090909090", hats=("closed",),
        snare_kind="snare", lead=(("ac_guitar", 80), ("strings", 15), ("piano", 5)),
        lead_range=(55, 81), durs=((1, 2, 3, 4, 8), (2, 4, 1, 2, 1)), rest=0.2, legato=(0.6, 0.9),
        scales=("major_pent", "major"), harmony="major", progs=((0, 3, 4, 0), (0, 0, 3, 4), (0, 4, 0, 3)),
        bass="root_fifth", bass_inst=(("upright_bass", 50), ("el_bass", 50)), bass_range=(33, 50),
        chords="strum", chord_inst=(("ac_guitar", 90), ("piano", 10)), sevenths=False, drive=(0.0, 0.5),
        noise=("pink", (-60, -42)), bandwidth=(4000, 11000)),
    "disco": dict(
        tempo=(110, 132), swing=(0.0, 0.03), jitter=0.004, drum_prob=0.95,
        kick="9000900090009000", snare="0000900000009000", hat="0090009000900090", hats=("open",),
        snare_kind="snare", lead=(("strings", 75), ("brass", 20), ("synth_lead", 5)),
        lead_range=(60, 84), durs=((1, 2, 4, 6, 8), (1, 3, 3, 1, 1)), rest=0.25, legato=(0.7, 1.0),
        scales=("minor", "dorian", "major"), harmony="dorian", progs=((0, 3), (0, 6, 5, 4), (0, 0, 3, 3)),
        bass="octave8", bass_inst=(("el_bass", 90), ("synth_bass", 10)), bass_range=(33, 48),
        chords="stab", chord_inst=(("el_guitar", 34), ("strings", 33), ("piano", 33)), sevenths=True,
        drive=(0.0, 0.5), noise=("pink", (-60, -42)), bandwidth=(5000, 11000)),
    "hiphop": dict(
        tempo=(78, 102), swing=(0.04, 0.12), jitter=0.006, drum_prob=0.95,
        kick="9000000490900000", snare="0000900000009002", hat="9595959595959595", hats=("closed",),
        snare_kind="snare", lead=(("piano", 80), ("synth_lead", 10), ("brass", 10)),
        lead_range=(55, 77), durs=((2, 4, 6, 8), (2, 3, 1, 2)), rest=0.45, legato=(0.5, 0.9),
        scales=("minor", "minor_pent", "dorian"), harmony="minor", progs=((0, 5), (0, 3, 5, 4), (0,)),
        bass="long", bass_inst=(("sub_bass", 90), ("synth_bass", 10)), bass_range=(28, 43),
        chords="pad", chord_inst=(("synth_pad", 80), ("piano", 10), ("strings", 10)), sevenths=True,
        drive=(0.0, 1.0), noise=("vinyl", (-46, -32)), bandwidth=(3000, 10000)),
    "jazz": dict(
        tempo=(100, 200), swing=(0.13, 0.17), jitter=0.010, drum_prob=0.85,
        kick="2000000020000000", snare="0002000300020003", hat="9000909090009090", hats=("ride",),
        snare_kind="snare", lead=(("sax", 85), ("piano", 8), ("brass", 5), ("clarinet", 2)),
        lead_range=(53, 82), durs=((1, 2, 3, 4, 6), (2, 4, 1, 2, 1)), rest=0.2, legato=(0.7, 1.0),
        scales=("dorian", "mixolydian", "blues"), harmony="dorian", progs=((1, 4, 0, 0), (0, 5, 1, 4)),
        bass="walk", bass_inst=(("upright_bass", 95), ("el_bass", 5)), bass_range=(31, 50),
        chords="comp", chord_inst=(("piano", 90), ("el_guitar", 10)), sevenths=True, drive=(0.0, 0.0),
        noise=("pink", (-50, -36)), bandwidth=(2500, 7000)),
    "metal": dict(
        tempo=(130, 210), swing=(0.0, 0.0), jitter=0.003, drum_prob=0.95,
        kick="9999999999999999", snare="0000900000009000", hat="9000900090009000", hats=("crash", "open"),
        snare_kind="snare", lead=(("dist_guitar", 95), ("synth_lead", 5)),
        lead_range=(52, 79), durs=((1, 2, 4, 8), (4, 3, 2, 1)), rest=0.1, legato=(0.8, 1.0),
        scales=("minor", "harmonic_minor", "minor_pent"), harmony="minor", progs=((0, 5, 6, 0), (0, 1), (0, 5)),
        bass="eighths", bass_inst=(("dist_bass", 85), ("el_bass", 15)), bass_range=(28, 45),
        chords="power", chord_inst=(("dist_guitar", 1),), sevenths=False, drive=(4.0, 12.0),
        noise=("white", (-40, -28)), bandwidth=(6000, 11000)),
    "pop": dict(
        tempo=(94, 130), swing=(0.0, 0.04), jitter=0.004, drum_prob=0.9,
        kick="9000000090600000", snare="0000900000009000", hat="9090909090909090", hats=("closed", "open"),
        snare_kind="snare", lead=(("synth_lead", 85), ("piano", 8), ("ac_guitar", 4), ("el_guitar", 3)),
        lead_range=(60, 84), durs=((1, 2, 3, 4, 8), (1, 4, 2, 2, 1)), rest=0.25, legato=(0.7, 1.0),
        scales=("major", "major_pent"), harmony="major", progs=((0, 4, 5, 3), (5, 3, 0, 4), (0, 3, 4, 3)),
        bass="eighths", bass_inst=(("synth_bass", 50), ("el_bass", 50)), bass_range=(33, 50),
        chords="pad", chord_inst=(("synth_pad", 80), ("piano", 10), ("ac_guitar", 10)), sevenths=False,
        drive=(0.0, 1.0), noise=("pink", (-62, -44)), bandwidth=(5000, 11000)),
    "reggae": dict(
        tempo=(66, 96), swing=(0.03, 0.10), jitter=0.006, drum_prob=0.9,
        kick="0000000090000000", snare="0000000090000000", hat="9090909090909090", hats=("closed",),
        snare_kind="rim", lead=(("organ", 75), ("brass", 18), ("el_guitar", 7)),
        lead_range=(55, 79), durs=((1, 2, 3, 4, 6), (1, 3, 2, 2, 1)), rest=0.4, legato=(0.5, 0.9),
        scales=("major", "minor", "minor_pent"), harmony="major", progs=((0, 3), (0, 4, 3, 0), (0, 5, 3, 4)),
        bass="reggae", bass_inst=(("el_bass", 90), ("sub_bass", 10)), bass_range=(28, 45),
        chords="skank", chord_inst=(("organ", 50), ("el_guitar", 50)), sevenths=False, drive=(0.0, 0.5),
        noise=("pink", (-55, -40)), bandwidth=(3500, 10000)),
    "rock": dict(
        tempo=(100, 160), swing=(0.0, 0.03), jitter=0.006, drum_prob=0.95,
        kick="9000000090900000", snare="0000900000009000", hat="9090909090909090", hats=("closed", "ride"),
        snare_kind="snare", lead=(("el_guitar", 65), ("dist_guitar", 33), ("organ", 2)),
        lead_range=(52, 79), durs=((1, 2, 3, 4, 8), (2, 4, 1, 2, 1)), rest=0.2, legato=(0.7, 1.0),
        scales=("minor_pent", "major", "mixolydian"), harmony="mixolydian", progs=((0, 3, 4, 3), (0, 6, 3, 0)),
        bass="eighths", bass_inst=(("el_bass", 95), ("dist_bass", 5)), bass_range=(28, 48),
        chords="power", chord_inst=(("dist_guitar", 85), ("el_guitar", 15)), sevenths=False, drive=(1.0, 3.0),
        noise=("pink", (-55, -38)), bandwidth=(4000, 11000)),
}
_TABLE = 4096  # wavetable length (power of two: the phase wraps with a bit mask)
_SYNTH_VERSION = 5  # bump when the generator changes: stamped folders from older versions are regenerated
_STAMP = "synthetic.json"
# Just-intonation frequency ratios of chord qualities (semitones above the root -> ratios): a chord is then
# one periodic waveform at root/ratios[0], rendered as a single voice.
_CHORD_RATIOS = {
    (7,): (2, 3), (4, 7): (4, 5, 6), (3, 7): (10, 12, 15), (3, 6): (5, 6, 7), (4, 8): (16, 20, 25),
    (4, 7, 11): (8, 10, 12, 15), (4, 7, 10): (4, 5, 6, 7), (3, 7, 10): (10, 12, 15, 18), (3, 6, 10): (5, 6, 7, 9),
    (3, 7, 11): (40, 48, 60, 75), (4, 8, 11): (16, 20, 25, 30),
}


def _midi_hz(m):
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


def _choice(rng, weighted):
    names, weights = zip(*weighted)
    w = np.asarray(weights, dtype=np.float64)
    return names[rng.choice(len(names), p=w / w.sum())]


_ARANGE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _aranges(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(int32, float32) 0..n-1, cached: every voice of every clip needs them."""
    if n not in _ARANGE:
        if len(_ARANGE) > 4:
            _ARANGE.clear()
        a = np.arange(n, dtype=np.int32)
        _ARANGE[n] = (a, a.astype(np.float32))
    return _ARANGE[n]


_NOISE_BANK: dict[tuple[str, int], np.ndarray] = {}


def _noise_bank(colour: str, sr: int) -> np.ndarray:
    """2**19 samples of unit-variance coloured noise, made once per process from a fixed seed; clips take it from
    a random offset (deterministic, and much cheaper than filtering fresh noise for every clip)."""
    import scipy.signal

    key = (colour, sr)
    if key not in _NOISE_BANK:
        r = np.random.default_rng(12345)
        x = r.standard_normal(1 << 19)
        if colour == "pink":  # Paul Kellet's economy pink filter
            x = scipy.signal.lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786],
                                     [1, -2.494956002, 2.017265875, -0.522189400], x)
        elif colour == "vinyl":  # low rumble plus sparse crackle
            x = scipy.signal.lfilter([1.0], [1.0, -0.995], x) * 0.05
            pos = r.integers(0, x.size, int(x.size / sr * 15))
            x[pos] += r.standard_normal(pos.size) * 8
        x = (x - x.mean()) / x.std()
        _NOISE_BANK[key] = x.astype(np.float32)
    return _NOISE_BANK[key]


def _timbre(inst: dict, rng) -> tuple[float, float, float, float]:
    """The clip's variant of an instrument: (slope, even weight, formant harmonic, formant gain)."""
    fk, fg = inst["formant"]
    return (inst["slope"] * rng.uniform(0.92, 1.08), inst["even"], fk * rng.uniform(0.9, 1.1),
            fg * rng.uniform(0.8, 1.2))


def _wavetable(timbre, max_hz: float, sr: int, ratios=(1,)) -> np.ndarray:
    """One period of the sum of harmonic tones at frequency ratios ``ratios`` (a single note: ``(1,)``),
    band-limited so nothing passes 0.45 * sr at ``max_hz`` (the highest fundamental of the table's lowest
    ratio); peak-normalised float32."""
    slope, even, fk, fg = timbre
    spec = np.zeros(_TABLE // 2 + 1, dtype=np.complex128)
    for r in ratios:
        k_max = int(max(1, min(60, 0.45 * sr / (max_hz * r / ratios[0]), (_TABLE // 2) // r)))
        k = np.arange(1, k_max + 1, dtype=np.float64)
        amps = k ** -slope
        amps[1::2] *= even
        if fg:
            amps *= 1.0 + fg * np.exp(-0.5 * ((k - fk) / 1.5) ** 2)
        spec[r * np.arange(1, k_max + 1)] += -1j * amps
    table = np.fft.irfft(spec, n=_TABLE)
    return (table / np.max(np.abs(table))).astype(np.float32)


def _render(n: int, sr: int, onsets, ends, hz, vels, tables: np.ndarray, which, inst: dict, rng,
            drive: float) -> np.ndarray:
    """A monophonic voice: notes (onset sample, end sample, fundamental Hz, velocity, row of ``tables``).

    Vectorised over the whole clip: each sample knows its segment (a note, or the rest after a note's release),
    its time since the segment start, and so its wavetable phase (restarting at 0 on each onset: no click) and
    envelope (a lookup curve), with a linear release ramp at the segment end.
    """
    out = np.zeros(n, dtype=np.float32)
    onsets = np.asarray(onsets, dtype=np.int64)
    # Keep notes that start inside the clip, in time order, one per onset sample.
    keep = np.flatnonzero((onsets >= 0) & (onsets < n))
    onsets, first = np.unique(onsets[keep], return_index=True)
    if onsets.size == 0:
        return out
    sel = keep[first]
    ends = np.asarray(ends, dtype=np.int64)[sel]
    freqs = np.asarray(hz, dtype=np.float32)[sel]
    vels = np.asarray(vels, dtype=np.float32)[sel]
    rows = np.asarray(which, dtype=np.int32)[sel] * _TABLE
    att, dec, sus, rel = inst["env"]
    R = max(1, int(rel * sr))
    nxt = np.r_[onsets[1:], n]
    stop = np.minimum(np.maximum(ends, onsets + 1) + R, nxt)  # end of the note's release (or the next onset)
    # Interleave note segments and the rests after them; zero-length rests are harmless (repeat count 0).
    starts = np.stack([onsets, stop], 1).reshape(-1)
    seg = np.diff(np.r_[starts, n])
    f = np.repeat(freqs, 2)
    v = np.stack([vels, np.zeros_like(vels)], 1).reshape(-1)
    rows = np.repeat(rows, 2)
    if onsets[0] > 0:
        starts, seg = np.r_[0, starts], np.r_[onsets[0], seg]
        f, v, rows = np.r_[freqs[0], f], np.r_[np.float32(0), v], np.r_[rows[0], rows]
    ai, af = _aranges(n)
    tin_i = ai - np.repeat(starts.astype(np.int32), seg)
    tin = tin_i.astype(np.float32)  # float32 throughout: int32 * float32 would promote to float64
    inc = np.repeat(f * np.float32(_TABLE / sr), seg)  # table steps per sample
    ph = inc * tin
    if inst["vib"]:  # phase of f*(1 + vib*sin(w t)) integrated: -f*vib/w*cos(w t), cos from a small table
        fv = rng.uniform(4.5, 6.5)
        lfo = (np.cos(np.arange(1024) * (2 * np.pi / 1024)) * (inst["vib"] * sr / (2 * np.pi * fv))).astype(np.float32)
        ph -= inc * np.take(lfo, (af * np.float32(fv * 1024 / sr)).astype(np.int32) & 1023)
    idx = ph.astype(np.int32) & (_TABLE - 1)
    if tables.shape[0] > 1:
        idx += np.repeat(rows, seg)
    wave = np.take(tables.reshape(-1), idx)
    tc = np.arange(int(seg.max()) + 1, dtype=np.float32) / sr
    curve = (np.minimum(tc / att, 1.0) * (sus + (1.0 - sus) * np.exp(-tc / dec))).astype(np.float32)
    ramp = np.minimum((np.repeat(seg.astype(np.float32), seg) - tin) * np.float32(1.0 / R), np.float32(1.0))
    out = wave * np.take(curve, tin_i) * ramp * np.repeat(v, seg)
    if inst["dist"] and drive > 0:
        out = np.tanh(drive * out) / np.float32(np.tanh(drive))
    return out.astype(np.float32, copy=False)


def _drum_hits(kinds: set, sr: int, rng) -> dict[str, np.ndarray]:
    """One sample per drum for this clip (pitches and decays vary from clip to clip)."""
    hits = {}

    def t_(sec):
        return np.arange(int(sec * sr), dtype=np.float32) / sr

    def hp_noise(m):  # brightened noise for snares and cymbals
        return np.diff(rng.standard_normal(m + 1).astype(np.float32))
    if "kick" in kinds:
        t = t_(0.35)
        f1, f0 = rng.uniform(40, 60), rng.uniform(90, 150)
        ph = np.cumsum(f1 + (f0 - f1) * np.exp(-t / 0.04)) / sr
        hits["kick"] = (np.sin(2 * np.pi * ph) * np.exp(-t / rng.uniform(0.12, 0.3))
                        + 0.3 * rng.standard_normal(t.size) * np.exp(-t / 0.003))
    if "snare" in kinds:
        t = t_(0.25)
        hits["snare"] = (0.8 * hp_noise(t.size) * np.exp(-t / rng.uniform(0.06, 0.15))
                         + 0.5 * np.sin(2 * np.pi * rng.uniform(170, 230) * t) * np.exp(-t / 0.05))
    if "rim" in kinds:
        t = t_(0.06)
        hits["rim"] = (np.sin(2 * np.pi * rng.uniform(800, 1300) * t) * np.exp(-t / 0.012)
                       + 0.3 * rng.standard_normal(t.size) * np.exp(-t / 0.004))
    if "closed" in kinds:
        t = t_(0.08)
        hits["closed"] = 0.4 * hp_noise(t.size) * np.exp(-t / rng.uniform(0.015, 0.03))
    if "open" in kinds:
        t = t_(0.35)
        hits["open"] = 0.35 * hp_noise(t.size) * np.exp(-t / rng.uniform(0.12, 0.25))
    if "ride" in kinds:
        t = t_(1.0)
        partials = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(3000, 6500, 5))
        hits["ride"] = (0.12 * hp_noise(t.size) + 0.05 * partials) * np.exp(-t / rng.uniform(0.4, 0.8))
    if "crash" in kinds:
        t = t_(1.2)
        hits["crash"] = 0.4 * hp_noise(t.size) * np.exp(-t / rng.uniform(0.5, 0.9))
    return {k: v.astype(np.float32) for k, v in hits.items()}


def _place(out: np.ndarray, hit: np.ndarray, starts, vels) -> None:
    n = out.size
    for s, v in zip(starts.tolist(), vels.tolist()):
        if 0 <= s < n:
            m = min(hit.size, n - s)
            out[s:s + m] += v * hit[:m]


@dataclass
class _Clip:
    """What the parts of one clip share: the genre, the 16th-note grid, the harmony, the rng and the mix.

    The parts draw from ``rng`` in the order :func:`_synth_clip` calls them; changing that order (or any draw)
    changes every clip, so bump :data:`_SYNTH_VERSION` (tests/test_datasets_synthetic.py pins the output).
    """

    g: dict
    n: int  # samples
    sr: int
    rng: np.random.Generator
    n_steps: int
    step_at: np.ndarray  # sample index of every 16th-note step
    steps: np.ndarray  # the steps a note may start on
    key: int
    harm: np.ndarray  # the harmony's scale: semitones of its 7 degrees
    root_at: np.ndarray  # chord root degree at each step
    drive: float
    pos: np.ndarray = field(init=False)  # each step's position in its bar (0-15)
    mix: np.ndarray = field(init=False)

    def __post_init__(self):
        self.pos = self.steps % 16
        self.mix = np.zeros(self.n, dtype=np.float32)

    def degree_midi(self, deg, base):
        deg = np.asarray(deg)
        return base + self.key + self.harm[deg % 7] + 12 * (deg // 7)

    def add(self, stem, level_db):
        peak = float(np.max(np.abs(stem)))
        if peak > 0:
            self.mix[:] += stem * np.float32(10 ** (level_db / 20) / peak)

    def voice(self, on, end, hz, tables, which, inst, min_velocity, levels_db):
        """Render notes (velocities drawn in [min_velocity, 1)) and mix them in at a level drawn from levels_db."""
        stem = _render(self.n, self.sr, on, end, hz, self.rng.uniform(min_velocity, 1.0, len(on)), tables, which,
                       inst, self.rng, self.drive)
        self.add(stem, self.rng.uniform(*levels_db))


def _fit_range(m, lo, hi):
    """MIDI pitches moved by octaves into [lo, hi]."""
    m = np.asarray(m)
    return m - 12 * np.maximum(0, np.ceil((m - hi) / 12)) + 12 * np.maximum(0, np.ceil((lo - m) / 12))


def _grid(g: dict, seconds: float, sr: int, rng) -> tuple[float, int, np.ndarray]:
    """(tempo, number of steps, sample index of each step) of a 16th-note grid starting at a random phase; off-beat
    8ths (and off 16ths, half as much) pushed late by the swing; timing jitter (rubato for classical)."""
    tempo = rng.uniform(*g["tempo"])
    beat = 60.0 / tempo
    n_steps = int(np.ceil(seconds / (beat / 4))) + 17
    k = np.arange(n_steps + 1)
    swing = rng.uniform(*g["swing"])
    times = k * beat / 4 + swing * beat * ((k % 4 == 2) + 0.5 * (k % 2 == 1)) - rng.uniform(0, beat)
    times = times + rng.normal(0, g["jitter"], times.size)
    return tempo, n_steps, np.round(times * sr).astype(np.int64)


def _harmony(g: dict, tempo: float, steps: np.ndarray, rng) -> tuple[int, np.ndarray, np.ndarray]:
    """(key, harmony scale, chord root degree at each step): a progression of scale-degree roots, one chord per bar
    (per two bars when slow)."""
    key = int(rng.integers(0, 12))
    harm = np.asarray(_SCALES[g["harmony"]])
    prog = np.asarray(g["progs"][rng.integers(len(g["progs"]))])
    bars_per_chord = 2 if tempo < 80 else 1
    return key, harm, prog[(steps // (16 * bars_per_chord)) % len(prog)]


def _lead(c: _Clip) -> None:
    """Lead melody: a random walk on the scale with leaps and rests (random draws made up front, in bulk)."""
    g, rng = c.g, c.rng
    inst = _INSTRUMENTS[_choice(rng, g["lead"])]
    scale = np.asarray(_SCALES[g["scales"][rng.integers(len(g["scales"]))]])
    lo, hi = g["lead_range"]
    durs, dur_w = np.asarray(g["durs"][0]), np.asarray(g["durs"][1], dtype=np.float64)
    legato = rng.uniform(*g["legato"])
    m_max = c.n_steps  # upper bound on the number of notes
    d_draw = rng.choice(durs, m_max, p=dur_w / dur_w.sum())
    moves = rng.choice([-2, -1, 0, 1, 2, -4, 4], m_max, p=[.15, .28, .1, .28, .15, .02, .02])
    rests = rng.random(m_max) < g["rest"]
    restart = rng.integers(0, 2 * len(scale), m_max)
    on_steps, degs = [], []
    deg, s, j = int(rng.integers(0, 2 * len(scale))), 0, 0
    base = 12 * ((lo + 5) // 12) + c.key
    ns = len(scale)
    while s < c.n_steps - 16:
        if not rests[j]:
            deg += int(moves[j])
            m = base + scale[deg % ns] + 12 * (deg // ns)
            if m < lo or m > hi:  # jump back into range
                deg = int(restart[j])
            on_steps.append((s, int(d_draw[j])))
            degs.append(deg)
        s += int(d_draw[j])
        j += 1
    if on_steps:
        st = np.array(on_steps)
        degs = np.array(degs)
        pitch = base + scale[degs % ns] + 12 * (degs // ns)
        on = c.step_at[st[:, 0]]
        end = on + (legato * (c.step_at[st[:, 0] + st[:, 1]] - on)).astype(np.int64)
        tables = _wavetable(_timbre(inst, rng), float(_midi_hz(pitch.max())), c.sr)[None]
        c.voice(on, end, _midi_hz(pitch), tables, np.zeros(len(on), np.int32), inst, 0.6, (-4, 0))


def _bass(c: _Clip) -> None:
    """Bass figure on the chord roots."""
    g, rng, steps, pos = c.g, c.rng, c.steps, c.pos
    inst = _INSTRUMENTS[_choice(rng, g["bass_inst"])]
    blo, bhi = g["bass_range"]
    bbase = 12 * ((blo + 4) // 12)
    fig = g["bass"]
    offset = np.zeros(steps.size, dtype=np.int64)
    octave = np.zeros(steps.size, dtype=np.int64)
    if fig == "walk":
        play, d = pos % 4 == 0, 4
        offset = np.where(pos == 0, 0, rng.integers(-2, 5, steps.size))
    elif fig == "root_fifth":
        play, d = pos % 4 == 0, 3
        offset = np.where(pos % 8 == 4, 4, 0)
    elif fig == "octave8":
        play, d = pos % 2 == 0, 2
        octave = np.where(pos % 4 == 2, 12, 0)
    elif fig == "eighths":
        play, d = pos % 2 == 0, 2
    elif fig == "long":
        play, d = pos == 0, 16
    else:  # reggae: syncopated one-drop figure
        play, d = np.isin(pos, (0, 3, 6, 10, 11)), 2
        offset = np.where(pos == 6, 4, 0)
    bs = steps[play]
    if bs.size:  # (a clip of a second or two may hold no bar start)
        pitch = _fit_range(c.degree_midi(c.root_at[play] + offset[play], bbase) + octave[play], blo, bhi)
        on = c.step_at[bs]
        end = on + (0.9 * (c.step_at[bs + d] - on)).astype(np.int64)
        tables = _wavetable(_timbre(inst, rng), float(_midi_hz(pitch.max())), c.sr)[None]
        c.voice(on, end, _midi_hz(pitch), tables, np.zeros(len(on), np.int32), inst, 0.7, (-8, -3))


def _chords(c: _Clip) -> None:
    """Chords: one voice playing just-intonation chord waveforms, one table per chord quality."""
    g, rng, harm = c.g, c.rng, c.harm
    fig = g["chords"]
    if fig is None:
        return
    # (the whole table is built, so the skank's coin is drawn for every genre with chords)
    pattern = {"pad": [0], "strum": [0, 4, 8, 12], "stab": [2, 6, 10, 14, 3, 11],
               "skank": [4, 12] if rng.random() < 0.5 else [2, 6, 10, 14],
               "power": [0, 2, 4, 6, 8, 10, 12, 14]}.get(fig)
    if fig == "comp":
        pattern = rng.choice(16, 4, replace=False)
    chord_len = {"pad": 16, "strum": 4, "skank": 1, "stab": 1, "power": 2, "comp": 2}[fig]
    inst = _INSTRUMENTS[_choice(rng, g["chord_inst"])]
    cs = c.steps[np.isin(c.pos, pattern)]
    roots = c.root_at[np.isin(c.pos, pattern)]
    if not cs.size:
        return
    quals, which = [], []
    for r in roots.tolist():
        if fig == "power":
            q = (7,)
        else:
            q = tuple(int((harm[(r + o) % 7] + 12 * ((r + o) // 7) - harm[r % 7] - 12 * (r // 7)) % 12)
                      for o in ((2, 4, 6) if g["sevenths"] else (2, 4)))
        if q not in quals:
            quals.append(q)
        which.append(quals.index(q))
    cbase = 12 * ((g["lead_range"][0] - 3) // 12)  # an octave or so under the lead
    root_hz = _midi_hz(c.degree_midi(roots, cbase))
    ratios = [_CHORD_RATIOS[q] for q in quals]
    hz = root_hz / np.array([ratios[w][0] for w in which])
    timbre = _timbre(inst, rng)
    tables = np.stack([_wavetable(timbre, float(root_hz.max()), c.sr, r) for r in ratios])
    on = c.step_at[cs]
    end = on + (0.9 * (c.step_at[cs + chord_len] - on)).astype(np.int64)
    c.voice(on, end, hz, tables, which, inst, 0.6, (-12, -6))


def _drums(c: _Clip) -> None:
    """Drums: kick, snare (or rim) and one hat/cymbal kind, each hit drawn with its pattern's probability."""
    g, rng, n_steps = c.g, c.rng, c.n_steps
    if g["kick"] is None or not rng.random() < g["drum_prob"]:
        return
    hat_kind = g["hats"][rng.integers(len(g["hats"]))]
    hits = _drum_hits({"kick", g["snare_kind"], hat_kind}, c.sr, rng)
    drums = np.zeros(c.n, dtype=np.float32)
    for name, pat, gain in (("kick", g["kick"], 1.0), (g["snare_kind"], g["snare"], 0.8),
                            (hat_kind, g["hat"], 0.5)):
        prob = np.array([int(d) for d in pat], dtype=np.float64) / 9.0
        idx = np.flatnonzero(rng.random(n_steps) < np.tile(prob, n_steps // 16 + 1)[:n_steps])
        _place(drums, hits[name], c.step_at[idx], gain * rng.uniform(0.6, 1.0, idx.size))
    c.add(drums, rng.uniform(-8, -2))


def _record(c: _Clip) -> np.ndarray:
    """Background noise, then a random "recording": low-pass bandwidth, high-band tilt and overall gain."""
    import scipy.signal

    g, rng, sr, mix = c.g, c.rng, c.sr, c.mix
    colour, (nlo, nhi) = g["noise"]
    bank = _noise_bank(colour, sr)
    start = int(rng.integers(0, bank.size))
    noise = np.resize(np.roll(bank, -start), c.n)
    rms_mix = float(np.sqrt(np.mean(mix ** 2))) or 1.0
    mix += noise * np.float32(rms_mix * 10 ** (rng.uniform(nlo, nhi) / 20))
    cutoff = np.exp(rng.uniform(*np.log(g["bandwidth"])))
    a = float(np.exp(-2 * np.pi * cutoff / sr))
    low = scipy.signal.lfilter(np.array([1 - a], np.float32), np.array([1, -a], np.float32), mix)
    mix = low + np.float32(10 ** (rng.uniform(-4, 2) / 20)) * (mix - low)
    mix *= np.float32(rng.uniform(0.3, 0.95) / (float(np.max(np.abs(mix))) or 1.0))
    return mix.astype(np.float32, copy=False)


def _synth_clip(genre: str, seconds: float, sr: int, rng) -> np.ndarray:
    """One clip of ``genre`` (a name of :data:`_GENRES`, or such a dict: the tagged set's variants) as float32 in
    [-1, 1] (deterministic given ``rng``)."""
    g = _GENRES[genre] if isinstance(genre, str) else genre
    tempo, n_steps, step_at = _grid(g, seconds, sr, rng)
    steps = np.arange(n_steps - 16)
    key, harm, root_at = _harmony(g, tempo, steps, rng)
    c = _Clip(g, int(round(seconds * sr)), sr, rng, n_steps, step_at, steps, key, harm, root_at,
              drive=rng.uniform(*g["drive"]))
    _lead(c)
    _bass(c)
    _chords(c)
    _drums(c)
    return _record(c)


def _synth_file(path: str, genre: str, seed: int, c: int, i: int, seconds: float, sr: int) -> None:
    y = _synth_clip(genre, seconds, sr, np.random.default_rng([seed, c, i]))
    pcm = np.round(np.clip(y, -1, 1) * 32767).astype(np.int16)
    tmp = f"{path}.{os.getpid()}.tmp"
    sf.write(tmp, pcm, sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)  # a clip is either complete or absent


def _synth_files(jobs, desc: str, n_jobs: int, verbose) -> None:
    """:func:`_synth_file` of every job, with a progress bar; ``n_jobs`` threads (1: a plain loop)."""
    from tqdm.auto import tqdm

    if n_jobs == 1:
        for job in tqdm(jobs, desc=desc, unit="clip", disable=not verbose):
            _synth_file(*job)
        return
    from joblib import Parallel, delayed

    # Threads: the synthesis is numpy work on whole clips (the GIL is released), and worker processes would each
    # pay for importing the package (and torch) again.
    par = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")
    for _ in tqdm(par(delayed(_synth_file)(*j) for j in jobs), total=len(jobs), desc=desc, unit="clip",
                  disable=not verbose):
        pass


def make_synthetic_genres(root, n_per_class: int = 10, seconds: float = 30.0, seed: int = 0, sr: int = SR, *,
                          n_jobs: int = 1, verbose: int = 0) -> AudioDataset:
    """Generate (or reuse) ten classes of synthetic music in the GTZAN layout and load them.

    Files: ``root/genres/<genre>/<genre>.000NN.wav`` (16-bit mono at ``sr``), class names = :data:`GTZAN_GENRES`,
    so :func:`load_gtzan` reads them like the real set. Each genre has its own timbres, pitch ranges, rhythm
    patterns and tempo range, with overlap between neighbouring genres and per-clip random arrangement, gains,
    noise and EQ. Clip ``i`` of class ``c`` depends only on ``(seed, c, i, seconds, sr)``: same seed, same bytes.
    A stamp ``root/genres/synthetic.json`` records the parameters; asking again for the same ones reuses the files.
    Refuses (ValueError) to write into a ``genres`` folder with audio that it did not generate.
    """
    fn = "make_synthetic_genres"
    if not (isinstance(n_per_class, (int, np.integer)) and 1 <= n_per_class <= 99999):
        raise ValueError(f"{fn}: n_per_class must be an integer in [1, 99999], got {n_per_class!r}")
    if not (isinstance(seconds, (int, float)) and 1.0 <= seconds <= 600):
        raise ValueError(f"{fn}: seconds must be in [1, 600], got {seconds!r}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"{fn}: seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(sr, (int, np.integer)) and 8000 <= sr <= 192000):
        raise ValueError(f"{fn}: sr must be an integer sample rate in [8000, 192000], got {sr!r}")
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise ValueError(f"{fn}: n_jobs must be a nonzero integer, got {n_jobs!r}")
    root = Path(root)
    gdir = root / "genres"
    stamp_path = gdir / _STAMP
    want = {"generator": "pymusicrbm.datasets.make_synthetic_genres", "version": _SYNTH_VERSION,
            "n_per_class": int(n_per_class), "seconds": float(seconds), "seed": int(seed), "sr": int(sr)}
    files = [(gdir / genre / f"{genre}.{i:05d}.wav", genre, c, i)
             for c, genre in enumerate(GTZAN_GENRES) for i in range(n_per_class)]
    stamp = None
    if stamp_path.is_file():
        try:
            stamp = json.loads(stamp_path.read_text())
        except (OSError, ValueError):
            stamp = {}
    elif gdir.is_dir() and _audio_files(gdir, recursive=True):
        raise ValueError(f"{fn}: {str(gdir)!r} already holds audio that make_synthetic_genres did not write "
                         f"(no {_STAMP}); choose another root")
    n_bytes = 44 + 2 * int(round(seconds * sr))  # canonical 16-bit mono WAV
    same = stamp is not None and {k: stamp.get(k) for k in want} == want
    # Clips are written atomically and depend only on (seed, class, index, seconds, sr): with the same parameters
    # every complete file is kept, so an interrupted generation resumes where it stopped.
    todo = [f for f in files if not (same and f[0].is_file() and f[0].stat().st_size == n_bytes)]
    if todo or not (same and stamp.get("complete")):
        try:
            gdir.mkdir(parents=True, exist_ok=True)
            if stamp is not None and not same:  # ours, from other parameters: clear the old clips
                for genre in GTZAN_GENRES:
                    for p in (gdir / genre).glob(f"{genre}.*.wav") if (gdir / genre).is_dir() else ():
                        p.unlink()
            for genre in GTZAN_GENRES:
                (gdir / genre).mkdir(exist_ok=True)
                for p in (gdir / genre).glob("*.tmp"):  # left by an interrupted run
                    p.unlink()
            stamp_path.write_text(json.dumps({**want, "complete": False}, indent=1))
        except OSError as err:
            raise ValueError(f"{fn}: cannot write under {str(root)!r}: {err}") from None
        jobs = [(str(p), genre, int(seed), c, i, float(seconds), int(sr)) for p, genre, c, i in todo]
        _synth_files(jobs, "synthetic genres", n_jobs, verbose)
        tmp = stamp_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**want, "complete": True}, indent=1))
        os.replace(tmp, stamp_path)
    return load_gtzan(gdir, check=False)
