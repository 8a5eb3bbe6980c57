"""Lines, ratios against their targets, and the two tables (plain text and Markdown)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass
class Line:
    key: str
    label: str
    seconds: float | None  # None: the line could not be measured (see note)
    tokens: int
    note: str = ""
    load_avg: float | None = None  # 1-minute load average when the line finished (others' work too)

    @property
    def tokens_per_second(self) -> float | None:
        return self.tokens / self.seconds if self.seconds else None

    def as_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "seconds": self.seconds,
                "tokens": self.tokens, "tokens_per_second": self.tokens_per_second,
                "load_average": self.load_avg, "note": self.note}


@dataclass
class Ratio:
    name: str
    value: float | None
    target: float | None
    definition: str

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        if self.target is None:
            return "(info)"
        return "PASS" if self.value >= self.target else "FAIL"

    def as_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "target": self.target,
                "verdict": self.verdict, "definition": self.definition}


def _seconds(lines: dict[str, Line], key: str) -> float | None:
    line = lines.get(key)
    return line.seconds if line else None


def _tps(lines: dict[str, Line], key: str) -> float | None:
    line = lines.get(key)
    return line.tokens_per_second if line else None


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _saving(split1: float | None, full: float | None) -> float | None:
    ratio = _div(split1, full)
    return None if ratio is None else 1.0 - ratio


def paired_ratio(pairs: list[tuple[float, float]]) -> Ratio:
    """interpreto / raypipe over rounds run back to back: the median of each round's ratio.

    The best-of lines above take each side's best round, wherever it fell; a slow phase of
    the machine (they last minutes here) can then hit one side's rounds and not the other's.
    Within a round the two jobs run one after the other, so a phase hits both.
    """
    ratios = sorted(interp / rp for interp, rp in pairs if interp and rp)
    if not ratios:
        return Ratio("interpreto / raypipe, split 1, paired rounds", None, None,
                     "no round measured both")
    spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}" if len(ratios) > 1 else f"{ratios[0]:.2f}"
    return Ratio("interpreto / raypipe, split 1, paired rounds", statistics.median(ratios), None,
                 f"median over {len(ratios)} rounds ({spread}) of interpreto get_activations / "
                 "raypipe end to end at split 1, the two run back to back in each round, so a "
                 "slow phase of the machine hits both")


def compute_ratios(lines: dict[str, Line],
                   pairs: list[tuple[float, float]] | None = None) -> list[Ratio]:
    """The ratios and their targets; ``pairs``: (interpreto, raypipe) split-1 seconds per round."""
    ideal = _saving(_seconds(lines, "plain_block1"), _seconds(lines, "plain_full"))
    model_saving = _saving(_seconds(lines, "raypipe_block1_model"),
                           _seconds(lines, "raypipe_last_model"))
    e2e_saving = _saving(_seconds(lines, "raypipe_block1"), _seconds(lines, "raypipe_last"))
    interp = _seconds(lines, "interpreto_block1")
    interp_load = _seconds(lines, "interpreto_block1_with_load")
    rp1 = _seconds(lines, "raypipe_block1")
    return [
        Ratio("steady state vs plain loop", _div(_tps(lines, "raypipe_last_model"),
                                                 _tps(lines, "plain_full")), 0.9,
              "raypipe model-stage tokens/s at the last block / plain loop full-depth tokens/s"),
        Ratio("ideal saving (plain loops)", ideal, None,
              "saving = 1 - t_split1 / t_full, plain loop stopped after block 1 vs full depth"),
        Ratio("raypipe saving, model stage", model_saving, None,
              "1 - t_split1 / t_full with raypipe model-stage seconds"),
        Ratio("saving ratio, model stage", _div(model_saving, ideal), 0.8,
              "raypipe saving (model stage) / ideal saving"),
        Ratio("raypipe saving, end to end", e2e_saving, None,
              "1 - t_split1 / t_full with raypipe end-to-end seconds (Ray start-up included)"),
        Ratio("saving ratio, end to end", _div(e2e_saving, ideal), None,
              "raypipe saving (end to end) / ideal saving; the 0.8 target is judged on the "
              "model stage above, because Ray's start-up and the model load are fixed costs "
              "that no split point can save"),
        Ratio("interpreto / raypipe, split 1", _div(interp, rp1), 1.5,
              "interpreto get_activations seconds / raypipe end-to-end seconds at split 1"),
        *([paired_ratio(pairs)] if pairs else []),
        Ratio("interpreto / raypipe, split 1, no plan cache",
              _div(interp, _seconds(lines, "raypipe_block1_cold")), None,
              "the same with RAYPIPE_CACHE_DIR=off: raypipe's first job on a model"),
        Ratio("interpreto whole process / raypipe, split 1", _div(interp_load, rp1), None,
              "(interpreto imports + model load + get_activations) / raypipe end-to-end seconds "
              "at split 1 (both whole processes)"),
        Ratio("ceiling: interpreto / floor, split 1", _div(interp, _seconds(lines, "ray_floor_block1")),
              None, "interpreto get_activations seconds / (bare Ray job + plain loop after block 1 "
              "+ write): an estimate of the most the 1.5 target ratio could reach here"),
    ]


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _header(env: dict, tokens: int) -> str:
    limit = f"first {env['limit']}" if env.get("limit") else "all"
    best = f", best of {env['repeat']} runs per line" if env.get("repeat", 1) > 1 else ""
    return (f"rt-polarity ({limit} sentences: {env['sentences']:,}), {tokens:,} tokens, MiniLM "
            f"(6 blocks), CPU, {env['threads']} torch threads, {env['cpu_count']} cores, "
            f"Python {env['python']}, {env['date']}{best}")


def text_table(lines: list[Line], ratios: list[Ratio], env: dict, tokens: int) -> str:
    out = [_header(env, tokens), ""]
    out.append(f"{'line':<44} {'seconds':>9} {'tokens/s':>10} {'load':>5}  note")
    for line in lines:
        out.append(f"{line.label:<44} {_fmt(line.seconds, '9.2f'):>9} "
                   f"{_fmt(line.tokens_per_second, '10,.0f'):>10} {_fmt(line.load_avg, '5.1f'):>5}  "
                   f"{line.note}")
    out.append("(load: the machine's 1-minute load average as the line finished; "
               f"above {env['cpu_count']} means other work shared the cores)")
    out += ["", f"{'ratio':<44} {'value':>9} {'target':>10}  verdict  definition"]
    for r in ratios:
        target = f">= {r.target}" if r.target is not None else ""
        out.append(f"{r.name:<44} {_fmt(r.value, '9.3f'):>9} {target:>10}  {r.verdict:<7}  "
                   f"{r.definition}")
    return "\n".join(out)


def markdown_table(lines: list[Line], ratios: list[Ratio], env: dict, tokens: int) -> str:
    out = [f"_{_header(env, tokens)}_", "", "| line | seconds | tokens/s |", "|---|---:|---:|"]
    for line in lines:
        note = f" ({line.note})" if line.note else ""
        out.append(f"| {line.label}{note} | {_fmt(line.seconds, '.2f')} | "
                   f"{_fmt(line.tokens_per_second, ',.0f')} |")
    out += ["", "| ratio | value | target | definition |", "|---|---:|---:|---|"]
    for r in ratios:
        target = f"≥ {r.target}" if r.target is not None else "—"
        shown = _fmt(r.value, ".2f")
        if r.verdict in ("PASS", "FAIL"):
            shown += f" ({r.verdict.lower()})"
        out.append(f"| {r.name} | {shown} | {target} | {r.definition} |")
    return "\n".join(out)
