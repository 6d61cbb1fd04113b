"""ECG waveforms: a dipole model of the heart, beats per SCP code, rhythms, noise (docs/data.md,
"Synthetic twins")."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import signal as sps

from cardioformer_jax.data.synthetic.codes import (
    _CLASS_HR,
    _CODE_TO_SUPERCLASS,
    _SUBTYPES,
    RHYTHMS,
    SUPERCLASS_CODES,
)


# Geometry: x = patient's left, y = inferior (feet), z = anterior (chest).
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


@dataclass
class _SimInfo:
    hr: float
    pr: float
    qrs_dur: float
    qt: float
    baseline_wander: float
    white_noise: float
    burst_noise: bool
    n_pvc: int


def _overlap_add(out: np.ndarray, waves: Sequence[_Wave], t: np.ndarray, basis: np.ndarray,
                 times: np.ndarray, fs: float, gains: np.ndarray) -> None:
    """Add the template of `waves` at times `t` (s from each event time) in the 8 leads."""
    tmpl = _template(waves, t) @ basis
    length = tmpl.shape[0]
    for t_event, g in zip(times, gains, strict=True):
        i0 = int(round((t_event + t[0]) * fs))
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
    return x, {"baseline_wander": wander_amp, "white_noise": white, "burst_noise": burst}


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
    _overlap_add(out, morph.qrst, t, basis, normal, fs, gains(normal))
    if rhy.ectopic.any():
        pvc_t = rhy.v_times[rhy.ectopic]
        et = np.arange(int(round(-0.15 * fs)), int(round(0.6 * fs))) / fs
        _overlap_add(out, morph.ectopic, et, basis, pvc_t, fs, gains(pvc_t))
    if rhy.atrial_wave == "p" and rhy.a_times.size:
        pt = np.arange(0, int(round(0.2 * fs))) / fs
        a_times = rhy.a_times
        if rhy.ectopic.any() and a_times.size == rhy.ectopic.size:
            a_times = a_times[~rhy.ectopic]  # a PVC's own P is hidden in it: drop it
        _overlap_add(out, morph.p_waves, pt, basis, a_times, fs, gains(a_times))
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
    info = _SimInfo(hr=float(heart_rate), pr=morph.pr, qrs_dur=morph.qrs_dur, qt=morph.qt,
                    n_pvc=int(rhy.ectopic.sum()), **ninfo)
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
