"""The teaching lesson (``notebooks/05_teaching.ipynb``) as data and functions.

The lesson explains :class:`pdcr_lab.faithfulness.GateOracle` on the planted ``gate`` task, whose
cause (a red marker in one corner) is known by construction. It has four exercises
(:data:`EXERCISES`); in each, the student stores a computed value in ``answer_<n>`` and

* :func:`check` says whether it is right ("not answered yet", "right", or "not quite" with a hint
  that does not give the answer away);
* :func:`answer_button` shows the answer only when clicked, and :func:`show_answer` shows it at
  once (without widgets). The answer is written by :func:`answer_text` from the lesson's results
  when asked for, so it is in no cell of the notebook and in no output before the click.

Every number in an answer comes from :class:`LessonFacts`, which :func:`lesson_facts` computes from
the lesson's result datasets; answers branch on the results (maps that agree are not explained as
different; a standard error of 0 gives no ratio) and never print NaN.

The lesson's helpers on the task: :func:`planted_blocks` (where the marker and the distractor are),
:func:`marker_bank` (a bank in which half the blocks are red markers, so that the marker's draws
differ often) and :func:`red_blocks` (how many blocks of a bank would open the oracle's gate).

Examples
--------
>>> ds = pdcr_lab.schema.empty_effects(grid=(8, 8), block=8)
>>> ds["ate"][0, 7] = -100.0                      # only the marker block supports the RoI
>>> facts = lesson_facts((0, 7), (7, 0), natural_map=ds)
>>> check(1, None, facts).status, check(1, (0, 7), facts).status, check(1, (7, 0), facts).status
('not answered yet', 'right', 'not quite')
>>> print(answer_text(1, facts).splitlines()[0])
**The marker block (0, 7)** supports the RoI most: ATE = -100.0 DSC points.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr

from .banks import PatchBank
from .checks import check_choice, check_int, describe
from .schema import validate

__all__ = [
    "EXERCISES",
    "Exercise",
    "LessonFacts",
    "Verdict",
    "answer_button",
    "answer_text",
    "check",
    "lesson_facts",
    "marker_bank",
    "planted_blocks",
    "red_blocks",
    "show_answer",
]

Block = tuple[int, int]
Status = Literal["not answered yet", "right", "not quite"]

#: Redness R - (G + B) / 2 above which a corner block opens the oracle's gate (GateOracle's threshold).
GATE_REDNESS = 0.3
#: A measured ratio of standard errors "agrees" with the expected one within this relative distance.
AGREEMENT = 0.25
#: Largest accepted distance between a student's ratio and the measured one (rounding to 0.1 passes).
RATIO_TOLERANCE = 0.05


# -- the facts the answers are written from ------------------------------------------------------


@dataclass(frozen=True)
class LessonFacts:
    """The numbers the lesson's answers are written from (made by :func:`lesson_facts`).

    The fields of an exercise are None when the results it needs were not given.

    Parameters
    ----------
    marker, distractor : (int, int)
        (row, col) of the marker block and of the blue distractor block.
    given : tuple of str
        The results passed to :func:`lesson_facts` (names of its keyword arguments).
    strongest : (int, int)
        Exercise 1: (row, col) of the block with the most negative ATE of the natural map.
    marker_ate, distractor_ate : float
        Exercise 1: ATE of the marker and of the distractor in the natural map (DSC points).
    other_effects : int
        Exercise 1: blocks other than the marker with a non-zero ATE in the natural map.
    zero_marker_ate : float
        Exercise 2: ATE of the marker in the zero map (DSC points).
    differ : int
        Exercise 2: blocks with an effect in one of the natural and zero maps but not in the other.
    coarse, tau : int, float
        Exercise 3: S (coarse draws per block) and tau (DSC points) of the screened map.
    forwards_screened, forwards_unscreened : int
        Exercise 3: forward passes with and without screening.
    saved, saved_percent : int, float
        Exercise 3: their difference, and its share of the unscreened count in percent.
    screened_out, candidates : int
        Exercise 3: blocks screened out, of the candidate blocks (those outside the RoI).
    missed : int
        Exercise 3: blocks with an effect without screening that screening set to 0.
    marker_kept : bool
        Exercise 3: whether the marker survived screening (non-zero ATE in the screened map).
    n, n_more : int
        Exercise 4: draws of the marker block in the two maps (N and, e.g., 4N).
    growth, expected_ratio : float
        Exercise 4: n_more / n, and its square root, the factor by which the standard error should shrink.
    se_n, se_more : float
        Exercise 4: standard error of the marker's ATE with n and with n_more draws (DSC points).
    ratio : float
        Exercise 4: se_n / se_more; None when either is 0 (the draws never differed: no ratio exists).
    """

    marker: Block
    distractor: Block
    given: tuple[str, ...] = ()
    strongest: Block | None = None
    marker_ate: float | None = None
    distractor_ate: float | None = None
    other_effects: int | None = None
    zero_marker_ate: float | None = None
    differ: int | None = None
    coarse: int | None = None
    tau: float | None = None
    forwards_screened: int | None = None
    forwards_unscreened: int | None = None
    saved: int | None = None
    saved_percent: float | None = None
    screened_out: int | None = None
    candidates: int | None = None
    missed: int | None = None
    marker_kept: bool | None = None
    n: int | None = None
    n_more: int | None = None
    growth: float | None = None
    expected_ratio: float | None = None
    se_n: float | None = None
    se_more: float | None = None
    ratio: float | None = None

    def numbers(self) -> dict[str, float]:
        """Every number of the facts by field name (a block's row and col as ``<field>[0]``/``[1]``).

        Examples
        --------
        >>> LessonFacts((0, 7), (7, 0)).numbers()
        {'marker[0]': 0.0, 'marker[1]': 7.0, 'distractor[0]': 7.0, 'distractor[1]': 0.0}
        """
        out: dict[str, float] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple) and field.name != "given":
                out.update({f"{field.name}[{k}]": float(v) for k, v in enumerate(value)})
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out[field.name] = float(value)
        return out


def _block(name: str, value: Any) -> Block:
    pair = tuple(np.asarray(value).ravel().tolist()) if not isinstance(value, tuple) else value
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{name} must be a (row, col) pair of integers, got {value!r}")
    return int(pair[0]), int(pair[1])


def _map(name: str, ds: Any) -> xr.Dataset:
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"{name} must be an effects xarray.Dataset, got {describe(ds)}")
    validate(ds)
    if ds.ate.dims != ("block_y", "block_x"):
        raise ValueError(f"{name} must hold one map (dims block_y, block_x), got ate dims {ds.ate.dims}")
    for variable in ("ate", "stderr"):
        if not np.isfinite(ds[variable].values).all():
            raise ValueError(f"{name}.{variable} holds NaN or Inf values: the lesson's answers need finite results")
    return ds


def _at(ds: xr.Dataset, variable: str, block: Block, name: str) -> float:
    rows, cols = ds.sizes["block_y"], ds.sizes["block_x"]
    if not (0 <= block[0] < rows and 0 <= block[1] < cols):
        raise ValueError(f"block {block} is outside the {rows} x {cols} grid of {name}")
    return float(ds[variable].values[block])


def _count(mask: Any) -> int:
    return int(np.asarray(mask).sum())


def _natural_facts(ds: xr.Dataset, marker: Block, distractor: Block) -> dict[str, Any]:
    marker_ate, distractor_ate = _at(ds, "ate", marker, "natural_map"), _at(ds, "ate", distractor, "natural_map")
    ate = ds.ate.values
    effect = ate != 0
    effect[marker] = False
    return dict(
        strongest=tuple(int(v) for v in np.unravel_index(int(np.argmin(ate)), ate.shape)),
        marker_ate=marker_ate,
        distractor_ate=distractor_ate,
        other_effects=_count(effect),
    )


def _zero_facts(natural: xr.Dataset, zero: xr.Dataset, marker: Block) -> dict[str, Any]:
    if zero.ate.shape != natural.ate.shape:
        raise ValueError(f"zero_map has a {zero.ate.shape} grid, natural_map a {natural.ate.shape} grid; "
                         "expected the same")
    return dict(zero_marker_ate=_at(zero, "ate", marker, "zero_map"),
                differ=_count((natural.ate.values != 0) != (zero.ate.values != 0)))


def _screening_facts(screened: xr.Dataset, unscreened: xr.Dataset, marker: Block) -> dict[str, Any]:
    for name, ds in (("natural_map", screened), ("unscreened", unscreened)):
        if "coarse" not in ds.attrs or "tau" not in ds.attrs:
            raise ValueError(f"{name} has no 'coarse' and 'tau' attrs; expected a PdCR map (pdcr_lab.explain)")
    if int(unscreened.attrs["coarse"]) != 0:
        raise ValueError("unscreened must be computed without screening (coarse=0), "
                         f"got coarse={unscreened.attrs['coarse']}")
    if unscreened.ate.shape != screened.ate.shape:
        raise ValueError(f"unscreened has a {unscreened.ate.shape} grid, natural_map a {screened.ate.shape} grid")
    with_s, without = int(screened.forwards), int(unscreened.forwards)
    if without <= 0:
        raise ValueError(f"unscreened.forwards={without}; expected a positive number of forward passes")
    return dict(
        coarse=int(screened.attrs["coarse"]),
        tau=float(screened.attrs["tau"]),
        forwards_screened=with_s,
        forwards_unscreened=without,
        saved=without - with_s,
        saved_percent=100.0 * (without - with_s) / without,
        screened_out=_count(screened.screened.values),
        candidates=_count(~screened.roi_block.values),
        missed=_count((unscreened.ate.values != 0) & (screened.ate.values == 0)),
        marker_kept=bool(screened.ate.values[marker] != 0),
    )


def _uncertainty_facts(few: xr.Dataset, more: xr.Dataset, marker: Block) -> dict[str, Any]:
    n = int(_at(few, "n_draws", marker, "few_draws"))
    n_more = int(_at(more, "n_draws", marker, "more_draws"))
    if not 0 < n < n_more:
        raise ValueError(f"the marker has n={n} draws in few_draws and {n_more} in more_draws; "
                         "expected more_draws to use more draws (e.g. 4N)")
    se_n, se_more = _at(few, "stderr", marker, "few_draws"), _at(more, "stderr", marker, "more_draws")
    return dict(n=n, n_more=n_more, growth=n_more / n, expected_ratio=math.sqrt(n_more / n), se_n=se_n,
                se_more=se_more, ratio=se_n / se_more if se_n > 0 and se_more > 0 else None)


def lesson_facts(
    marker: Any,
    distractor: Any,
    *,
    natural_map: xr.Dataset | None = None,
    zero_map: xr.Dataset | None = None,
    unscreened: xr.Dataset | None = None,
    few_draws: xr.Dataset | None = None,
    more_draws: xr.Dataset | None = None,
) -> LessonFacts:
    """The facts of the lesson's results that the exercises are checked and answered with.

    Give the results computed so far: each exercise needs only its own (:attr:`Exercise.needs`).

    Parameters
    ----------
    marker, distractor : (int, int)
        (row, col) of the marker block and of the blue distractor block (:func:`planted_blocks`).
    natural_map : xarray.Dataset, optional
        PdCR map with natural occluders and screening (exercises 1 to 3).
    zero_map : xarray.Dataset, optional
        The same map with zero occluders (exercise 2).
    unscreened : xarray.Dataset, optional
        The natural map without screening (``coarse=0``; exercise 3).
    few_draws, more_draws : xarray.Dataset, optional
        Maps with N and with more (e.g. 4N) draws per block (exercise 4).

    Returns
    -------
    LessonFacts

    Raises
    ------
    ValueError
        A block outside the grid, a map with NaN values, an unscreened map computed with screening,
        or `more_draws` with no more draws than `few_draws`.

    Examples
    --------
    >>> few = pdcr_lab.schema.empty_effects(grid=(8, 8), block=8)
    >>> more = few.copy(deep=True)
    >>> few["n_draws"][:], more["n_draws"][:] = 8, 32
    >>> few["stderr"][0, 7], more["stderr"][0, 7] = 18.0, 9.0
    >>> facts = lesson_facts((0, 7), (7, 0), few_draws=few, more_draws=more)
    >>> facts.growth, facts.expected_ratio, facts.ratio
    (4.0, 2.0, 2.0)
    """
    marker, distractor = _block("marker", marker), _block("distractor", distractor)
    given = {k: _map(k, v) for k, v in (("natural_map", natural_map), ("zero_map", zero_map),
                                          ("unscreened", unscreened), ("few_draws", few_draws),
                                          ("more_draws", more_draws)) if v is not None}
    facts: dict[str, Any] = {}
    if "natural_map" in given:
        facts.update(_natural_facts(given["natural_map"], marker, distractor))
        if "zero_map" in given:
            facts.update(_zero_facts(given["natural_map"], given["zero_map"], marker))
        if "unscreened" in given:
            facts.update(_screening_facts(given["natural_map"], given["unscreened"], marker))
    if "few_draws" in given and "more_draws" in given:
        facts.update(_uncertainty_facts(given["few_draws"], given["more_draws"], marker))
    return LessonFacts(marker, distractor, tuple(given), **facts)


# -- formatting: every number of an answer goes through these -------------------------------------


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"cannot write {value} into an answer: the lesson's results must be finite")
    return value


def _points(value: float, digits: int = 1) -> str:
    """A number with `digits` decimals (DSC points: one), never "-0.0"; refuses NaN and Inf."""
    return f"{round(_finite(value), digits) + 0.0:.{digits}f}"


def _plain(value: float) -> str:
    """A number with three significant digits and no trailing zeros (4.0 -> "4"); refuses NaN and Inf."""
    return f"{_finite(value):.3g}"


def _blocks(count: int, *, verb: bool = True) -> str:
    """ "1 block has", "2 blocks have" (or without the verb)."""
    words = "block has" if count == 1 else "blocks have"
    return f"{count} {words if verb else words.split()[0]}"


def _where(block: Block) -> str:
    return f"({block[0]}, {block[1]})"


# -- the answers ----------------------------------------------------------------------------------


def _answer_1(f: LessonFacts) -> str:
    if f.strongest == f.marker:
        lines = [(f"**The marker block {_where(f.marker)}** supports the RoI most: "
                  f"ATE = {_points(f.marker_ate)} DSC points."),
                 ("Negative (red) means that replacing the block lowers the RoI's Dice: without a red corner the "
                  "gate closes and the blob is no longer segmented.")]
    else:
        lines = [(f"The most negative ATE is at block {_where(f.strongest)}, not at the marker {_where(f.marker)} "
                  f"(ATE there = {_points(f.marker_ate)} DSC points)."),
                 ("For this oracle the marker should win: check that the map explains an image with a marker and "
                  "an RoI on the blob.")]
    if f.other_effects == 0:
        lines.append("No other block has an effect: inside the RoI the oracle looks only at each pixel's brightness "
                     "and at the gate, and only the marker's corner can change the gate.")
    else:
        lines.append(f"Besides the marker, {_blocks(f.other_effects)} an effect: hover over the map to see "
                     "where, and ask which rule of the model could explain them.")
    if f.distractor_ate == 0:
        lines.append(f"The blue distractor {_where(f.distractor)} has no effect (ATE = {_points(f.distractor_ate)}): "
                     "blue has a negative redness, so the gate ignores it. A map that highlighted it would be "
                     "unfaithful to the model, however eye-catching the blue corner is.")
    else:
        lines.append(f"The blue distractor {_where(f.distractor)} has an effect (ATE = "
                     f"{_points(f.distractor_ate)} DSC points) although the planted rule ignores blue: this model "
                     "does not follow the rule exactly.")
    return "\n\n".join(lines)


def _answer_2(f: LessonFacts) -> str:
    if f.differ == 0:
        lines = ["The two maps **agree**: every block has an effect in both maps or in neither."]
        reason = ("They agree here because this oracle reads only redness, and a black square is no more red than "
                  "almost any natural block. A trained network can react to a black square, content it never saw "
                  "(out of distribution), in ways natural content never triggers: then the maps differ.")
    else:
        lines = [f"The maps **disagree on {_blocks(f.differ, verb=False)}**: an effect in one map, none in the other."]
        reason = ("The zero occluder puts a black square, content the model never saw, into the image: its effect "
                  "mixes \"the information is gone\" with \"something strange appeared\".")
    if f.zero_marker_ate == f.marker_ate:
        lines.append(f"Both give the marker the same ATE, {_points(f.marker_ate)} DSC points.")
    else:
        lines.append(f"The marker's ATE is {_points(f.marker_ate)} DSC points with natural occluders (a mean over "
                     f"draws) and {_points(f.zero_marker_ate)} with the zero occluder (one black square).")
    lines.append(reason)
    lines.append("Only the **natural** occluder asks \"what if this block looked like a normal block of these "
                 "images?\"; the zero map also measures the reaction to an artificial square.")
    return "\n\n".join(lines)


def _answer_3(f: LessonFacts) -> str:
    lines = [(f"Screening saved **{f.saved} forward passes**: {f.forwards_screened} instead of {f.forwards_unscreened} "
              f"({_plain(f.saved_percent)}% fewer). It declared {f.screened_out} of {f.candidates} blocks irrelevant "
              f"after S = {f.coarse} draws each.")]
    if f.missed == 0:
        lines.append("It missed no block here: every block with an effect without screening has one with screening.")
    else:
        lines.append(f"It missed {_blocks(f.missed, verb=False)} with an effect without screening.")
    lines.append(f"Yes, screening can miss a block that matters: one whose replacement changes the Dice only for "
                 f"rare draws passes its S = {f.coarse} coarse draws unchanged (every change below tau = "
                 f"{_plain(f.tau)} DSC points) and is set to 0.")
    if f.marker_kept:
        lines.append("The marker survives because almost every natural draw closes the gate. For a trained network, "
                     "screening trades a small risk of missing rare effects for far fewer forward passes.")
    else:
        lines.append("Here even the marker was screened out: its coarse draws all kept the gate open (red "
                     "replacements). More coarse draws (a larger S) make that less likely.")
    return "\n\n".join(lines)


def _answer_4(f: LessonFacts) -> str:
    growth, expected = _plain(f.growth), _plain(f.expected_ratio)
    lines = [(f"It should shrink by a factor of about √{growth} = {expected}: a standard error is the standard "
              f"deviation of the draws divided by √N, so {growth} times more draws divide it by √{growth}.")]
    if f.ratio is None:
        n, se = (f.n, f.se_n) if f.se_n == 0 else (f.n_more, f.se_more)
        lines.append(f"Here it cannot be measured: with N = {n} draws the marker's Dice never changed from one draw "
                     f"to the next, so its standard error is {_points(se)} and there is no ratio to compute.")
        lines.append("A standard error of 0 does not make the ATE exact: the draws that would change it (red "
                     "blocks) were simply not drawn.")
        return "\n\n".join(lines)
    lines.append(f"Here the marker's standard error is {_points(f.se_n)} DSC points with N = {f.n} draws and "
                 f"{_points(f.se_more)} with N = {f.n_more}: a ratio of **{_points(f.ratio, 2)}**.")
    if abs(f.ratio / f.expected_ratio - 1) <= AGREEMENT:
        lines.append(f"That agrees with the expected {expected}: the small difference is noise, because each "
                     "standard deviation is itself estimated from the draws.")
    else:
        lines.append(f"That is further from {expected} than usual: with only N = {f.n} draws the standard deviation "
                     "is itself a rough estimate. Another seed gives another ratio; larger N bring it closer to "
                     f"{expected}.")
    return "\n\n".join(lines)


# -- the exercises --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exercise:
    """One exercise of the lesson.

    Parameters
    ----------
    number : int
        Its number in the notebook.
    question : str
        The question (the notebook's markdown shows it word for word).
    task : str
        What the student computes into ``answer_<number>``.
    needs : tuple of str
        Arguments of :func:`lesson_facts` the exercise needs.
    kind : {"block", "count", "ratio"}
        The form of the answer: a (row, col) pair, an integer, or a number compared with a tolerance.
    expected : str
        The :class:`LessonFacts` field the answer is compared with.
    hint : str
        Shown with "not quite"; it points at the method, not at the value.
    answer : callable(LessonFacts) -> str
        Writes the answer (Markdown) from the facts.
    """

    number: int
    question: str
    task: str
    needs: tuple[str, ...]
    kind: Literal["block", "count", "ratio"]
    expected: str
    hint: str
    answer: Callable[[LessonFacts], str]


#: The lesson's exercises by number.
EXERCISES: Mapping[int, Exercise] = {
    exercise.number: exercise for exercise in (
        Exercise(
            number=1,
            question=("Which block supports the RoI most, and with which sign? Do other blocks, the blue "
                      "distractor among them, have an effect? Why?"),
            task="the (row, col) of the block with the most negative ATE in `natural_map`",
            needs=("natural_map",), kind="block", expected="strongest",
            hint=("`natural_map.ate` is a (block_y, block_x) array: find the position of its minimum along both "
                  "dims (xarray's `argmin(...)`, or NumPy's `argmin` and `unravel_index`)."),
            answer=_answer_1,
        ),
        Exercise(
            number=2,
            question=("Both maps find the marker. Do they disagree anywhere? Which one answers \"what if this "
                      "block looked like a normal block of these images?\""),
            task=("the number of blocks with an effect (ATE != 0) in one of `natural_map` and `zero_map` but not "
                  "in the other"),
            needs=("natural_map", "zero_map"), kind="count", expected="differ",
            hint=("Compare where each map is non-zero (`ate != 0`) and count the blocks where the two comparisons "
                  "differ; `.sum()` counts the True values of a boolean array."),
            answer=_answer_2,
        ),
        Exercise(
            number=3,
            question=("How many forward passes does screening save here? Can screening miss a block that "
                      "matters, and when?"),
            task="the forward passes screening saved: those of `unscreened` minus those of `natural_map`",
            needs=("natural_map", "unscreened"), kind="count", expected="saved",
            hint="Each map stores the forward passes it used in its `forwards` variable.",
            answer=_answer_3,
        ),
        Exercise(
            number=4,
            question="By how much should the standard error shrink from N to 4N draws? Does it?",
            task=("the marker's standard error with N draws (`few_draws`) divided by the one with 4N draws "
                  "(`more_draws`)"),
            needs=("few_draws", "more_draws"), kind="ratio", expected="ratio",
            hint="Take the marker block's `stderr` in both maps, the one with fewer draws on top.",
            answer=_answer_4,
        ),
    )
}


def _exercise(n: Any, facts: Any) -> Exercise:
    check_choice("n", n, EXERCISES)
    if not isinstance(facts, LessonFacts):
        raise TypeError(f"facts must be the LessonFacts of lesson_facts(...), got {describe(facts)}")
    exercise = EXERCISES[n]
    missing = [name for name in exercise.needs if name not in facts.given]
    if missing:
        wanted = ", ".join(f"{name}=..." for name in missing)
        raise ValueError(f"exercise {n} needs {' and '.join(missing)}: pass {wanted} to lesson_facts")
    return exercise


def answer_text(n: int, facts: LessonFacts) -> str:
    """The answer to exercise `n` (Markdown), written from `facts`.

    Parameters
    ----------
    n : int
        The exercise (a key of :data:`EXERCISES`).
    facts : LessonFacts
        From :func:`lesson_facts`, given the results the exercise needs.

    Raises
    ------
    ValueError
        An unknown exercise, facts without the results it needs, or a non-finite number.

    Examples
    --------
    >>> facts = LessonFacts((0, 7), (7, 0), ("few_draws", "more_draws"), n=8, n_more=32, growth=4.0,
    ...                     expected_ratio=2.0, se_n=0.0, se_more=3.1, ratio=None)
    >>> text = answer_text(4, facts)              # the marker's draws never differed with N = 8
    >>> "standard error is 0.0 and there is no ratio" in text, "ratio of" in text
    (True, False)
    """
    return _exercise(n, facts).answer(facts)


# -- checking a student's answer ------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What :func:`check` says about an answer; it prints as its message.

    Parameters
    ----------
    exercise : int
        The exercise's number.
    status : {"not answered yet", "right", "not quite"}
        The verdict.
    message : str
        The sentence shown to the student.
    """

    exercise: int
    status: Status
    message: str

    @property
    def right(self) -> bool:
        """Whether the answer is right."""
        return self.status == "right"

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return self.message


def _number(value: Any) -> float | None:
    """A real number from an int, float, NumPy/torch scalar or one-element array; None otherwise."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "iuf":  # booleans and strings are not numbers
        return None
    number = float(array.reshape(()))
    return number if math.isfinite(number) else None


def _non_finite(value: Any) -> bool:
    try:
        return not bool(np.isfinite(np.asarray(value, dtype=float)).all())
    except (TypeError, ValueError):
        return False


def _pair(value: Any) -> tuple[float, float] | None:
    if isinstance(value, Mapping):  # xarray's argmin(...) gives {"block_y": ..., "block_x": ...}
        value = (value.get("block_y"), value.get("block_x"))
    if isinstance(value, (str, bytes)):
        return None
    try:
        items = list(value)
    except TypeError:
        return None
    numbers = [_number(item) for item in items]
    if len(numbers) != 2 or None in numbers:
        return None
    return numbers[0], numbers[1]


def _is_right(exercise: Exercise, answer: Any, expected: Any) -> bool | None:
    """True or False; None when the answer does not have the expected form."""
    if exercise.kind == "block":
        pair = _pair(answer)
        return None if pair is None else pair == tuple(float(v) for v in expected)
    number = _number(answer)
    if number is None:
        return None
    if exercise.kind == "count":
        return number == expected
    return abs(number - expected) <= RATIO_TOLERANCE


def _shown(value: float | tuple[float, float] | None) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:g}" for v in value) + ")"
    return f"{value:g}"


_FORMS = {"block": "a (row, col) pair of integers", "count": "an integer", "ratio": "a number"}


def check(n: int, answer: Any, facts: LessonFacts) -> Verdict:
    """Whether `answer` to exercise `n` is right, with a hint when it is not.

    Parameters
    ----------
    n : int
        The exercise (a key of :data:`EXERCISES`).
    answer : object
        The student's ``answer_<n>``: None while unanswered; a (row, col) pair (tuple, list, array,
        or the dict of ``DataArray.argmin(...)``), an integer or a number, NumPy, torch and 0-d
        xarray values included.
    facts : LessonFacts
        From :func:`lesson_facts`, given the results the exercise needs.

    Returns
    -------
    Verdict
        ``status`` is "not answered yet", "right" or "not quite".

    Examples
    --------
    >>> facts = LessonFacts((0, 7), (7, 0), ("natural_map", "unscreened"), saved=292)
    >>> check(3, None, facts).message[:55]
    'Not answered yet: set answer_3 to the forward passes sc'
    >>> check(3, np.int64(292), facts).status, check(3, 292.0, facts).status, check(3, 670, facts).status
    ('right', 'right', 'not quite')
    """
    exercise = _exercise(n, facts)
    if answer is None:
        return Verdict(n, "not answered yet",
                       f"Not answered yet: set answer_{n} to {exercise.task}, then run this cell again.")
    expected = getattr(facts, exercise.expected)
    if expected is None:  # exercise 4 when the marker's draws never differed
        return Verdict(n, "not quite", "Not quite: in these results the marker's standard error is 0 for one of "
                                       "the two maps, so there is no ratio to compute. Open the answer.")
    verdict = _is_right(exercise, answer, expected)
    if verdict is None:
        got = "a number that is not finite" if _non_finite(answer) else describe(answer)
        return Verdict(n, "not quite", f"Not quite: answer_{n} should be {_FORMS[exercise.kind]}, got {got}.")
    if verdict:
        return Verdict(n, "right", "Right. Now think about the question, then open the answer.")
    given = _pair(answer) if exercise.kind == "block" else _number(answer)
    return Verdict(n, "not quite", f"Not quite: {_shown(given)} is not {exercise.task}. Hint: {exercise.hint}")


# -- showing the answer ---------------------------------------------------------------------------


def _titled(n: int, facts: LessonFacts) -> str:
    return f"**Answer to exercise {n}.**\n\n{answer_text(n, facts)}"


def answer_button(n: int, facts: LessonFacts) -> Any:
    """A "Show the answer" button above an empty output; a click writes the answer into the output.

    The answer is written (from `facts`) when the button is made, so missing results fail at once,
    but it is shown only on a click: before it, neither the notebook's cells nor their outputs hold
    it. Plain ipywidgets (JupyterLab, Notebook 7, VS Code).

    Parameters
    ----------
    n : int
        The exercise (a key of :data:`EXERCISES`).
    facts : LessonFacts
        From :func:`lesson_facts`, given the results the exercise needs.

    Returns
    -------
    ipywidgets.VBox
        ``children``: the ``Button`` and the ``Output``.

    Examples
    --------
    >>> facts = LessonFacts((0, 7), (7, 0), ("natural_map", "unscreened"), coarse=3, tau=0.02,
    ...     forwards_screened=189, forwards_unscreened=481, saved=292, saved_percent=60.7, screened_out=59,
    ...     candidates=60, missed=0, marker_kept=True)
    >>> button, output = answer_button(3, facts).children
    >>> output.outputs
    ()
    >>> button.click()
    >>> output.outputs[0]["data"]["text/markdown"].splitlines()[2][:44]
    'Screening saved **292 forward passes**: 189 '
    """
    import ipywidgets as widgets

    text = _titled(n, facts)
    button = widgets.Button(description="Show the answer", icon="eye", tooltip=f"the answer to exercise {n}")
    output = widgets.Output()

    def show(_: Any) -> None:
        # Set as the output's state (not printed inside `with output`), so it reaches every front end.
        output.outputs = ({"output_type": "display_data", "metadata": {},
                           "data": {"text/markdown": text, "text/plain": text}},)
        button.description = "Answer shown"

    button.on_click(show)
    return widgets.VBox([button, output])


def show_answer(n: int, facts: LessonFacts) -> None:
    """Show the answer to exercise `n` now (Markdown in a notebook, plain text elsewhere).

    Parameters
    ----------
    n : int
        The exercise (a key of :data:`EXERCISES`).
    facts : LessonFacts
        From :func:`lesson_facts`, given the results the exercise needs.
    """
    text = _titled(n, facts)
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # no IPython: a terminal
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(Markdown(text))


# -- the lesson's task helpers --------------------------------------------------------------------


def _tint(blocks: torch.Tensor, channel: int) -> torch.Tensor:
    """Mean of one channel minus the mean of the other two, per (..., 3, b, b) block.

    Channel 0 gives the redness R - (G + B) / 2 that GateOracle's gate reads; channel 2 the blueness.
    """
    others = [k for k in range(3) if k != channel]
    tint = blocks[..., channel, :, :] - blocks[..., others, :, :].mean(dim=-3)
    return tint.mean(dim=(-1, -2))


def planted_blocks(data: Any, i: int, *, block: int = 8) -> tuple[Block, Block]:
    """(row, col) of the marker block and of the blue distractor block of image `i` of a ``gate`` set.

    Parameters
    ----------
    data : PlantedSet
        From ``pdcr_lab.faithfulness.make_planted("gate", ...)``.
    i : int
        The image; it must have a marker (``data.present[i]``).
    block : int
        Block side in pixels.

    Examples
    --------
    >>> data = pdcr_lab.faithfulness.make_planted("gate", 1, seed=0)
    >>> planted_blocks(data, 0)
    ((0, 7), (7, 7))
    """
    i = check_int("i", i, minimum=0)
    if i >= len(data):
        raise ValueError(f"i={i} is out of range; the set has {len(data)} images")
    block = check_int("block", block, minimum=1)
    cause = np.asarray(data.cause[i], dtype=bool)
    if not cause.any():
        raise ValueError(f"image i={i} has no marker; choose one with data.present[i] True")
    row, col = (int(v) // block for v in np.argwhere(cause)[0])
    image = torch.as_tensor(data.images[i])
    h, w = image.shape[-2:]
    corners = [(0, 0), (0, w // block - 1), (h // block - 1, 0), (h // block - 1, w // block - 1)]
    blue = [float(_tint(image[:, r * block:(r + 1) * block, c * block:(c + 1) * block], 2)) for r, c in corners]
    return (row, col), corners[int(np.argmax(blue))]


def marker_bank(data: Any, *, seed: int = 0, block: int = 8) -> PatchBank:
    """A bank in which half the blocks are red markers: the marker block of every image of `data`
    that has one, and as many other blocks, one drawn at random from each of those images.

    With the natural bank red blocks are rare, so a few draws of the marker block almost never
    differ; with this bank about half of them keep the gate open.

    Parameters
    ----------
    data : PlantedSet
        ``gate`` images that are not explained.
    seed : int
        Seed of the other blocks' draw.
    block : int
        Block side in pixels.

    Examples
    --------
    >>> bank = marker_bank(pdcr_lab.faithfulness.make_planted("gate", 4, seed=0))
    >>> len(bank), bank.provenance["markers"], red_blocks(bank)
    (6, 3, 3)
    """
    seed, block = check_int("seed", seed, minimum=0), check_int("block", block, minimum=1)
    rng = np.random.default_rng(seed)
    blocks = []
    for k in range(len(data)):
        cause = np.asarray(data.cause[k], dtype=bool)
        if not cause.any():
            continue
        image = torch.as_tensor(data.images[k])
        c, h, w = image.shape
        grid = image.reshape(c, h // block, block, w // block, block).permute(1, 3, 0, 2, 4)
        grid = grid.reshape(-1, c, block, block)  # row-major cells, as the cause mask below
        on_marker = cause.reshape(h // block, block, w // block, block).any(axis=(1, 3)).ravel()
        blocks += [grid[int(np.flatnonzero(on_marker)[0])], grid[int(rng.choice(np.flatnonzero(~on_marker)))]]
    if not blocks:
        raise ValueError(f"data has no image with a marker among its {len(data)} images; expected gate images")
    provenance = {"recipe": "half red markers: the marker block and one random other block of each gate image "
                            "with a marker", "seed": seed, "block": block, "markers": len(blocks) // 2,
                  "n_images": len(data)}
    return PatchBank(torch.stack(blocks), provenance)


def red_blocks(bank: PatchBank) -> int:
    """Blocks of `bank` red enough to open GateOracle's gate (mean redness R - (G + B) / 2 > 0.3).

    Parameters
    ----------
    bank : PatchBank
        An RGB bank.

    Examples
    --------
    >>> blocks = torch.zeros(2, 3, 8, 8); blocks[0, 0] = 0.9
    >>> red_blocks(PatchBank(blocks))
    1
    """
    if bank.channels != 3:
        raise ValueError(f"bank has {bank.channels} channels; expected RGB blocks (3 channels)")
    return int((_tint(bank.blocks, 0) > GATE_REDNESS).sum())
