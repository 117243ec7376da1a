"""Voice activity data with ground truth, made here: espeak-ng speech mixed into noise.

Each clip is silence and spoken phrases (espeak-ng, several voices and speeds, resampled
to 16 kHz) with noise added at a chosen SNR. A 32 ms frame (512 samples, Silero's chunk)
is speech in the ground truth when the clean speech in it is louder than 1/30 of the
clip's speech level, measured before the noise is added. Silero VAD runs frame by frame
with its recurrent state and 64 samples of context, as silero_vad's own ONNX wrapper does.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from scipy.signal import resample_poly

RATE = 16000
FRAME = 512
CONTEXT = 64
PHRASES = (
    "the conveyor on line three has stopped",
    "please check the valve at station twelve",
    "pallet forty two is ready for shipping",
    "camera seven reports a blocked lane",
    "move the red boxes to the loading dock",
    "temperature in zone four is rising",
    "start the next batch in ten minutes",
    "the sensor on the left belt needs cleaning",
)
VOICES = ("en", "en-us", "en+f3", "en+m3", "en-gb-x-rp")


@dataclass(frozen=True)
class Clip:
    audio: npt.NDArray[np.float32]  # mono 16 kHz, length a multiple of FRAME
    speech: npt.NDArray[np.bool_]  # ground truth per frame


def _espeak(text: str, voice: str, speed: int) -> npt.NDArray[np.float32]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("VAD data needs espeak-ng; run hack/install-deps.sh")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(out), text],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        with wave.open(str(out)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = pcm.astype(np.float32) / 32768.0
    g = gcd(RATE, rate)
    return np.asarray(resample_poly(audio, RATE // g, rate // g), dtype=np.float32)


def make_clips(count: int, seed: int = 0, snr_db: float = 10.0, phrases: int = 3) -> list[Clip]:
    rng = random.Random(seed)
    noise_rng = np.random.default_rng(seed)
    clips = []
    for _ in range(count):
        parts = [np.zeros(int(RATE * rng.uniform(0.3, 1.0)), np.float32)]
        for _ in range(phrases):
            voice, speed = rng.choice(VOICES), rng.randrange(140, 200)
            parts.append(_espeak(rng.choice(PHRASES), voice, speed) * rng.uniform(0.3, 0.9))
            parts.append(np.zeros(int(RATE * rng.uniform(0.4, 1.5)), np.float32))
        clean = np.concatenate(parts)
        clean = np.pad(clean, (0, -len(clean) % FRAME))
        frames = clean.reshape(-1, FRAME)
        rms = np.sqrt(np.mean(frames**2, axis=1))
        level = np.sqrt(np.mean(clean[np.abs(clean) > 1e-4] ** 2))
        speech = rms > level / 30
        white = noise_rng.normal(0, 1, len(clean))
        brown = np.cumsum(noise_rng.normal(0, 1, len(clean)))
        brown -= np.convolve(brown, np.ones(400) / 400, mode="same")  # keep it from drifting
        noise = white / white.std() + brown / brown.std()
        noise *= level / (noise.std() * 10 ** (snr_db / 20))
        clips.append(Clip((clean + noise).astype(np.float32), speech))
    return clips


def stream(session: ort.InferenceSession, audio: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    """Speech probability per frame, with Silero's recurrent state and context carried."""
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(CONTEXT, np.float32)
    sr = np.array(RATE, dtype=np.int64)
    probs = []
    for chunk in audio.reshape(-1, FRAME):
        x = np.concatenate([context, chunk])[None]
        out, state = session.run(None, {"input": x, "state": state, "sr": sr})
        probs.append(float(out.reshape(-1)[0]))
        context = chunk[-CONTEXT:]
    return np.asarray(probs)


def teacher_rows(
    session: ort.InferenceSession, clips: Sequence[Clip], every: int = 1
) -> dict[str, npt.NDArray[Any]]:
    """Independent model calls for calibration and the gate: each frame with the state and
    context the fp32 model had reached there (every `every`-th frame)."""
    xs, states = [], []
    sr = np.array(RATE, dtype=np.int64)
    for clip in clips:
        state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros(CONTEXT, np.float32)
        for i, chunk in enumerate(clip.audio.reshape(-1, FRAME)):
            x = np.concatenate([context, chunk])[None]
            if i % every == 0:
                xs.append(x[0])
                states.append(state)
            _, state = session.run(None, {"input": x, "state": state, "sr": sr})
            context = chunk[-CONTEXT:]
    return {
        "input": np.stack(xs),
        "state": np.stack(states),
        "sr": np.full(len(xs), RATE, dtype=np.int64),
    }


def frame_f1(
    truth: npt.NDArray[np.bool_], probs: npt.NDArray[Any], threshold: float = 0.5
) -> float:
    said = np.asarray(probs) >= threshold
    tp = float(np.sum(said & truth))
    fp = float(np.sum(said & ~truth))
    fn = float(np.sum(~said & truth))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def clips_f1(session: ort.InferenceSession, clips: Sequence[Clip]) -> float:
    truth = np.concatenate([c.speech for c in clips])
    probs = np.concatenate([stream(session, c.audio) for c in clips])
    return frame_f1(truth, probs)
