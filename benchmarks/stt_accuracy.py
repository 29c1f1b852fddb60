"""Word error rate and speed of the embedded recognizers, on wideband and on phone audio.

    python benchmarks/stt_accuracy.py                       # every candidate, every sentence
    python benchmarks/stt_accuracy.py --limit 8 --candidates tiny.en,base

Callers are synthesized: each sentence (names, numbers, street addresses, e-mail addresses, the
things a phone agent must get right) is spoken by espeak-ng and by the bundled Piper voice
(prosody noise off, so runs repeat). Each recording is heard two ways:

- **16 kHz**: the synthesized audio resampled to 16 kHz (the browser and terminal path).
- **8 kHz µ-law**: resampled to 8 kHz (soxr's low-pass stands in for the phone network's
  band limit), G.711 µ-law encoded and decoded with `voxline.audio.codecs`, then brought back to
  16 kHz by one `StreamResampler` stream, exactly as a Media Streams call's `Listener` does.

Candidates are written `MODEL[/OPTION...]`: `tiny.en`, `base`; `/beam5` beam search of 5
instead of greedy; `/hints` the agent's `stt_hints` (`HINTS`: the business's own names, as an
agent would list them) as the prompt; `/nots` text-only decoding without timestamps; `/full`
Whisper's whole 30 s encoder window, `/fit` one fitted to the utterance
(`voxline.providers.stt.whisper_window`; the default with a beam, as in the specs);
`/up=QUALITY` another soxr quality for the 8 kHz -> 16 kHz step (the pipeline uses HQ).

Word error rate normalization, applied to reference and transcript alike, so a spelling choice
is never an error: lowercase; `@` -> "at" and a dot inside a word -> "dot" (e-mail addresses);
`$5.50` -> "5 dollars and 50 cents"; ordinals as cardinals ("fourth", "4th" -> 4); common
abbreviations spelled out (st -> street, dr -> doctor); other punctuation dropped (hyphens
and colons split words, and so does a dot between digits: "7:30", "7.30" and "seven thirty"
agree); then **numbers to digits, one token per digit**: number words are parsed ("twelve
thirty four" -> 12 34, "one hundred and five" -> 105, "oh" between numbers -> 0) and every
digit run is split into single digits. So "four one five" and "415" are both `4 1 5`, and a
wrong digit in a phone number costs one error, as it does for the caller. WER =
(substitutions + deletions + insertions) / reference tokens, summed over all sentences of a
condition.

Real-time factor (RTF) is transcription seconds / audio seconds (lower is faster), measured with
the model loaded and warmed, one utterance at a time on the model's own thread, as calls use it;
it depends on the CPU and its load, so the script prints the load average with the results. CPU
is the process's CPU seconds (all threads) per audio second: the work itself, which moves much
less than wall time when other processes compete for the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxline.audio.codecs import mulaw_decode, mulaw_encode
from voxline.audio.resample import Quality, StreamResampler, resample
from voxline.audio.wav import read_wav
from voxline.providers.stt.whisper import Decoding, WhisperSTT, create_whisper_stt, hint_prompt

RATE = 16000
PHONE_RATE = 8000
PAD = 0.3  # seconds of silence each side: the VAD's pre-roll and the turn's trailing silence

GENERIC_PROMPT = "Phone call. 415-555-0192, 12 Oak Street, anna.lee@gmail.com."
HINTS = ["Maple Grove Dental", "Doctor Okafor", "Doctor Lindqvist", "Birchwood Lane", "Voxline"]

SENTENCES = [
    "My name is Maria Gonzalez and my date of birth is March fourth, nineteen eighty two.",
    "You can reach me at four one five, five five five, zero one nine two.",
    "My email is john dot smith at gmail dot com.",
    "I live at twelve thirty four Maple Avenue, apartment five.",
    "I'd like to book an appointment with Doctor Okafor next Tuesday.",
    "The order number is seven seven three nine two one.",
    "Please send the invoice to accounts at acme dot com.",
    "My zip code is nine four one zero three.",
    "This is David Chen calling about my prescription refill.",
    "Can you confirm my appointment at Maple Grove Dental on Friday at three thirty?",
    "My account number is eight eight two four six one zero five.",
    "The package should go to five hundred Market Street, suite two hundred.",
    "Is Doctor Lindqvist available on the twenty second?",
    "Write it to sarah underscore jones at outlook dot com.",
    "I was charged forty nine dollars twice on my last bill.",
    "My callback number is six five zero, two three four, eight eight one one.",
    "The meeting is at nine fifteen in room three oh two.",
    "My last name is Patel, spelled P A T E L.",
    "We are at eighteen Birchwood Lane, Springfield.",
    "Please cancel my reservation for four people on Saturday.",
    "The confirmation code is two seven four one.",
    "I'm calling for Emily Johnson, she's my daughter.",
    "My new address is forty two Oak Street, Portland, Oregon.",
    "Send the report to mike at voxline dot io before noon.",
    "My policy number is three one four one five nine two six.",
    "I need a taxi to the airport at six in the morning.",
    "Our office is on the fourth floor at one hundred and five Main Street.",
    "The total came to one hundred twenty dollars and fifty cents.",
    "Could you transfer me to the billing department, please?",
    "My husband Robert Miller will pick up the order.",
    "Please ship it to seven eleven Elm Road, Austin, Texas.",
    "My email address is anna dot kowalski at yahoo dot com.",
    "I would like two large pizzas and a bottle of water.",
    "The card ends in four four three two.",
    "My flight from Chicago lands at ten forty five tonight.",
    "I want to move my appointment from Monday to Wednesday.",
    "This is Thomas Nguyen, I called yesterday about the leak.",
    "The serial number on the device is nine zero eight one seven.",
    "We need a table for six at seven thirty this evening.",
    "My phone number is two one two, five five five, seven six four three.",
    "Can someone call me back at the office before five?",
    "I paid two hundred and fifteen dollars by credit card.",
    "The apartment is on Birchwood Lane near the school.",
    "Please update my email to lisa at maplegrove dot org.",
]

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
_ORDINALS = {
    "first": "one", "second": "two", "third": "three", "fourth": "four", "fifth": "five",
    "sixth": "six", "seventh": "seven", "eighth": "eight", "ninth": "nine", "tenth": "ten",
    "twelfth": "twelve", "twentieth": "twenty", "thirtieth": "thirty",
}  # fmt: skip
_SPELLED = {
    "st": "street", "ave": "avenue", "rd": "road", "dr": "doctor", "mr": "mister",
    "mrs": "missus", "ok": "okay", "e-mail": "email", "im": "i'm", "i'd": "id",
}  # fmt: skip


def _numbers_to_digits(tokens: list[str]) -> list[str]:
    """Number words to digit strings ("twelve thirty four" -> "12", "34"; "one hundred and
    five" -> "105"); other tokens are kept."""
    out: list[str] = []
    i = 0

    def is_number(k: int) -> bool:
        return 0 <= k < len(tokens) and (
            tokens[k] in _UNITS or tokens[k] in _TENS or tokens[k].isdigit()
        )

    while i < len(tokens):
        token = tokens[i]
        if token == "oh" and is_number(i - 1) and is_number(i + 1):
            out.append("0")
            i += 1
            continue
        if token not in _UNITS and token not in _TENS:
            out.append(token)
            i += 1
            continue
        value, i = _small(tokens, i)
        if i < len(tokens) and tokens[i] == "hundred" and value < 10:
            value *= 100
            i += 1
            if i + 1 < len(tokens) and tokens[i] == "and" and tokens[i + 1] in {**_UNITS, **_TENS}:
                i += 1
            if i < len(tokens) and (tokens[i] in _UNITS or tokens[i] in _TENS):
                rest, i = _small(tokens, i)
                value += rest
        out.append(str(value))
    return out


def _small(tokens: list[str], i: int) -> tuple[int, int]:
    """A number below 100 starting at `i`: a tens word with an optional unit, or one unit."""
    if tokens[i] in _TENS:
        value = _TENS[tokens[i]]
        if i + 1 < len(tokens) and tokens[i + 1] in _UNITS and 0 < _UNITS[tokens[i + 1]] < 10:
            return value + _UNITS[tokens[i + 1]], i + 2
        return value, i + 1
    return _UNITS[tokens[i]], i + 1


def normalize(text: str) -> list[str]:
    """The tokens WER is counted on (see the module docstring)."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"\$(\d[\d,]*)\.(\d\d)\b", r"\1 dollars and \2 cents", text)
    text = re.sub(r"\$(\d[\d,]*)", r"\1 dollars", text)
    text = re.sub(r"(\d),(\d)", r"\1\2", text)
    text = re.sub(r"(\w)@(\w)", r"\1 at \2", text)
    text = re.sub(r"(\d)\.(?=\d)", r"\1 ", text)  # "3.30": Whisper's way of writing 3:30
    text = re.sub(r"(\w)\.(?=\w)", r"\1 dot ", text)
    text = text.replace("&", " and ").replace("%", " percent").replace("_", " underscore ")
    text = re.sub(r"[-:/]", " ", text)
    text = re.sub(r"[^a-z0-9' ]", " ", text)
    tokens = [_SPELLED.get(t, t).replace("'", "") for t in text.split()]
    tokens = [_ORDINALS.get(t, t) for t in tokens]
    tokens = [re.sub(r"^(\d+)(st|nd|rd|th)$", r"\1", t) for t in tokens]
    tokens = [t for t in tokens if t]
    digits: list[str] = []
    for token in _numbers_to_digits(tokens):
        if token.isdigit():
            digits.extend(token)
        else:
            digits.append(token)
    return digits


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions, deletions, insertions all cost 1)."""
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref != hyp))
    return row[-1]


@dataclass(frozen=True)
class Clip:
    sentence: str
    voice: str
    pcm: npt.NDArray[np.int16]
    rate: int


def espeak_clips(sentences: list[str]) -> list[Clip]:
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed (apt-get install espeak-ng)")
    clips = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "line.wav"
        for sentence in sentences:
            subprocess.run(["espeak-ng", "-w", str(path), sentence], check=True)
            voice = read_wav(path)
            clips.append(Clip(sentence, "espeak", voice.pcm.copy(), voice.sample_rate))
    return clips


async def piper_clips(sentences: list[str]) -> list[Clip]:
    from voxline.providers.tts.piper import create_piper_tts

    tts = create_piper_tts(variation=0.0)
    clips = []
    for sentence in sentences:
        chunks = [chunk.pcm async for chunk in tts.synthesize(sentence)]
        clips.append(Clip(sentence, "piper", np.concatenate(chunks), tts.sample_rate))
    return clips


def wideband(clip: Clip) -> npt.NDArray[np.int16]:
    return _padded(resample(clip.pcm, clip.rate, RATE))


def phone(clip: Clip, quality: Quality = "HQ") -> npt.NDArray[np.int16]:
    """The clip as a Media Streams call's recognizer gets it (see the module docstring)."""
    narrow = resample(clip.pcm, clip.rate, PHONE_RATE)
    line = mulaw_decode(mulaw_encode(narrow))
    upsampler = StreamResampler(PHONE_RATE, RATE, quality=quality)
    return _padded(np.concatenate([upsampler.process(line), upsampler.flush()]))


def _padded(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    silence = np.zeros(round(PAD * RATE), np.int16)
    return np.concatenate([silence, pcm, silence])


@dataclass
class Score:
    errors: int = 0
    words: int = 0
    audio: float = 0.0
    seconds: float = 0.0
    cpu: float = 0.0  # process CPU seconds, all threads: what the work costs, whatever the load
    worst: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def wer(self) -> float:
        return self.errors / max(self.words, 1)

    @property
    def rtf(self) -> float:
        return self.seconds / max(self.audio, 1e-9)

    @property
    def cpu_rtf(self) -> float:
        return self.cpu / max(self.audio, 1e-9)


@dataclass(frozen=True)
class Candidate:
    name: str
    model: str
    decoding: Decoding
    upsample: Quality

    @classmethod
    def parse(cls, name: str) -> Candidate:
        model, *options = name.split("/")
        beam, prompt, timestamps, quality, fitted = 1, None, True, "HQ", None
        for option in options:
            if re.fullmatch(r"beam\d+", option):
                beam = int(option[4:])
            elif option == "hints":
                prompt = hint_prompt(HINTS)
            elif option == "generic":
                prompt = GENERIC_PROMPT
            elif option == "nots":
                timestamps = False
            elif option in ("full", "fit"):
                fitted = option == "fit"
            elif option.startswith("up=") and option[3:] in ("QQ", "LQ", "MQ", "HQ", "VHQ"):
                quality = option[3:]
            else:
                raise SystemExit(f"unknown option {option!r} in candidate {name!r}")
        fitted = beam > 1 if fitted is None else fitted  # as `local:MODEL#beam=N` chooses
        decoding = Decoding(beam_size=beam, prompt=prompt, timestamps=timestamps, fitted=fitted)
        return cls(name, model, decoding, quality)  # type: ignore[arg-type]


async def score(stt: WhisperSTT, clips: list[Clip], audio: list[npt.NDArray[np.int16]]) -> Score:
    result = Score()
    for clip, pcm in zip(clips, audio, strict=True):
        started, cpu = time.perf_counter(), time.process_time()
        transcript = await stt.transcribe(pcm)
        result.seconds += time.perf_counter() - started
        result.cpu += time.process_time() - cpu
        result.audio += len(pcm) / RATE
        reference, hypothesis = normalize(clip.sentence), normalize(transcript.text)
        errors = edit_distance(reference, hypothesis)
        result.errors += errors
        result.words += len(reference)
        result.worst.append((errors, clip.voice, transcript.text))
    return result


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--candidates",
        default="tiny.en,tiny.en/beam5,base,base/beam5,base/hints,base/nots",
        help="comma-separated MODEL[/OPTION...] (see the docstring)",
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N sentences")
    parser.add_argument("--voices", default="espeak,piper", help="espeak, piper or both")
    parser.add_argument("--show", type=int, default=0, help="print the N worst transcripts")
    args = parser.parse_args()
    sentences = SENTENCES[: args.limit] if args.limit else SENTENCES
    voices = args.voices.split(",")
    clips = (espeak_clips(sentences) if "espeak" in voices else []) + (
        await piper_clips(sentences) if "piper" in voices else []
    )
    words = sum(len(normalize(s)) for s in sentences)
    print(f"{len(sentences)} sentences x {voices} = {len(clips)} clips, {words} reference tokens")
    print(f"start: {load_average()}")
    wide = [wideband(clip) for clip in clips]
    print(
        f"{'candidate':<22} {'WER 16k':>8} {'WER 8k':>8} {'RTF 16k':>8} {'RTF 8k':>8}"
        f" {'CPU 16k':>8} {'CPU 8k':>8}  load"
    )
    for name in args.candidates.split(","):
        candidate = Candidate.parse(name.strip())
        stt = create_whisper_stt(candidate.model, decoding=candidate.decoding)
        stt.load()
        await stt.transcribe(wide[0])  # the first call pays one-off set-up, not the score
        narrow = [phone(clip, candidate.upsample) for clip in clips]
        high, low = await score(stt, clips, wide), await score(stt, clips, narrow)
        print(
            f"{candidate.name:<22} {high.wer:8.1%} {low.wer:8.1%} {high.rtf:8.3f} {low.rtf:8.3f}"
            f" {high.cpu_rtf:8.3f} {low.cpu_rtf:8.3f}  {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        for errors, voice, text in sorted(low.worst, reverse=True)[: args.show]:
            print(f"    8k {voice:<6} {errors} errors: {text}")
    print(f"end: {load_average()}")


if __name__ == "__main__":
    asyncio.run(main())
