"""Unit tests of each detector and of fusion: pure classes, fast, no Ray or Kafka."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from actors.detectors.base import ReadingBatch, steps
from actors.detectors.fusion import HysteresisFusion, fire_evidence
from actors.detectors.model_probability import ModelProbability
from actors.detectors.particle_size import ParticleSize
from actors.detectors.rate_of_rise import RateOfRise
from actors.detectors.silent import SilentSensor
from actors.detectors.stuck import StuckSignal
from actors.detectors.thresholds import ThresholdTiers
from actors.detectors.zscore import EwmaZScore
from ingest.schema import MEASUREMENTS
from ingest.settings import (
    DetectionSettings,
    FusionSettings,
    ParticleSizeSettings,
    RateOfRiseSettings,
    SettingsError,
    SilentSettings,
    StuckSettings,
    ThresholdSettings,
    ThresholdTier,
    ZScoreSettings,
    ZScoreSignal,
    load_settings,
)
from train.features import FEATURE_NAMES
from train.slot_table import SlotArrays

M = {name: j for j, name in enumerate(MEASUREMENTS)}
F = {name: j for j, name in enumerate(FEATURE_NAMES)}


def batch(slots, values=None, features=None, timestamps=None, arrivals=None) -> ReadingBatch:
    slots = np.asarray(slots, dtype=np.int64)
    n = len(slots)
    return ReadingBatch(slots, np.zeros(n) if timestamps is None else np.asarray(timestamps, dtype=float),
                        np.ones((n, len(MEASUREMENTS))) if values is None else values,
                        np.zeros((n, len(FEATURE_NAMES))) if features is None else features,
                        None if arrivals is None else np.asarray(arrivals, dtype=float))


def run(detector, b: ReadingBatch):
    scores = detector.score_batch(b)
    detector.learn_batch(b, scores)
    return scores


# --- thresholds ---------------------------------------------------------------------

def test_threshold_tiers_warning_and_critical_columns():
    tiers = ThresholdTiers(ThresholdSettings(levels={
        "temperature_c": ThresholdTier(warning=50.0, critical=57.0), "tvoc_ppb": ThresholdTier(warning=2200.0)}))
    values = np.ones((3, len(MEASUREMENTS)))
    values[:, M["temperature_c"]] = [20.0, 52.0, 60.0]
    scores = tiers.score_batch(batch([0, 1, 2], values))
    assert scores.names == ("temperature_c", "temperature_c:critical", "tvoc_ppb")
    assert scores.groups == ("heat", "critical", "gas")
    fired = scores.ratio >= 1
    assert fired[:, 0].tolist() == [False, True, True]
    assert fired[:, 1].tolist() == [False, False, True]


def test_threshold_settings_refuse_bad_tiers_and_unknown_signals():
    with pytest.raises(ValueError, match="critical"):
        ThresholdTier(warning=10.0, critical=5.0)
    with pytest.raises(SettingsError, match="unknown measurements"):
        load_settings(environ={"SMOKE_DETECTION__THRESHOLDS__LEVELS": "{smoke: {warning: 1}}"})
    with pytest.raises(SettingsError, match="raise_k"):
        load_settings(environ={"SMOKE_DETECTION__FUSION__RAISE_K": "6", "SMOKE_DETECTION__FUSION__RAISE_N": "5"})


def test_every_threshold_default_cites_its_source():
    for signal, tier in DetectionSettings().thresholds.levels.items():
        assert tier.source, f"{signal}: no documented source"


# --- z-score ----------------------------------------------------------------------------

def zscore_detector(warmup=20) -> EwmaZScore:
    return EwmaZScore(ZScoreSettings(warmup_readings=warmup, alpha=0.01, signals={
        "temperature_c": ZScoreSignal(direction="up", std_floor=0.5, group="heat"),
        "raw_h2_ticks": ZScoreSignal(direction="down", std_floor=10.0, group="gas"),
        "pm2_5_ugm3": ZScoreSignal(direction="up", log=True, std_floor=0.25, group="particles",
                                   tracks_clean_air=True)}))


def quiet_values(rng, n=1):
    values = np.ones((n, len(MEASUREMENTS)))
    values[:, M["temperature_c"]] = 21 + rng.normal(0, 0.05, n)
    values[:, M["raw_h2_ticks"]] = 13000 + rng.normal(0, 4, n)
    values[:, M["pm2_5_ugm3"]] = 1.5 * rng.lognormal(0, 0.1, n)
    return values


def test_zscore_has_no_opinion_during_warmup():
    det, rng = zscore_detector(warmup=20), np.random.default_rng(0)
    for _ in range(19):
        scores = run(det, batch([0], quiet_values(rng)))
        assert np.isnan(scores.ratio).all()
    scores = run(det, batch([0], quiet_values(rng)))
    assert np.isnan(scores.ratio).all()  # the 20th reading is scored against 19
    assert np.isfinite(det.score_batch(batch([0], quiet_values(rng))).ratio).all()


def test_zscore_is_one_sided_and_uses_the_floor():
    det, rng = zscore_detector(), np.random.default_rng(1)
    for _ in range(50):
        run(det, batch([0], quiet_values(rng)))
    hot = quiet_values(rng)
    hot[0, M["temperature_c"]] = 24.5  # +3.5 C / floor 0.5 = 7
    hot[0, M["raw_h2_ticks"]] = 13100  # H2 ticks *rising* is not fire evidence
    scores = det.score_batch(batch([0], hot))
    assert scores.observed[0, 0] == pytest.approx(7.0, abs=0.3)
    assert scores.observed[0, 1] < 0
    cold = quiet_values(rng)
    cold[0, M["temperature_c"]] = 10.0
    assert det.score_batch(batch([0], cold)).ratio[0, 0] < 0


def test_zscore_baselines_are_per_sensor_and_an_incident_does_not_become_the_baseline():
    det, rng = zscore_detector(), np.random.default_rng(2)
    for _ in range(50):
        values = quiet_values(rng, 2)
        values[1, M["temperature_c"]] += 10.0  # sensor 1 lives in a warmer room
        run(det, batch([0, 1], values))
    probe = quiet_values(rng, 2)
    probe[:, M["temperature_c"]] = 31.0
    ratio = det.score_batch(batch([0, 1], probe)).ratio[:, 0]
    assert ratio[0] > 1 and ratio[1] < 1
    fire = quiet_values(rng)
    fire[0, M["temperature_c"]] = 31.0
    for _ in range(300):  # a long fire on sensor 0
        run(det, batch([0], fire))
    assert det.score_batch(batch([0], fire)).ratio[0, 0] > 1  # still anomalous after 300 readings


# --- rate of rise -------------------------------------------------------------------------

def test_rate_of_rise_smooths_rates_and_waits_for_enough_of_them():
    det = RateOfRise(RateOfRiseSettings(temperature_c_per_min=8.3, smoothing_alpha=0.25))
    features = np.zeros((1, len(FEATURE_NAMES)))
    features[0, F["temperature_c_rate_per_s"]] = np.nan  # first reading: no rate
    assert np.isnan(run(det, batch([0], features=features)).ratio).all()
    features[0, F["temperature_c_rate_per_s"]] = 0.2  # 12 C/min
    ratios = [run(det, batch([0], features=features.copy())).ratio[0, 0] for _ in range(4)]
    assert np.isnan(ratios[:3]).all() and ratios[3] == pytest.approx(12 / 8.3)
    features[0, F["temperature_c_rate_per_s"]] = 1.0  # one noisy reading moves the EWMA by a quarter
    assert run(det, batch([0], features=features)).observed[0, 0] == pytest.approx(12 + 0.25 * 48)


# --- stuck -----------------------------------------------------------------------------------

def test_stuck_fires_after_the_window_and_ignores_clean_air_zeros():
    det = StuckSignal(StuckSettings(window_readings=5, signals=["temperature_c", "pm2_5_ugm3"]))
    values = np.ones((1, len(MEASUREMENTS)))
    values[0, M["temperature_c"]] = 21.25
    values[0, M["pm2_5_ugm3"]] = 0.0  # a clean-air zero repeats legitimately
    observed = [run(det, batch([0], values.copy())).ratio[0] for _ in range(6)]
    assert [r[0] >= 1 for r in observed] == [False] * 4 + [True, True]
    assert all(r[1] == 0 for r in observed)
    values[0, M["temperature_c"]] = 21.26
    assert run(det, batch([0], values)).ratio[0, 0] < 1


# --- silent -----------------------------------------------------------------------------------

def test_silent_uses_arrival_time_and_never_moves_it_backwards():
    det = SilentSensor(SilentSettings(after_s=30.0))
    run(det, batch([0, 1], timestamps=[5.0, 5.0], arrivals=[100.0, 120.0]))
    run(det, batch([0], timestamps=[6.0], arrivals=[90.0]))  # out-of-order arrival stamp
    assert det.silent(135.0, np.array([0, 1])).tolist() == [0]
    assert det.silent(150.0, np.array([0, 1])).tolist() == [0, 1]
    with pytest.raises(ValueError, match="arrival"):
        run(det, batch([0]))


# --- model probability --------------------------------------------------------------------------

class TinyModel:
    """Test double with LoadedModel's attributes around a real fitted sklearn model."""

    version, threshold = "test-1", 0.5
    columns = (F["pm2_5_ugm3"], F["temperature_c"])

    def __init__(self) -> None:
        x = np.array([[1.0, 21.0], [2.0, 22.0], [400.0, 45.0], [800.0, 60.0]])
        self.model = LogisticRegression().fit(x, [0, 0, 1, 1])

    def select(self, features):
        return features[:, list(self.columns)]

    def predict_proba(self, x):
        return self.model.predict_proba(x)[:, 1]


def test_model_probability_without_and_with_a_model():
    features = np.zeros((2, len(FEATURE_NAMES)))
    features[:, F["pm2_5_ugm3"]] = [1.0, 900.0]
    features[:, F["temperature_c"]] = [21.0, 60.0]
    det = ModelProbability()
    assert np.isnan(det.score_batch(batch([0, 1], features=features)).ratio).all() and det.version is None
    det.model = TinyModel()
    scores = det.score_batch(batch([0, 1], features=features))
    assert (scores.ratio[:, 0] >= 1).tolist() == [False, True] and det.version == "test-1"


# --- particle size ---------------------------------------------------------------------------------

def test_particle_size_flags_coarse_aerosol_only_when_there_are_particles():
    det = ParticleSize(ParticleSizeSettings(coarse_pm2_5_pm1_0_ratio=2.2, min_pm1_0_ugm3=5.0))
    features = np.zeros((3, len(FEATURE_NAMES)))
    features[:, F["pm1_0_ugm3"]] = [50.0, 50.0, 0.5]
    features[:, F["pm2_5_pm1_0_ratio"]] = [1.25, 2.9, 2.9]
    ratio = det.score_batch(batch([0, 1, 2], features=features)).ratio[:, 0]
    assert ratio[0] < 1 <= ratio[1] and np.isnan(ratio[2])


# --- fusion --------------------------------------------------------------------------------------

def test_hysteresis_raises_k_of_n_and_clears_after_m_normal():
    fusion = HysteresisFusion(k=3, n=5, m=4)
    flags = [1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0]
    raised, cleared = [], []
    for t, flag in enumerate(flags):
        r, c = fusion.update(np.array([7]), np.array([float(t)]), np.array([bool(flag)]))
        raised += [t] * len(r)
        cleared += [t] * len(c)
    assert raised == [4] and cleared == [11]
    assert fusion.state["incident_start"][7] == 0.0  # identity: the first anomalous reading


def test_fusion_needs_two_channels_and_vetoes_steam():
    from actors.detectors.base import Scores

    def scores(**ratios):
        names = tuple(ratios)
        r = np.array([[ratios[k] for k in names]], dtype=float)
        return Scores(names, names, r, np.ones(len(names)), r)

    settings = FusionSettings()
    no = np.array([False])
    assert not fire_evidence([scores(particles=3.0)], no, settings).anomalous[0]
    assert fire_evidence([scores(particles=3.0, gas=1.2)], no, settings).anomalous[0]
    # Steam: particles do not count and one more channel is needed.
    assert not fire_evidence([scores(particles=3.0, gas=1.2, heat=1.1, humidity=2.0)], no, settings).anomalous[0]
    assert not fire_evidence([scores(particles=3.0, gas=1.2, coarse=1.3)], no, settings).anomalous[0]
    assert fire_evidence([scores(critical=1.0, humidity=2.0)], no, settings).anomalous[0]
    # Once raised, thresholds relax to hold_ratio, vetoes do not.
    yes = np.array([True])
    assert fire_evidence([scores(particles=0.6, gas=0.6)], yes, settings).anomalous[0]
    assert not fire_evidence([scores(particles=0.6, gas=0.6, coarse=0.6)], yes, settings).vetoed[0]


def test_absolute_levels_hold_only_a_narrow_band():
    """A warm room (29 C) is half of a 57 C level: a raised fire must still clear there."""
    tiers = ThresholdTiers(ThresholdSettings(levels={"temperature_c": ThresholdTier(warning=50.0, critical=57.0)}))
    values = np.ones((2, len(MEASUREMENTS)))
    values[:, M["temperature_c"]] = [29.0, 53.0]
    scores = tiers.score_batch(batch([0, 1], values))
    evidence = fire_evidence([scores], np.array([True, True]), FusionSettings(hold_ratio=0.5))
    assert evidence.anomalous.tolist() == [False, True]  # 53 C >= 0.9 x 57 C still holds


# --- base ---------------------------------------------------------------------------------------

def test_steps_keep_each_sensors_order_and_hold_a_sensor_once():
    slots = np.array([3, 1, 3, 2, 3, 1])
    seen = [slots[rows].tolist() for rows in steps(slots)]
    assert seen == [[3, 1, 2], [3, 1], [3]]
    order = [r for rows in steps(slots) for r in rows.tolist()]
    assert [r for r in order if slots[r] == 3] == [0, 2, 4]


def test_slot_arrays_refuse_state_of_the_wrong_shape():
    arrays = SlotArrays({"mean": ((3,), np.float64, np.nan)}, capacity=2)
    with pytest.raises(ValueError, match="shape"):
        arrays.import_slot(0, {"mean": [1.0, 2.0]})
    with pytest.raises(ValueError, match="missing"):
        arrays.import_slot(0, {})


def test_zscore_baseline_spoilt_during_warmup_recovers_within_tens_of_readings():
    """A fire in a sensor's first minute must not blind the detector for the rest of the hour."""
    det, rng = zscore_detector(warmup=20), np.random.default_rng(3)
    for _ in range(60):  # the sensor comes up inside a fire: PM2.5 ~ 400
        smoky = quiet_values(rng)
        smoky[0, M["pm2_5_ugm3"]] = 400.0 * rng.lognormal(0, 0.3)
        run(det, batch([0], smoky))
    recovered_after = None
    for k in range(400):  # clean air again
        run(det, batch([0], quiet_values(rng)))
        probe = quiet_values(rng)
        probe[0, M["pm2_5_ugm3"]] = 15.0  # 10x the clean baseline
        if recovered_after is None and det.score_batch(batch([0], probe)).ratio[0, 2] >= 1:
            recovered_after = k
    assert recovered_after is not None and recovered_after < 250  # minutes at 1 Hz, not the rest of the hour


def test_humidity_baseline_does_not_chase_a_fires_dry_air():
    """Only pollutants track clean air fast: humidity falling in a fire must not make normal air look 'steamy'."""
    det = EwmaZScore(ZScoreSettings(warmup_readings=20, signals={
        "humidity_pct": ZScoreSignal(direction="up", std_floor=0.5, group="humidity")}))
    rng = np.random.default_rng(4)

    def reading(rh):
        values = np.ones((1, len(MEASUREMENTS)))
        values[0, M["humidity_pct"]] = rh + rng.normal(0, 0.25)
        return batch([0], values)

    for _ in range(100):
        run(det, reading(45.0))
    for _ in range(300):  # a fire dries the air by 8 %RH for five minutes
        run(det, reading(37.0))
    assert det.score_batch(reading(45.0)).ratio[0, 0] < 1.0  # back to normal is not a steam veto


def test_zscore_spread_of_a_noisy_sensor_is_not_underestimated():
    """A sensor noisier than the floor must get at least its real spread, or its z-scores would be inflated.

    Pollutant baselines are a low expectile (they follow cleaner air faster), so the spread measured
    about them is somewhat wider than the noise: conservative, never more sensitive than the noise allows.
    """
    det = EwmaZScore(ZScoreSettings(warmup_readings=20, signals={
        "raw_h2_ticks": ZScoreSignal(direction="down", std_floor=6.0, group="gas", tracks_clean_air=True)}))
    rng = np.random.default_rng(5)
    for _ in range(3000):
        values = np.ones((1, len(MEASUREMENTS)))
        values[0, M["raw_h2_ticks"]] = 13000 + rng.normal(0, 20.0)  # noise 20 ticks, floor 6
        run(det, batch([0], values))
    assert 0.9 * 20.0 <= float(np.sqrt(det.state["var"][0, 0])) <= 1.5 * 20.0
