"""The twins' ground truth, drawn before any signal: patients, their records, each record's
SCP codes (PTB-XL) or report class (MIMIC-IV-ECG), with the traps the label rules must get
right (likelihood ties across superclasses, the top code not listed first, patients whose
records disagree, "other" codes, excluded reports)."""

import datetime
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cardioformer_jax.data.synthetic.codes import (
    _CLASS_PROBS,
    _CODE_TO_SUPERCLASS,
    _OTHER_KINDS,
    SUPERCLASS_CODES,
)
from cardioformer_jax.data.synthetic.signals import _heart_rate, _resolve

# Form statements a record may carry besides its top code, at a lower likelihood.
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


MIMIC_MAX_SUBJECT_ID = 10370032  # the reference's subset (docs/data.md)


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
