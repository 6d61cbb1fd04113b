"""Synthetic ECG datasets with the on-disk layout of PhysioNet's PTB-XL and MIMIC-IV-ECG.

The twins let the demo, the tests and users exercise the whole pipeline (raw WFDB files ->
dataset builders -> training) without the credentialed or multi-gigabyte downloads.

Signals come from a dipole model: the heart is a 3-D current vector whose trajectory is a sum
of Gaussian waves (P, septal q, R, S, ST, T, ...); each lead is the projection of that vector
on the lead's direction. Classes change the trajectory the way the pathology changes the
activation sequence (pathological Q, ST elevation, T inversion, wide notched QRS, axis shift,
tall R with strain, PR prolongation, AV dissociation, ...), so the differences are shapes,
timings and cross-lead patterns that survive per-lead standardisation, not just amplitudes.

CLI::

    python -m cardioformer_jax.synthetic --out DIR --patients N --seed S [--layout ptbxl]
"""

import argparse
import datetime
import os
import pathlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import signal as sps

__all__ = [
    "MIMIC_LEADS",
    "PTBXL_LEADS",
    "RHYTHMS",
    "SUPERCLASS_CODES",
    "main",
    "plan_mimic",
    "plan_ptbxl",
    "synthesize_ecg",
    "write_mimic_twin",
    "write_ptbxl_twin",
]

# Marks a twin's root; the builders record it (tfds_builders.common.SYNTHETIC_MARKER).
SYNTHETIC_MARKER = "SYNTHETIC_TWIN.txt"
PTBXL_LEADS = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
# MIMIC-IV-ECG headers really use this spelling and order (aVF before aVL), unlike PTB-XL;
# a builder that selects leads by PTB-XL names would fail on the real download too.
MIMIC_LEADS = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")

# docs/data.md (PTB-XL): the diagnostic codes of each superclass; any other top code is "other".
SUPERCLASS_CODES: dict[str, tuple[str, ...]] = {
    "NORM": ("NORM",),
    "MI": ("IMI", "ASMI", "ILMI", "AMI", "ALMI", "INJAS", "LMI", "INJAL", "IPLMI", "IPMI",
           "INJIN", "INJLA", "PMI", "INJIL"),
    "STTC": ("NDT", "NST_", "DIG", "ISC_", "ISCAL", "LNGQT", "ISCIN", "ISCIL", "ISCAS",
             "ISCLA", "ANEUR", "EL", "ISCAN"),
    "CD": ("LAFB", "IRBBB", "1AVB", "IVCD", "CRBBB", "CLBBB", "LPFB", "WPW", "ILBBB", "3AVB",
           "2AVB"),
    "HYP": ("LVH", "LAO/LAE", "RVH", "RAO/RAE", "SEHYP"),
}
_CODE_TO_SUPERCLASS = {c: s for s, codes in SUPERCLASS_CODES.items() for c in codes}

# Subtype mix inside each superclass, roughly PTB-XL's relative frequencies.
_SUBTYPES: dict[str, dict[str, float]] = {
    "NORM": {"NORM": 1.0},
    "MI": {"IMI": 0.34, "ASMI": 0.30, "ILMI": 0.07, "AMI": 0.08, "ALMI": 0.07, "LMI": 0.03,
           "IPLMI": 0.03, "IPMI": 0.01, "PMI": 0.01, "INJAS": 0.03, "INJAL": 0.01,
           "INJIN": 0.01, "INJLA": 0.005, "INJIL": 0.005},
    "STTC": {"NDT": 0.38, "NST_": 0.10, "ISC_": 0.13, "ISCAL": 0.08, "ISCIN": 0.05,
             "ISCIL": 0.04, "ISCAS": 0.04, "ISCLA": 0.03, "ISCAN": 0.03, "LNGQT": 0.06,
             "DIG": 0.03, "EL": 0.02, "ANEUR": 0.01},
    "CD": {"CLBBB": 0.13, "ILBBB": 0.02, "CRBBB": 0.18, "IRBBB": 0.13, "LAFB": 0.19,
           "LPFB": 0.02, "1AVB": 0.15, "IVCD": 0.12, "WPW": 0.03, "2AVB": 0.02, "3AVB": 0.01},
    "HYP": {"LVH": 0.72, "LAO/LAE": 0.12, "RVH": 0.06, "RAO/RAE": 0.04, "SEHYP": 0.06},
}
# Patient class mix: NORM dominates as in PTB-XL, but every class keeps enough patients.
_CLASS_PROBS = {"NORM": 0.38, "MI": 0.18, "STTC": 0.17, "CD": 0.15, "HYP": 0.12}
# Mean heart rate per class (bpm); the rhythm code follows the simulated rate.
_CLASS_HR = {"NORM": 70.0, "MI": 72.0, "STTC": 78.0, "CD": 70.0, "HYP": 74.0}
# Rhythms the generator can simulate (PVC_BIGEMINY: every other beat a PVC).
RHYTHMS = ("SR", "SBRAD", "STACH", "SARRH", "AFIB", "AFLT", "PACE", "2AVB", "3AVB",
           "PVC_BIGEMINY")
# Codes whose top position makes a record "other" (docs/data.md, PTB-XL).
_OTHER_KINDS = ("AFLT", "AFLT_TIE", "PACE", "PVC")


# --------------------------------------------------------------------------------------
# Geometry: x = patient's left, y = inferior (feet), z = anterior (chest).
# --------------------------------------------------------------------------------------
def _unit(*v: float) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


def _lead_basis() -> np.ndarray:
    """(3, 8) directions of the independent leads I, II, V1..V6."""
    lead_i = [1.0, 0.0, 0.0]
    lead_ii = [np.cos(np.pi / 3), np.sin(np.pi / 3), 0.0]
    # Horizontal-plane angles from the left axis towards the chest (V1 right of sternum).
    angles = np.deg2rad([118.0, 95.0, 75.0, 58.0, 35.0, 10.0])
    # Chest electrodes sit closer to the heart, hence larger gain; slight downward tilt.
    chest = 1.5 * np.stack([np.cos(angles), np.full(6, 0.12), np.sin(angles)], axis=0)
    return np.concatenate([np.array([lead_i, lead_ii]).T, chest], axis=1)


_BASIS = _lead_basis()


def _to_12_leads(x8: np.ndarray) -> np.ndarray:
    """I, II, V1..V6 -> the 12 standard leads (Einthoven/Goldberger relations hold exactly)."""
    i, ii = x8[:, 0], x8[:, 1]
    limb = np.stack([i, ii, ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2], axis=1)
    return np.concatenate([limb, x8[:, 2:]], axis=1)


def _rotation(rng: np.random.Generator, frontal_deg: float, horizontal_deg: float) -> np.ndarray:
    """Random anatomical heart orientation (electrical axis varies between people)."""
    a, b, c = np.deg2rad(
        [rng.normal(0, frontal_deg), rng.normal(0, horizontal_deg), rng.normal(0, 8.0)])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, -np.sin(b)], [0, 1, 0], [np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


# --------------------------------------------------------------------------------------
# Beat morphology.
# --------------------------------------------------------------------------------------
@dataclass
class _Wave:
    vec: np.ndarray  # direction * amplitude (mV)
    center: float  # s, relative to the template's reference time
    sigma_l: float  # s, width before the peak
    sigma_r: float | None = None  # s, width after the peak (asymmetric T), default sigma_l
    power: float = 2.0  # 2 = Gaussian; 4 = flat-topped (ST plateau)


@dataclass
class _Morphology:
    """One record's beat: atrial waves (time 0 = P onset), ventricular waves (time 0 = R)."""

    p_waves: list[_Wave]
    qrst: list[_Wave]
    pr: float  # P onset to QRS onset, s
    qrs_onset: float  # relative to R, s (negative)
    qrs_dur: float
    qt: float
    ectopic: list[_Wave] = field(default_factory=list)  # PVC template (time 0 = its peak)


def _template(waves: Sequence[_Wave], t: np.ndarray) -> np.ndarray:
    """(len(t), 3) heart-vector trajectory of a sum of (possibly asymmetric) Gaussians."""
    if not waves:
        return np.zeros((t.size, 3))
    mu = np.array([w.center for w in waves])[:, None]
    sl = np.array([w.sigma_l for w in waves])[:, None]
    sr = np.array([w.sigma_l if w.sigma_r is None else w.sigma_r for w in waves])[:, None]
    pw = np.array([w.power for w in waves])[:, None]
    d = t[None, :] - mu
    shape = np.exp(-0.5 * np.abs(d / np.where(d < 0, sl, sr)) ** pw)
    return shape.T @ np.stack([w.vec for w in waves])


def _pick(rng: np.random.Generator, probs: dict[str, float]) -> str:
    keys = list(probs)
    p = np.array([probs[k] for k in keys])
    return keys[rng.choice(len(keys), p=p / p.sum())]


def _morphology(code: str, rr: float, rng: np.random.Generator) -> _Morphology:
    """Beat waves for one record of SCP code `code` at mean RR interval `rr` (s)."""
    u = rng.uniform
    s = u(0.9, 1.12)  # QRS time scale (normal QRS 80-100 ms)
    r_amp, s_amp, q_amp = u(0.9, 1.7), u(0.2, 0.5), u(0.08, 0.22)
    t_amp, p_amp = u(0.22, 0.45), u(0.08, 0.15)
    pr = u(0.12, 0.20)
    qtc = u(0.38, 0.44)
    # Vectors of the normal activation sequence (mean QRS axis ~ +50 deg, transition V3/V4).
    p_ra = _Wave(_unit(0.2, 0.9, 0.35) * p_amp, 0.032, 0.017)
    p_la = _Wave(_unit(0.8, 0.35, -0.45) * p_amp * 0.9, 0.062, 0.019)
    q = _Wave(_unit(-0.55, 0.1, 0.8) * q_amp, -0.022 * s, 0.007 * s)
    r = _Wave(_unit(0.55, 0.62, -0.3) * r_amp, 0.0, 0.0105 * s)
    sw = _Wave(_unit(-0.35, -0.45, -0.7) * s_amp, 0.027 * s, 0.009 * s)
    t_dir = _unit(0.6, 0.55, 0.4)
    qrs_onset, qrs_dur = -0.04 * s, 0.09 * s
    extra: list[_Wave] = []
    st_vec = np.zeros(3)  # ST deviation (injury current) during the plateau phase
    t_sym = False  # ischaemic T inversion is symmetric, normal T is asymmetric

    if code in SUPERCLASS_CODES["MI"]:
        acute = code.startswith("INJ") or rng.random() < 0.2
        inferior = code in ("IMI", "ILMI", "IPLMI", "IPMI", "INJIN", "INJIL")
        lateral = code in ("ILMI", "ALMI", "LMI", "IPLMI", "INJAL", "INJLA", "INJIL")
        posterior = code in ("PMI", "IPMI", "IPLMI")
        # Necrosis removes forces towards the infarcted wall: the initial vector points away
        # from it (wide pathological Q) and the R loses its component towards it.
        away = np.zeros(3)
        if inferior:
            away += _unit(0.0, -1.0, 0.1)
            r.vec[1] *= 0.35
        if code in ("ASMI", "AMI", "ALMI", "INJAS", "INJAL"):  # anterior: QS in V1-V3
            away += _unit(0.1, 0.0, -1.0)
            r.vec[2] -= 0.3 * r_amp
            q.vec *= 0.2
        if lateral:
            away += _unit(-1.0, 0.0, -0.3) * 0.6
            r.vec[0] *= 0.5
        if posterior:  # mirror image: tall R in V1-V2
            r.vec[2] += 0.6 * r_amp
            away += _unit(0.0, 0.0, 0.6)
        if not code.startswith("INJ") or rng.random() < 0.5:
            extra.append(_Wave(_unit(*away) * u(0.35, 0.8) * r_amp, -0.02 * s, 0.015 * s))
        wall = -_unit(*away)  # direction of the injured wall
        if acute:
            st_vec = wall * u(0.12, 0.3)
            t_dir = _unit(*(t_dir + 0.8 * wall))
            t_amp *= u(1.0, 1.6)
        else:  # old infarct: T inverted over the infarcted wall
            t_dir = _unit(*(t_dir - 1.4 * wall))
            t_sym = rng.random() < 0.6
    elif code in SUPERCLASS_CODES["STTC"]:
        regions = {"ISCAL": (0.6, 0.0, 0.8), "ISCAS": (-0.2, 0.0, 1.0),
                   "ISCLA": (1.0, -0.3, 0.1), "ISCIN": (0.0, 1.0, 0.0),
                   "ISCIL": (0.6, 0.8, 0.0), "ISCAN": (0.0, 0.0, 1.0)}
        if code == "NDT":  # flat or inverted T in the lateral leads
            t_dir, t_amp = _unit(-0.6, 0.45, -0.3), t_amp * u(0.35, 0.8)
        elif code == "NST_":
            st_vec = _unit(-0.5, -0.6, -0.5) * u(0.06, 0.14)
            t_amp *= u(0.4, 0.7)
        elif code == "ISC_":  # diffuse subendocardial ischaemia: ST depression + T inversion
            st_vec = _unit(-0.55, -0.55, -0.6) * u(0.1, 0.25)
            t_dir, t_sym = _unit(-0.5, -0.3, -0.5), True
        elif code in regions:  # deep symmetric T inversion over one region
            wall = _unit(*regions[code])
            st_vec = -wall * u(0.04, 0.14)
            t_dir, t_amp, t_sym = _unit(*(0.3 * t_dir - wall)), t_amp * u(1.0, 1.5), True
        elif code == "LNGQT":
            qtc = u(0.50, 0.60)
        elif code == "DIG":  # scooped ST depression, short QT, low T
            qtc, t_amp = u(0.33, 0.36), t_amp * 0.5
            st_vec = _unit(-0.5, -0.6, -0.3) * u(0.1, 0.2)
        elif code == "EL":  # hypokalaemia-like: flat T, prominent U wave
            t_amp *= 0.35
            extra.append(_Wave(t_dir * u(0.1, 0.2), np.nan, 0.04))  # U, placed below
        elif code == "ANEUR":  # persistent anterior ST elevation with QS
            extra.append(_Wave(_unit(0.1, 0.0, -1.0) * r_amp * 0.6, -0.02 * s, 0.015 * s))
            st_vec = _unit(0.2, 0.0, 1.0) * u(0.15, 0.3)
    elif code in ("CLBBB", "ILBBB"):
        # Septum activated from the left: no septal q; slow, notched, leftward-posterior QRS.
        wide = 1.0 if code == "CLBBB" else 0.65
        q = _Wave(_unit(0.7, 0.1, -0.3) * 0.15, -0.05 * wide, 0.012)
        lb = _unit(0.75, 0.25, -0.6) * r_amp * u(0.7, 1.0)
        r = _Wave(lb, -0.028 * wide, 0.022 * wide)
        sw = _Wave(lb * u(0.8, 1.1), 0.03 * wide, 0.024 * wide)
        qrs_onset, qrs_dur = -0.075 * wide, 0.15 * wide
        t_dir, t_amp = _unit(-0.6, -0.2, 0.7), u(0.25, 0.5)  # discordant repolarisation
        st_vec = t_dir * u(0.1, 0.22) * wide
    elif code in ("CRBBB", "IRBBB"):
        # Late unopposed right-ventricular activation: terminal R' in V1, slurred S in I/V6.
        complete = code == "CRBBB"
        extra.append(_Wave(_unit(-0.65, 0.15, 0.75) * u(0.5, 0.9) * (1.0 if complete else 0.5),
                           0.055 if complete else 0.038, 0.018 if complete else 0.011))
        qrs_dur = 0.14 if complete else 0.11
        sw.vec *= 0.5
        if complete:
            t_dir = _unit(0.7, 0.5, -0.35)
    elif code in ("LAFB", "LPFB"):
        if code == "LAFB":  # left axis deviation (-45..-60 deg): qR in aVL, rS in II/III/aVF
            r.vec = _unit(0.55, -0.65, -0.3) * r_amp
            q.vec = _unit(-0.1, 0.9, 0.3) * q_amp * 1.3
            sw.vec = _unit(0.1, 0.7, -0.5) * s_amp
        else:  # right axis deviation
            r.vec = _unit(-0.25, 0.95, -0.2) * r_amp
            q.vec = _unit(0.6, -0.6, 0.3) * q_amp
        r.sigma_l *= 1.15
        qrs_dur *= 1.1
    elif code == "1AVB":
        pr = u(0.23, 0.34)
    elif code == "IVCD":
        s2 = u(1.4, 1.7)
        for w in (q, r, sw):
            w.sigma_l *= s2
            w.center *= s2
        extra.append(_Wave(r.vec * 0.35, 0.03, 0.012))  # notch
        qrs_onset, qrs_dur = qrs_onset * s2, qrs_dur * s2
    elif code == "WPW":  # pre-excitation: short PR and a slurred delta wave before the R
        pr = u(0.07, 0.10)
        extra.append(_Wave(r.vec * u(0.25, 0.4), -0.055, 0.025, 0.01))
        qrs_onset, qrs_dur = -0.09, 0.13
        t_dir = _unit(*(t_dir - 0.8 * _unit(*r.vec)))
    elif code in ("2AVB", "3AVB"):
        pass  # the block is a rhythm property (see _rhythm); 3AVB escape QRS widened there
    elif code in SUPERCLASS_CODES["HYP"]:
        lae = code == "LAO/LAE"
        if code == "LVH":
            r.vec = _unit(0.75, 0.35, -0.6) * r_amp * u(1.8, 2.8)
            sw.vec = _unit(-0.2, -0.3, -0.95) * s_amp * u(1.6, 2.4)
            for w in (r, sw):
                w.sigma_l *= 1.15
            qrs_dur *= 1.1
            if rng.random() < 0.6:  # strain: lateral ST depression, asymmetric T inversion
                st_vec = _unit(-0.8, -0.2, 0.3) * u(0.08, 0.2)
                t_dir = _unit(-0.75, -0.15, 0.35)
            lae = rng.random() < 0.3  # left atrial overload often accompanies LVH
        elif code == "RVH":
            r.vec = _unit(-0.3, 0.85, 0.5) * r_amp
            sw.vec = _unit(0.6, -0.2, -0.55) * s_amp * 1.5
            t_dir = _unit(0.4, 0.6, -0.6)
        elif code == "SEHYP":
            q.vec *= u(3.0, 4.5)
            q.sigma_l *= 1.3
            r.vec *= 1.5
        if lae:  # P mitrale: broad notched P, deep terminal negativity in V1
            p_la.vec = _unit(0.6, 0.2, -0.8) * p_amp * u(1.6, 2.2)
            p_la.center, p_la.sigma_l = 0.085, 0.024
        if code == "LAO/LAE":
            r.vec *= 1.3  # usually with some left-ventricular voltage increase
        elif code == "RAO/RAE":  # P pulmonale: tall peaked P in II
            p_ra.vec *= u(2.0, 2.8)
            p_ra.sigma_l *= 0.85
    elif code not in ("NORM", "PACE", "AFLT", "PVC", "AFIB"):
        raise ValueError(f"unknown code {code!r}")

    if code == "PACE":  # RV apical pacing: spike, then wide LBBB-like QRS with superior axis
        pv = _unit(0.6, -0.7, -0.4) * r_amp
        q = _Wave(_unit(0.3, -0.8, 0.5) * u(1.5, 4.0), -0.075, 0.0011)  # pacing spike
        r = _Wave(pv, -0.025, 0.022)
        sw = _Wave(pv * 0.9, 0.03, 0.025)
        qrs_onset, qrs_dur = -0.07, 0.15
        t_dir, t_amp = _unit(-0.6, 0.7, 0.4), u(0.25, 0.45)

    qt = float(np.clip(qtc * np.sqrt(rr), 0.26, 0.62))
    t_right = 0.045 * qt / 0.4
    t_left = t_right if t_sym else 0.075 * qt / 0.4
    t_peak = qrs_onset + qt - 2.3 * t_right
    qrst = [q, r, sw, _Wave(t_dir * t_amp, t_peak, t_left, t_right)]
    if np.any(st_vec):
        j = qrs_onset + qrs_dur
        qrst.append(_Wave(st_vec, j + 0.5 * (t_peak - j), 0.55 * (t_peak - j), power=4.0))
    for w in extra:
        if np.isnan(w.center):  # U wave after the T
            w.center = t_peak + 0.17
        qrst.append(w)
    # PVC template: wide bizarre beat with discordant T (used for extra beats / PVC records).
    ev = _unit(*rng.normal(size=3)) * u(1.2, 2.2)
    ectopic = [_Wave(ev, 0.0, 0.03), _Wave(-0.6 * ev, 0.06, 0.03),
               _Wave(-0.35 * ev, 0.34, 0.08, 0.06)]
    return _Morphology([p_ra, p_la], qrst, pr, qrs_onset, qrs_dur, qt, ectopic)


# --------------------------------------------------------------------------------------
# Rhythm.
# --------------------------------------------------------------------------------------
@dataclass
class _Rhythm:
    v_times: np.ndarray  # ventricular (R) times, s
    a_times: np.ndarray  # P-onset times, s
    ectopic: np.ndarray  # bool per ventricular beat: PVC morphology
    atrial_wave: str = "p"  # "p", "fib" (AF f-waves), "flutter"
    atrial_rate: float = 0.0  # Hz, for flutter


def _rhythm(kind: str, hr: float, morph: _Morphology, duration: float,
            rng: np.random.Generator, pvc_prob: float = 0.0) -> _Rhythm:
    """Beat times covering [-1 s, duration + 1 s] so that partial beats appear at the edges."""
    rr0 = 60.0 / hr
    t0, t1 = -1.0 - rng.uniform(0, rr0), duration + 1.0
    n = int(np.ceil((t1 - t0) / (rr0 * 0.5))) + 2  # generous upper bound on beat count
    pre = morph.pr - morph.qrs_onset  # P onset precedes R by this much
    if kind == "AFIB":  # irregularly irregular, no P
        cv = rng.uniform(0.12, 0.25)
        rr = rr0 * np.exp(rng.normal(-cv**2 / 2, cv, n))  # log-normal, mean RR = rr0
        v = t0 + np.cumsum(np.maximum(rr, 0.3))
        v = v[v < t1]
        return _Rhythm(v, np.empty(0), np.zeros(v.size, bool), "fib")
    if kind == "AFLT":
        f_rate = rng.uniform(4.6, 5.4)  # 280-320 flutter waves per minute
        ratio = rng.choice([2, 4, 0], p=[0.5, 0.3, 0.2])  # 0 = variable conduction
        steps = rng.choice([2, 3, 4], n) if ratio == 0 else np.full(n, ratio)
        v = t0 + np.cumsum(steps) / f_rate
        v = v[v < t1]
        return _Rhythm(v, np.empty(0), np.zeros(v.size, bool), "flutter", f_rate)
    if kind == "3AVB":  # AV dissociation: sinus P at its own rate, slow escape rhythm
        a = t0 + np.arange(n) * 60.0 / rng.uniform(70, 95)
        v = t0 + rng.uniform(0, 1) + np.arange(n) * 60.0 / hr
        v = v[v < t1]
        return _Rhythm(v, a[a < t1], np.zeros(v.size, bool))
    # Sinus: respiratory sinus arrhythmia + beat-to-beat jitter.
    rsa = rng.uniform(0.01, 0.05) * (1.0 if kind != "SARRH" else 3.0)
    f_resp, ph = rng.uniform(0.15, 0.35), rng.uniform(0, 2 * np.pi)
    rr = rr0 * (1 + rng.normal(0, 0.015, n))
    if kind == "PACE":
        rr = np.full(n, rr0)
    v = t0 + np.cumsum(rr)
    v = v + rr0 * rsa * np.sin(2 * np.pi * f_resp * v + ph)
    v = v[v < t1]
    a = v - pre
    if kind == "2AVB":  # Mobitz II: every k-th P is not conducted
        k = rng.integers(3, 5)
        keep = (np.arange(v.size) % k) != k - 1
        v = v[keep]
    ectopic = np.zeros(v.size, bool)
    if pvc_prob > 0 or kind == "PVC_BIGEMINY":
        if kind == "PVC_BIGEMINY":
            ectopic = (np.arange(v.size) % 2) == 1
        else:
            ectopic = rng.random(v.size) < pvc_prob
            ectopic[0] = False
        # A PVC comes early (coupling ~60% of RR); the sinus node keeps its pace, so the
        # pause after it is compensatory. Its own P is hidden (not conducted).
        early = np.flatnonzero(ectopic[1:]) + 1
        v = v.copy()
        v[early] = v[early - 1] + rng.uniform(0.5, 0.7) * rr0
    if kind == "PACE" and rng.random() < 0.5:
        a = np.empty(0)  # VVI pacing: no tracked P waves
    return _Rhythm(v, a, ectopic)


# --------------------------------------------------------------------------------------
# Signal synthesis.
# --------------------------------------------------------------------------------------
@dataclass
class _SimInfo:
    code: str
    rhythm: str
    hr: float
    pr: float
    qrs_dur: float
    qt: float
    baseline_wander: float
    white_noise: float
    burst_noise: bool
    powerline: float
    n_pvc: int


def _overlap_add(out: np.ndarray, tmpl: np.ndarray, start: float, times: np.ndarray,
                 fs: float, gains: np.ndarray) -> None:
    """Add `tmpl` (L, 8), whose first sample is at `start` s from each event time."""
    length = tmpl.shape[0]
    for t, g in zip(times, gains, strict=True):
        i0 = int(round((t + start) * fs))
        a, b = max(i0, 0), min(i0 + length, out.shape[0])
        if a < b:
            out[a:b] += tmpl[a - i0:b - i0] * g


def _noise(n: int, fs: float, rng: np.random.Generator, level: float, mains_hz: float
           ) -> tuple[np.ndarray, dict]:
    """Electrode noise for the 8 independent leads: wander, white, EMG bursts, mains hum."""
    t = np.arange(n) / fs
    wander_amp = level * np.exp(rng.uniform(np.log(0.02), np.log(0.4)))
    freqs = rng.uniform(0.05, 0.6, (3, 1, 8))
    phases = rng.uniform(0, 2 * np.pi, (3, 1, 8))
    amps = rng.uniform(0.2, 1.0, (3, 1, 8)) * wander_amp / 1.5
    # Wander is below 1 Hz: evaluate it every 20 ms and interpolate linearly (cheaper).
    step = max(int(fs // 50), 1)
    tc = np.arange(n // step + 2) * step / fs
    coarse = np.sum(amps * np.sin(2 * np.pi * freqs * tc[None, :, None] + phases), axis=0)
    pos = np.arange(n) / step
    i0 = pos.astype(int)
    frac = (pos - i0)[:, None]
    x = coarse[i0] * (1 - frac) + coarse[i0 + 1] * frac
    white = level * np.exp(rng.uniform(np.log(0.004), np.log(0.03)))
    x += rng.normal(0, white, (n, 8))
    burst = bool(rng.random() < 0.1 * min(level, 1.0))
    if burst:  # muscle artefact: broadband noise under a smooth envelope
        c, w = rng.uniform(0, n / fs), rng.uniform(0.5, 2.5)
        env = np.exp(-0.5 * ((t - c) / w) ** 2)[:, None]
        x += env * rng.normal(0, rng.uniform(0.03, 0.1), (n, 8))
    hum = 0.0
    if rng.random() < 0.3 * min(level, 1.0):
        hum = level * np.exp(rng.uniform(np.log(0.003), np.log(0.04)))
        x += hum * rng.uniform(0.3, 1.0, 8) * np.sin(2 * np.pi * mains_hz * t + rng.uniform(
            0, 2 * np.pi))[:, None]
    return x, {"baseline_wander": wander_amp, "white_noise": white, "burst_noise": burst,
               "powerline": hum}


def _resolve(code: str, rng: np.random.Generator) -> str:
    return _pick(rng, _SUBTYPES[code]) if code in _SUBTYPES else code


def _default_rhythm(code: str, hr: float) -> str:
    if code in ("AFIB", "AFLT", "PACE", "2AVB", "3AVB"):
        return code
    if code == "PVC":
        return "PVC_BIGEMINY"
    return "SBRAD" if hr < 60 else "STACH" if hr > 100 else "SR"


def _heart_rate(code: str, rhythm: str | None, rng: np.random.Generator) -> float:
    """Ventricular rate (bpm) for a record of `code` (for AFLT: the conduction ratio's)."""
    if code == "3AVB":
        return float(rng.uniform(30, 45))
    if code == "AFLT":
        return 75.0  # unused: the flutter rate and conduction ratio set the rhythm
    if code == "PACE":
        return float(rng.choice([60.0, 70.0, 72.0, 80.0]))
    if rhythm == "AFIB" or code == "AFIB":
        return float(rng.uniform(60, 140))
    sc = _CODE_TO_SUPERCLASS.get(code, "NORM")
    return float(np.clip(rng.normal(_CLASS_HR[sc], 12.0), 45.0, 125.0))


def _simulate(code: str, rng: np.random.Generator, *, fs: float = 500.0,
              duration_s: float = 10.0, heart_rate: float | None = None,
              rhythm: str | None = None, noise: float = 1.0, mains_hz: float = 50.0,
              pvc_prob: float = 0.0) -> tuple[np.ndarray, _SimInfo]:
    code = _resolve(code, rng)
    if heart_rate is None:
        heart_rate = _heart_rate(code, rhythm, rng)
    rhythm = rhythm or _default_rhythm(code, heart_rate)
    if rhythm not in RHYTHMS:
        raise ValueError(f"unknown rhythm {rhythm!r}; expected one of {RHYTHMS}")
    morph = _morphology("NORM" if code in ("AFIB", "PVC") else code, 60.0 / heart_rate, rng)
    if code == "3AVB":  # ventricular escape: wide QRS
        for w in morph.qrst[:3]:
            w.sigma_l *= 1.6
        morph.qrs_dur *= 1.5
    rhy = _rhythm(rhythm, heart_rate, morph, duration_s, rng, pvc_prob)
    n = int(round(duration_s * fs))
    rot = _rotation(rng, 14.0, 12.0)
    # Per-lead gain: electrode placement and body habitus.
    basis = (rot.T @ _BASIS) * rng.uniform(0.85, 1.15, 8) * np.exp(rng.normal(0, 0.2))
    out = np.zeros((n, 8))
    # Respiration modulates the amplitude/axis beat to beat, differently per lead.
    f_resp, ph, depth = rng.uniform(0.15, 0.35), rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.1)
    rho = rng.uniform(-1, 1, 8)

    def gains(times: np.ndarray) -> np.ndarray:
        return 1 + depth * np.sin(2 * np.pi * f_resp * times + ph)[:, None] * rho[None, :]

    start, stop = -0.25, morph.qt + 0.35
    t = np.arange(int(round(start * fs)), int(round(stop * fs))) / fs
    normal = rhy.v_times[~rhy.ectopic]
    _overlap_add(out, _template(morph.qrst, t) @ basis, t[0], normal, fs, gains(normal))
    if rhy.ectopic.any():
        pvc_t = rhy.v_times[rhy.ectopic]
        et = np.arange(int(round(-0.15 * fs)), int(round(0.6 * fs))) / fs
        _overlap_add(out, _template(morph.ectopic, et) @ basis, et[0], pvc_t, fs,
                     gains(pvc_t))
    if rhy.atrial_wave == "p" and rhy.a_times.size:
        pt = np.arange(0, int(round(0.2 * fs))) / fs
        a_times = rhy.a_times
        if rhy.ectopic.any() and a_times.size == rhy.ectopic.size:
            a_times = a_times[~rhy.ectopic]  # a PVC's own P is hidden in it: drop it
        _overlap_add(out, _template(morph.p_waves, pt) @ basis, 0.0, a_times, fs,
                     gains(a_times))
    tt = np.arange(n) / fs
    if rhy.atrial_wave == "fib":  # f-waves, 4-9 Hz, largest in V1 and the inferior leads
        f = sum(rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(4.5, 8.5) * tt
                                               + rng.uniform(0, 2 * np.pi)) for _ in range(3))
        out += np.outer(f * rng.uniform(0.015, 0.04), _unit(-0.3, 0.6, 0.75) @ basis)
    elif rhy.atrial_wave == "flutter":  # sawtooth, negative in II/III/aVF
        phase = rng.uniform(0, 2 * np.pi)
        saw = sps.sawtooth(2 * np.pi * rhy.atrial_rate * tt + phase, width=0.85)
        out += np.outer(saw * rng.uniform(0.08, 0.18), _unit(0.1, -0.85, 0.5) @ basis)
    extra, ninfo = _noise(n, fs, rng, noise, mains_hz)
    out += extra
    info = _SimInfo(code=code, rhythm=rhythm, hr=float(heart_rate), pr=morph.pr,
                    qrs_dur=morph.qrs_dur, qt=morph.qt, n_pvc=int(rhy.ectopic.sum()),
                    **ninfo)
    if rhythm == "AFLT":
        info.hr = float(60.0 / np.median(np.diff(rhy.v_times)))
    return _to_12_leads(out), info


def synthesize_ecg(
    code: str = "NORM",
    *,
    fs: float = 500.0,
    duration_s: float = 10.0,
    heart_rate: float | None = None,
    rhythm: str | None = None,
    noise: float = 1.0,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """One synthetic 12-lead ECG, shape (round(duration_s * fs), 12), in mV.

    Leads are in PTB-XL order (`PTBXL_LEADS`). `code` is a PTB-XL superclass ("NORM", "MI",
    "STTC", "CD", "HYP": a random subtype is drawn), one of their SCP codes (e.g. "IMI",
    "CLBBB", "LVH"), or "AFIB", "AFLT", "PVC" (normal beats in atrial fibrillation, flutter
    or ventricular bigeminy) or "PACE" (ventricular pacing). `rhythm` (one of `RHYTHMS`)
    overrides the rhythm; by default it follows the code and the heart rate (SBRAD below
    60 bpm, STACH above 100). `noise` scales all noise; 0 gives a clean signal.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return _simulate(code, rng, fs=fs, duration_s=duration_s, heart_rate=heart_rate,
                     rhythm=rhythm, noise=noise)[0]


# --------------------------------------------------------------------------------------
# PTB-XL twin.
# --------------------------------------------------------------------------------------
PTBXL_COLUMNS = (
    "ecg_id", "patient_id", "age", "sex", "height", "weight", "nurse", "site", "device",
    "recording_date", "report", "scp_codes", "heart_axis", "infarction_stadium1",
    "infarction_stadium2", "validated_by", "second_opinion", "initial_autogenerated_report",
    "validated_by_human", "baseline_drift", "static_noise", "burst_noise",
    "electrodes_problems", "extra_beats", "pacemaker", "strat_fold", "filename_lr",
    "filename_hr",
)
SCP_COLUMNS = (
    "description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass",
    "Statement Category", "SCP-ECG Statement Description", "AHA code", "aECG REFID",
    "CDISC Code", "DICOM Code",
)
# code | description | diagnostic | form | rhythm | class | subclass | category | AHA code
_SCP_TABLE = """\
NDT|non-diagnostic T abnormalities|1|1||STTC|STTC|other ST-T descriptive statements|
NST_|non-specific ST changes|1|1||STTC|NST_|Basic roots for coding ST-T changes|
DIG|digitalis-effect|1|1||STTC|STTC|other ST-T descriptive statements|
LNGQT|long QT-interval|1|1||STTC|STTC|other ST-T descriptive statements|
NORM|normal ECG|1|||NORM|NORM|Normal/abnormal|1
IMI|inferior myocardial infarction|1|||MI|IMI|Myocardial Infarction|161
ASMI|anteroseptal myocardial infarction|1|||MI|AMI|Myocardial Infarction|165
LVH|left ventricular hypertrophy|1|||HYP|LVH|Ventricular Hypertrophy|142
LAFB|left anterior fascicular block|1|||CD|LAFB/LPFB|Intraventricular conduction|101
ISC_|non-specific ischemic|1|||STTC|ISC_|Basic roots for coding ST-T changes|
IRBBB|incomplete right bundle branch block|1|||CD|IRBBB|Intraventricular conduction|
1AVB|first degree AV block|1|||CD|_AVB|Atrioventricular conduction|82
IVCD|non-specific intraventricular conduction disturbance (block)|1|||CD|IVCD|\
Intraventricular conduction|
ISCAL|ischemic in anterolateral leads|1|||STTC|ISCA|Ischemia|
CRBBB|complete right bundle branch block|1|||CD|CRBBB|Intraventricular conduction|105
CLBBB|complete left bundle branch block|1|||CD|CLBBB|Intraventricular conduction|104
ILMI|inferolateral myocardial infarction|1|||MI|IMI|Myocardial Infarction|
LAO/LAE|left atrial overload/enlargement|1|||HYP|LAO/LAE|Atrial Hypertrophy|
AMI|anterior myocardial infarction|1|||MI|AMI|Myocardial Infarction|
ALMI|anterolateral myocardial infarction|1|||MI|AMI|Myocardial Infarction|
ISCIN|ischemic in inferior leads|1|||STTC|ISCI|Ischemia|
INJAS|subendocardial injury in anteroseptal leads|1|||MI|AMI|Myocardial Infarction|
LMI|lateral myocardial infarction|1|||MI|LMI|Myocardial Infarction|
ISCIL|ischemic in inferolateral leads|1|||STTC|ISCI|Ischemia|
LPFB|left posterior fascicular block|1|||CD|LAFB/LPFB|Intraventricular conduction|102
ISCAS|ischemic in anteroseptal leads|1|||STTC|ISCA|Ischemia|
INJAL|subendocardial injury in anterolateral leads|1|||MI|AMI|Myocardial Infarction|
ISCLA|ischemic in lateral leads|1|||STTC|ISCA|Ischemia|
RVH|right ventricular hypertrophy|1|||HYP|RVH|Ventricular Hypertrophy|143
ANEUR|ST-T changes compatible with ventricular aneurysm|1|1||STTC|STTC|\
other ST-T descriptive statements|
RAO/RAE|right atrial overload/enlargement|1|||HYP|RAO/RAE|Atrial Hypertrophy|
EL|electrolytic disturbance or drug (former EDIS)|1|1||STTC|STTC|\
other ST-T descriptive statements|
WPW|Wolf-Parkinson-White syndrome|1|||CD|WPW|Intraventricular conduction|
ILBBB|incomplete left bundle branch block|1|||CD|ILBBB|Intraventricular conduction|
IPLMI|inferoposterolateral myocardial infarction|1|||MI|IMI|Myocardial Infarction|
ISCAN|ischemic in anterior leads|1|||STTC|ISCA|Ischemia|
IPMI|inferoposterior myocardial infarction|1|||MI|IMI|Myocardial Infarction|
SEHYP|septal hypertrophy|1|||HYP|SEHYP|Ventricular Hypertrophy|
INJIN|subendocardial injury in inferior leads|1|||MI|IMI|Myocardial Infarction|
INJLA|subendocardial injury in lateral leads|1|||MI|AMI|Myocardial Infarction|
PMI|posterior myocardial infarction|1|||MI|PMI|Myocardial Infarction|
3AVB|third degree AV block|1|||CD|_AVB|Atrioventricular conduction|86
INJIL|subendocardial injury in inferolateral leads|1|||MI|IMI|Myocardial Infarction|
2AVB|second degree AV block|1|||CD|_AVB|Atrioventricular conduction|
ABQRS|abnormal QRS||1|||||
PVC|ventricular premature complex||1|1|||Ectopic beats|
STD_|non-specific ST depression||1|||||
VCLVH|voltage criteria (QRS) for left ventricular hypertrophy||1|||||
QWAVE|Q waves present||1|||||
LOWT|low amplitude T-waves||1|||||
NT_|non-specific T-wave changes||1|||||
PAC|atrial premature complex||1|1|||Ectopic beats|
LPR|prolonged PR interval||1|||||
INVT|inverted T-waves||1|||||
LVOLT|low QRS voltages in the frontal and horizontal leads||1|||||
HVOLT|high QRS voltage||1|||||
TAB_|T-wave abnormality||1|||||
STE_|non-specific ST elevation||1|||||
PRC(S)|premature complex(es)||1|||||
SR|sinus rhythm|||1|||Rhythm|21
AFIB|atrial fibrillation|||1|||Rhythm|50
STACH|sinus tachycardia|||1|||Rhythm|22
SARRH|sinus arrhythmia|||1|||Rhythm|
SBRAD|sinus bradycardia|||1|||Rhythm|23
PACE|normal functioning artificial pacemaker|||1|||Pacemaker|
SVARR|supraventricular arrhythmia|||1|||Rhythm|
BIGU|bigeminal pattern (unknown origin, SV or Ventricular)|||1|||Rhythm|
AFLT|atrial flutter|||1|||Rhythm|51
SVTAC|supraventricular tachycardia|||1|||Rhythm|
PSVT|paroxysmal supraventricular tachycardia|||1|||Rhythm|
TRIGU|trigeminal pattern (unknown origin, SV or Ventricular)|||1|||Rhythm|
"""


def _scp_statements() -> pd.DataFrame:
    rows = [line.split("|") for line in _SCP_TABLE.splitlines()]
    df = pd.DataFrame(
        [[r[1], *(float(x) if x else np.nan for x in r[2:5]), r[5] or None, r[6] or None,
          r[7] or None, r[1], float(r[8]) if r[8] else np.nan, None, None, None]
         for r in rows],
        index=[r[0] for r in rows], columns=list(SCP_COLUMNS))
    return df


_REPORTS = {
    "NORM": ("sinusrhythmus normales ekg", "sinus rhythm. normal ecg.",
             "sinusrhythmus lagetyp normal normales ekg"),
    "MI": ("sinusrhythmus alter infarkt moeglich", "sinus rhythm. probable old infarction.",
           "sinusrhythmus q-zacken pathologisch infarkt alter unbest."),
    "STTC": ("sinusrhythmus t-abnormitaet", "sinus rhythm. st-t changes, non-specific.",
             "sinusrhythmus st-senkung ischaemie moeglich"),
    "CD": ("sinusrhythmus schenkelblock", "sinus rhythm. intraventricular conduction delay.",
           "sinusrhythmus ueberdrehter linkstyp linksanteriorer hemiblock"),
    "HYP": ("sinusrhythmus linksherzhypertrophie", "sinus rhythm. left ventricular "
            "hypertrophy.", "sinusrhythmus p-sinistrocardiale"),
    "other": ("vorhofflattern", "atrial flutter.", "schrittmacher-ekg"),
}
_DEVICES = ("CS-12   E", "CS100    3", "AT-6 C 5.5", "AT-60    3", "AT-6     6", "CS-12",
            "AT-6 C", "CS100 Vx")
_FORM_SECONDARY = ("ABQRS", "LOWT", "NT_", "INVT", "VCLVH", "QWAVE", "STD_")


def _likelihood(rng: np.random.Generator) -> float:
    return float(rng.choice([100.0, 80.0, 50.0, 35.0, 15.0, 0.0],
                            p=[0.62, 0.13, 0.12, 0.03, 0.04, 0.06]))


def _scp_dict(code: str, rhythm_code: str | None, rng: np.random.Generator,
              tie: bool) -> dict[str, float]:
    """Realistic scp_codes for a record whose simulated (and intended) top code is `code`."""
    sc = _CODE_TO_SUPERCLASS[code]
    like = 100.0 if tie else _likelihood(rng)
    items: list[tuple[str, float]] = [(code, like)]
    if tie:
        # Same likelihood as the main code but from another superclass, and placed so that
        # neither "last wins" nor alphabetical tie-breaking gives the right answer.
        others = [c for s, cs in SUPERCLASS_CODES.items() if s != sc for c in cs if c < code]
        others = others or [c for s, cs in SUPERCLASS_CODES.items() if s != sc for c in cs]
        items.append((others[rng.integers(len(others))], like))
    elif sc != "NORM" and like >= 35.0 and rng.random() < 0.25:  # a less likely statement
        lower = [x for x in (50.0, 35.0, 15.0, 0.0) if x < like]
        pool = _FORM_SECONDARY + tuple(
            c for s, cs in SUPERCLASS_CODES.items() if s not in (sc, "NORM") for c in cs)
        sec = (pool[rng.integers(len(pool))], float(rng.choice(lower)))
        # Sometimes the lower-likelihood code comes first: the label is the max, not the first.
        items.insert(0 if rng.random() < 0.3 else 1, sec)
    if rhythm_code is not None:
        items.append((rhythm_code, 0.0))
    return dict(items)


def _rhythm_code(rhythm: str | None, hr: float, rng: np.random.Generator) -> str | None:
    if rng.random() < 0.1:
        return None  # many PTB-XL records carry no rhythm statement
    if rhythm in ("AFIB", "SARRH"):
        return rhythm
    return "SBRAD" if hr < 60 else "STACH" if hr > 100 else "SR"


_OTHER_SCP = {"AFLT": {"AFLT": 0.0}, "AFLT_TIE": {"AFLT": 0.0, "NDT": 0.0},
              "PACE": {"PACE": 0.0}, "PVC": {"PVC": 100.0, "NORM": 80.0, "SR": 0.0}}


@dataclass
class _PlannedRecord:
    patient: int
    code: str  # simulated SCP code (or AFLT/AFLT_TIE/PACE/PVC for "other")
    label: str  # intended PTB-XL label: superclass or "other"
    scp_codes: dict[str, float]
    heart_rate: float
    tie: bool = False
    rhythm: str | None = None  # forced rhythm (AFIB, SARRH), else derived from the rate


def _plan_records(n_patients: int, rng: np.random.Generator) -> tuple[list[_PlannedRecord],
                                                                      list[str]]:
    classes = list(_CLASS_PROBS)
    pclass = [classes[i] for i in rng.choice(5, n_patients, p=list(_CLASS_PROBS.values()))]
    recs: list[_PlannedRecord] = []
    kinds = []
    for p in range(n_patients):
        n_rec = int(rng.choice([1, 2, 3], p=[0.78, 0.16, 0.06]))
        c = pclass[p]
        kind = "pure"
        roll = rng.random()
        if roll < 0.035:
            kind = "other"  # one record has a non-superclass top code
        elif n_rec > 1 and roll < 0.035 + 0.2:
            kind = "mixed"  # records map to different superclasses
        kinds.append(kind)
        sub = _resolve(c, rng)
        labels = [c] * n_rec
        if kind == "mixed":
            alt = [x for x in classes if x != c]
            labels[1:] = [alt[rng.integers(4)]] * (n_rec - 1)
        for j, lab in enumerate(labels):
            # Same patient, same disease: the subtype usually repeats between visits.
            code = sub if (lab == c and rng.random() < 0.7) else _resolve(lab, rng)
            if kind == "other" and j == n_rec - 1:
                other = _OTHER_KINDS[rng.integers(4)]
                sim = {"AFLT_TIE": "AFLT"}.get(other, other)
                recs.append(_PlannedRecord(p, other, "other", dict(_OTHER_SCP[other]),
                                           _heart_rate(sim, None, rng)))
                continue
            rhythm = None
            if lab == "NORM" and rng.random() < 0.05:
                rhythm = "SARRH"
            elif lab != "NORM" and code not in ("1AVB", "2AVB", "3AVB", "WPW", "LAO/LAE",
                                                "RAO/RAE") and rng.random() < 0.06:
                rhythm = "AFIB"
            hr = _heart_rate(code, rhythm, rng)
            tie = bool(lab != "NORM" and rng.random() < 0.04)
            scp = _scp_dict(code, _rhythm_code(rhythm, hr, rng), rng, tie)
            recs.append(_PlannedRecord(p, code, lab, scp, hr, tie, rhythm))
    return recs, kinds


def plan_ptbxl(n_patients: int, seed: int = 0) -> pd.DataFrame:
    """The PTB-XL twin's ground truth, without writing anything (fast).

    One row per record: ecg_id, patient_id, strat_fold, scp_codes (the CSV's string),
    code (simulated SCP code, or AFLT/AFLT_TIE/PACE/PVC for records meant to be "other"),
    label (the PTB-XL label that scp_codes encode), tie (top likelihood tied with a code of
    another superclass), rhythm (forced rhythm or None), heart_rate (bpm), patient_kind
    (pure/mixed/other) and patient_kept (whether the PTB-XL patient filter keeps the patient).
    """
    rng = np.random.default_rng([seed, 0])
    recs, kinds = _plan_records(n_patients, rng)
    # Real PTB-XL ids are not grouped by patient; patient ids are sparse.
    ecg_ids = rng.permutation(len(recs)) + 1
    pids = rng.choice(np.arange(1, int(n_patients * 1.16) + 2), n_patients, replace=False)
    # Stratified folds: round-robin over each class's shuffled patients, as in PTB-XL.
    folds = np.zeros(n_patients, int)
    first_label = {}
    for r in recs:
        first_label.setdefault(r.patient, r.label)
    for lab in sorted(set(first_label.values())):  # sorted: hash order varies
        members = [p for p, v in first_label.items() if v == lab]
        members = [members[i] for i in rng.permutation(len(members))]
        for k, p in enumerate(members):
            folds[p] = k % 10 + 1
    df = pd.DataFrame({
        "ecg_id": ecg_ids,
        "patient_id": pids[[r.patient for r in recs]],
        "strat_fold": folds[[r.patient for r in recs]],
        "scp_codes": [str(r.scp_codes) for r in recs],
        "code": [r.code for r in recs],
        "label": [r.label for r in recs],
        "tie": [r.tie for r in recs],
        # object dtype keeps None as None: pandas 3 would store a str column's None as NaN.
        "rhythm": pd.Series([r.rhythm for r in recs], dtype=object),
        "heart_rate": [r.heart_rate for r in recs],
        "patient_kind": [kinds[r.patient] for r in recs],
    })
    df["patient_kept"] = df["patient_kind"] == "pure"
    return df.sort_values("ecg_id").reset_index(drop=True)


def _write_record(path: pathlib.Path, sig: np.ndarray, fs: int, gain: float,
                  leads: Sequence[str], base: datetime.datetime | None = None) -> None:
    """Write a 12-lead, format-16 WFDB record (header + interleaved little-endian int16).

    The bytes are identical to what `wfdb.wrsamp(..., d_signal=..., fmt=["16"] * 12,
    adc_gain=[gain] * 12, baseline=[0] * 12)` writes (tested); wrsamp itself spends ~20 ms
    per record validating header fields with pandas, which dominated generation time.
    """
    d = np.clip(np.round(sig * gain), -32767, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    checksum = d.astype(np.int64).sum(axis=0) % 65536
    head = f"{name} {d.shape[1]} {fs} {d.shape[0]}"
    if base is not None:
        head += f" {base:%H:%M:%S} {base:%d/%m/%Y}"
    lines = [head] + [
        f"{name}.dat 16 {float(gain)}(0)/mV 16 0 {d[0, c]} {checksum[c]} 0 {lead}"
        for c, lead in enumerate(leads)]
    path.with_name(name + ".hea").write_text("\n".join(lines) + "\n")
    path.with_name(name + ".dat").write_bytes(d.tobytes())


def _mark_synthetic(root: pathlib.Path, layout: str) -> None:
    """The marker the builders record (metadata ``synthetic``): reports then never set a
    twin's results beside the paper's."""
    (root / SYNTHETIC_MARKER).write_text(
        f"Synthetic {layout} look-alike written by cardioformer_jax.synthetic: simulated "
        f"signals, not patient data. Results on it are not comparable with published ones.\n")


def _lead_list(rng: np.random.Generator, names: Sequence[str]) -> str:
    a, b = sorted(rng.choice(len(names), 2, replace=False))
    return f", {names[a]}-{names[b]},"


def write_ptbxl_twin(out_dir: str | os.PathLike, n_patients: int, seed: int = 0
                     ) -> pathlib.Path:
    """Write a PTB-XL v1.0.3 look-alike (CSV files, records500/, records100/) to `out_dir`."""
    root = pathlib.Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    plan = plan_ptbxl(n_patients, seed)
    rng = np.random.default_rng([seed, 2])
    # Per-patient demographics, shared by the patient's records.
    pat = {}
    for pid, grp in plan.groupby("patient_id", sort=True):
        norm = (grp["label"] == "NORM").all()
        age = float(np.clip(rng.normal(45 if norm else 64, 16 if norm else 13), 18, 95))
        days = np.sort(rng.uniform(0, 365.25 * 17, len(grp)))  # 1984-2001, in order
        pat[pid] = (age, int(rng.integers(2)), days)
    t_base = np.datetime64("1984-01-01T00:00:00")
    rows = []
    seen: dict[int, int] = {}
    for rec in plan.itertuples(index=False):
        ecg_id = int(rec.ecg_id)
        r_rng = np.random.default_rng([seed, 1, ecg_id])
        code = rec.code
        sim_code = {"AFLT_TIE": "AFLT"}.get(code, code)
        pvc_prob = 0.0 if code == "PVC" else (0.05 if r_rng.random() < 0.08 else 0.0)
        rhythm = None if pd.isna(rec.rhythm) else rec.rhythm
        sig, info = _simulate(sim_code, r_rng, heart_rate=rec.heart_rate, rhythm=rhythm,
                              pvc_prob=pvc_prob)
        folder = f"{ecg_id // 1000 * 1000:05d}"
        hr_name = f"records500/{folder}/{ecg_id:05d}_hr"
        lr_name = f"records100/{folder}/{ecg_id:05d}_lr"
        _write_record(root / hr_name, sig, 500, 1000.0, PTBXL_LEADS)
        # records100 are the 500 Hz signals low-pass filtered and decimated, as in PTB-XL.
        _write_record(root / lr_name, sps.resample_poly(sig, 1, 5, axis=0), 100, 1000.0,
                      PTBXL_LEADS)
        pid = int(rec.patient_id)
        age, sex, days = pat[pid]
        k = seen.get(pid, 0)
        seen[pid] = k + 1
        age_k = age + days[k] / 365.25
        stamp = t_base + np.timedelta64(int(days[k] * 86400), "s")
        sc = rec.label
        axis = {"LAFB": "LAD", "LPFB": "RAD", "RVH": "RAD", "PACE": "ALAD"}.get(
            code, "MID" if r_rng.random() < 0.5 else None)
        nurse = float(r_rng.integers(0, 12)) if r_rng.random() < 0.4 else np.nan
        rows.append({
            "ecg_id": ecg_id,
            "patient_id": float(pid),
            "age": 300.0 if age_k >= 90 else float(int(age_k)),  # PTB-XL codes 90+ as 300
            "sex": sex,
            "height": float(round(r_rng.normal(168, 10))) if r_rng.random() < 0.32 else np.nan,
            "weight": float(round(r_rng.normal(75, 14))) if r_rng.random() < 0.43 else np.nan,
            "nurse": nurse,
            "site": float(r_rng.integers(0, 51)),
            "device": _DEVICES[r_rng.integers(len(_DEVICES))],
            "recording_date": str(stamp).replace("T", " "),
            "report": _REPORTS[sc][r_rng.integers(3)],
            "scp_codes": rec.scp_codes,
            "heart_axis": axis,
            "infarction_stadium1": (["Stadium I", "Stadium II", "Stadium III", "unknown"][
                r_rng.integers(4)] if sc == "MI" else None),
            "infarction_stadium2": ("Stadium III" if sc == "MI" and r_rng.random() < 0.1
                                    else None),
            "validated_by": float(r_rng.integers(0, 13)) if r_rng.random() < 0.55 else np.nan,
            "second_opinion": bool(r_rng.random() < 0.02),
            "initial_autogenerated_report": bool(r_rng.random() < 0.1),
            "validated_by_human": bool(r_rng.random() < 0.73),
            "baseline_drift": (_lead_list(r_rng, PTBXL_LEADS) if info.baseline_wander > 0.2
                               else None),
            "static_noise": (_lead_list(r_rng, PTBXL_LEADS) if info.white_noise > 0.018
                             else None),
            "burst_noise": "alles" if info.burst_noise else None,
            "electrodes_problems": None,
            "extra_beats": (f"{info.n_pvc}VES" if info.n_pvc and code != "PVC"
                            else "VES" if code == "PVC" else None),
            "pacemaker": "ja, pacemaker" if code == "PACE" else None,
            "strat_fold": int(rec.strat_fold),
            "filename_lr": lr_name,
            "filename_hr": hr_name,
        })
    db = pd.DataFrame(rows, columns=list(PTBXL_COLUMNS))
    db.to_csv(root / "ptbxl_database.csv", index=False)
    _mark_synthetic(root, "PTB-XL")
    _scp_statements().to_csv(root / "scp_statements.csv")
    return root


# --------------------------------------------------------------------------------------
# MIMIC-IV-ECG twin.
# --------------------------------------------------------------------------------------
MIMIC_MAX_SUBJECT_ID = 10370032  # the reference's subset (docs/data.md)
MEASUREMENT_COLUMNS = (
    "subject_id", "study_id", "cart_id", "ecg_time",
    *(f"report_{i}" for i in range(18)),
    "bandwidth", "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end",
    "t_end", "p_axis", "qrs_axis", "t_axis",
)
_MIMIC_REPORTS = {
    "SB": (["Sinus bradycardia", "Otherwise normal ECG"],
           ["Sinus bradycardia", "Possible left atrial abnormality", "Borderline ECG"],
           ["Sinus bradycardia", "Left axis deviation", "Abnormal ECG"]),
    "ST": (["Sinus tachycardia", "Otherwise normal ECG"],
           ["Sinus tachycardia", "Nonspecific T wave abnormalities", "Abnormal ECG"]),
    "AF": (["Atrial fibrillation", "Abnormal ECG"],
           ["Atrial fibrillation with rapid ventricular response", "Abnormal ECG"],
           ["Atrial fibrillation", "Nonspecific ST abnormality", "Abnormal ECG"]),
    "NORM": (["Sinus rhythm", "Normal ECG"],
             ["Sinus rhythm", "Possible left atrial abnormality", "Borderline ECG"],
             ["Sinus rhythm", "Possible anterior infarct - age undetermined",
              "Borderline ECG"]),
    # "abnormal" without "possible" in one line excludes the record, even when another
    # line says "possible" (the rule is per report line).
    "excluded": (["Sinus rhythm", "Left bundle branch block", "Abnormal ECG"],
                 ["Sinus rhythm", "Inferior infarct - age undetermined", "Abnormal ECG"],
                 ["Sinus rhythm", "Possible left atrial abnormality",
                  "ST depression, consider ischemia", "Abnormal ECG"]),
}
# Simulated code, heart-rate range and rhythm per MIMIC class.
_MIMIC_SIM = {
    "SB": ("NORM", (40.0, 57.0), "SBRAD"), "ST": ("NORM", (102.0, 140.0), "STACH"),
    "AF": ("AFIB", (60.0, 140.0), "AFIB"), "NORM": ("NORM", (60.0, 99.0), "SR"),
}
_MIMIC_EXCLUDED_SIM = ("CLBBB", "IMI", "ISC_")


def plan_mimic(n_subjects: int, seed: int = 0) -> pd.DataFrame:
    """The MIMIC-IV-ECG twin's ground truth, without writing anything (fast).

    One row per record: subject_id, study_id, ecg_time, label (SB/ST/AF/NORM, or "excluded"
    for a report line with "abnormal" but not "possible"), subject_kind (pure, mixed = two different
    classes, with_excluded = one excluded record besides agreeing ones) and subject_kept
    (False for mixed subjects; excluded records are dropped, their subjects kept).
    """
    rng = np.random.default_rng([seed, 10])
    n_hi = max(1, round(0.1 * n_subjects)) if n_subjects >= 4 else 0
    lo = rng.choice(np.arange(10000000, MIMIC_MAX_SUBJECT_ID), n_subjects - n_hi,
                    replace=False)
    hi = rng.choice(np.arange(MIMIC_MAX_SUBJECT_ID + 1, 10400000), n_hi, replace=False)
    sids = np.concatenate([lo, hi])
    if n_subjects >= 3:  # the boundary itself must be kept by a "<=" filter
        sids[0] = MIMIC_MAX_SUBJECT_ID
    sids = np.sort(np.unique(sids))
    classes = ["SB", "ST", "AF", "NORM"]
    rows = []
    used_studies: set[int] = set()
    for sid in sids:
        n_rec = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.35, 0.3, 0.15]))
        c = classes[rng.choice(4, p=[0.2, 0.2, 0.2, 0.4])]
        labels = [c] * n_rec
        kind = "pure"
        roll = rng.random()
        if n_rec > 1 and roll < 0.2:
            kind = "mixed"
            labels[-1] = [x for x in classes if x != c][rng.integers(3)]
        elif n_rec > 1 and roll < 0.32:
            kind = "with_excluded"
            labels[-1] = "excluded"
        # Dates are shifted into 2110-2200 as in MIMIC; a subject's studies in time order.
        minutes = np.sort(rng.integers(0, 90 * 365 * 1440, n_rec))
        for lab, minute in zip(labels, minutes, strict=True):
            while (study := int(rng.integers(40000000, 50000000))) in used_studies:
                pass
            used_studies.add(study)
            when = np.datetime64("2110-01-01T00:00") + np.timedelta64(int(minute), "m")
            rows.append({"subject_id": int(sid), "study_id": study, "label": lab,
                         "subject_kind": kind, "subject_kept": kind != "mixed",
                         "ecg_time": when.astype(datetime.datetime)})
    return pd.DataFrame(rows)


def write_mimic_twin(out_dir: str | os.PathLike, n_subjects: int, seed: int = 0
                     ) -> pathlib.Path:
    """Write a small MIMIC-IV-ECG v1.0 look-alike (record_list.csv, machine_measurements.csv,
    files/pNNNN/pSUBJECT/sSTUDY/STUDY.{hea,dat}) to `out_dir`."""
    root = pathlib.Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    plan = plan_mimic(n_subjects, seed)
    records, measurements = [], []
    for rec in plan.itertuples(index=False):
        r_rng = np.random.default_rng([seed, 11, rec.study_id])
        if rec.label == "excluded":
            code, hr = _MIMIC_EXCLUDED_SIM[r_rng.integers(3)], r_rng.uniform(60, 99)
            rhythm = None
        else:
            code, (lo, hi), rhythm = _MIMIC_SIM[rec.label]
            hr = r_rng.uniform(lo, hi)
        sig, info = _simulate(code, r_rng, heart_rate=hr, rhythm=rhythm, mains_hz=60.0)
        # PTB-XL order -> MIMIC order (aVF before aVL).
        sig = sig[:, [0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11]]
        when = rec.ecg_time.to_pydatetime()
        rel = f"files/p{str(rec.subject_id)[:4]}/p{rec.subject_id}/s{rec.study_id}"
        _write_record(root / rel / str(rec.study_id), sig, 500, 200.0, MIMIC_LEADS, when)
        ecg_time = when.strftime("%Y-%m-%d %H:%M:%S")
        records.append({"subject_id": rec.subject_id, "study_id": rec.study_id,
                        "file_name": rec.study_id, "ecg_time": ecg_time,
                        "path": f"{rel}/{rec.study_id}"})
        opts = _MIMIC_REPORTS[rec.label]
        report = opts[r_rng.integers(len(opts))]
        missing = 29999  # MIMIC's "not measured" value
        af = rhythm == "AFIB"
        qrs_on = int(r_rng.integers(160, 190))
        p_on = missing if af else int(qrs_on - info.pr * 1000)
        measurements.append({
            "subject_id": rec.subject_id, "study_id": rec.study_id,
            "cart_id": int(r_rng.integers(6000, 6900)), "ecg_time": ecg_time,
            **{f"report_{i}": (report[i] if i < len(report) else None) for i in range(18)},
            "bandwidth": "0.005-150 Hz", "filtering": "60 Hz notch Baseline filter",
            "rr_interval": int(round(60000 / info.hr)),
            "p_onset": p_on, "p_end": missing if af else p_on + int(r_rng.integers(90, 120)),
            "qrs_onset": qrs_on, "qrs_end": qrs_on + int(info.qrs_dur * 1000),
            "t_end": qrs_on + int(info.qt * 1000),
            "p_axis": missing if af else int(r_rng.integers(20, 75)),
            "qrs_axis": int(r_rng.integers(-30, 90)), "t_axis": int(r_rng.integers(0, 80)),
        })
    pd.DataFrame(records).to_csv(root / "record_list.csv", index=False)
    _mark_synthetic(root, "MIMIC-IV-ECG")
    pd.DataFrame(measurements, columns=list(MEASUREMENT_COLUMNS)).to_csv(
        root / "machine_measurements.csv", index=False)
    return root


# --------------------------------------------------------------------------------------
# CLI.
# --------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    """`python -m cardioformer_jax.synthetic --out DIR --patients N --seed S [--layout L]`."""
    ap = argparse.ArgumentParser(prog="python -m cardioformer_jax.synthetic",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (created if missing)")
    ap.add_argument("--patients", type=int, default=100,
                    help="number of patients (PTB-XL) or subjects (MIMIC-IV-ECG)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layout", choices=("ptbxl", "mimic_iv_ecg"), default="ptbxl")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.layout == "ptbxl":
        root = write_ptbxl_twin(args.out, args.patients, args.seed)
        plan = plan_ptbxl(args.patients, args.seed)
        kept = plan[plan["patient_kept"]]
        print(f"PTB-XL twin in {root}: {len(plan)} records of {args.patients} patients "
              f"(ptbxl_database.csv, scp_statements.csv, records500/, records100/)")
        print(f"  the PTB-XL rules keep {kept['patient_id'].nunique()} patients / {len(kept)} "
              f"records; per class (records): {kept['label'].value_counts().to_dict()}")
    else:
        root = write_mimic_twin(args.out, args.patients, args.seed)
        plan = plan_mimic(args.patients, args.seed)
        print(f"MIMIC-IV-ECG twin in {root}: {len(plan)} records of {args.patients} "
              f"subjects (record_list.csv, machine_measurements.csv, files/)")
        print(f"  labels: {plan['label'].value_counts().to_dict()}; subjects with "
              f"disagreeing records: {plan.loc[~plan['subject_kept'], 'subject_id'].nunique()}")
    print(f"  written in {time.perf_counter() - t0:.1f} s")


