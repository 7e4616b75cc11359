"""pdcr_lab.teaching and the lesson notebook (notebooks/05_teaching.ipynb).

Unit tests check the verdicts of :func:`check` and the answers of :func:`answer_text` on hand-made
results, one per branch: every number an answer prints must be one of its facts, and no answer
prints NaN. The slow test executes the notebook as a student would (answers hidden until clicked),
then fills in correct answers in the same kernel and compares the answers with facts recomputed
here from the notebook's result datasets.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import pdcr_lab
from pdcr_lab.banks import PatchBank
from pdcr_lab.faithfulness import make_planted
from pdcr_lab.schema import empty_effects
from pdcr_lab.teaching import (
    EXERCISES,
    LessonFacts,
    answer_button,
    answer_text,
    check,
    lesson_facts,
    marker_bank,
    planted_blocks,
    red_blocks,
    show_answer,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK = NOTEBOOKS / "05_teaching.ipynb"
MARKER, DISTRACTOR = (0, 7), (7, 7)
NAN = re.compile(r"\bnan\b", re.IGNORECASE)


# -- hand-made results -----------------------------------------------------------------------------


def effects(*, ate: dict | None = None, stderr: dict | None = None, draws: int = 8, forwards: int = 0,
            screened: bool = False, coarse: int = 3, tau: float = 0.02) -> xr.Dataset:
    """An 8 x 8 map (RoI in the centre) with the given ATE and standard errors per (row, col)."""
    ds = empty_effects(grid=(8, 8), block=8, coarse=coarse, tau=tau, fine=draws)
    ds["roi_block"][3:5, 3:5] = True
    ds["n_draws"][:] = draws
    ds["screened"][:] = screened
    ds["screened"].values[ds["roi_block"].values] = False  # RoI blocks are never candidates
    for where, value in (ate or {}).items():
        ds["ate"][where] = value
        ds["screened"][where] = False
    for where, value in (stderr or {}).items():
        ds["stderr"][where] = value
    ds["forwards"] = forwards
    return ds


def natural(**extra: float) -> xr.Dataset:
    return effects(ate={MARKER: -100.0, **{tuple(map(int, k.split("_")[1:])): v for k, v in extra.items()}},
                   forwards=189, screened=True)


def facts_for(n: int, **maps: xr.Dataset) -> LessonFacts:
    defaults = {
        1: dict(natural_map=natural()),
        2: dict(natural_map=natural(), zero_map=effects(ate={MARKER: -100.0})),
        3: dict(natural_map=natural(), unscreened=effects(ate={MARKER: -100.0}, forwards=481, coarse=0)),
        4: dict(few_draws=effects(ate={MARKER: -50.0}, stderr={MARKER: 18.9}, draws=8),
                more_draws=effects(ate={MARKER: -50.0}, stderr={MARKER: 9.0}, draws=32)),
    }[n]
    return lesson_facts(MARKER, DISTRACTOR, **{**defaults, **maps})


def printed_numbers(text: str) -> list[str]:
    """The numbers of an answer's prose (code spans left out)."""
    prose = re.sub(r"`[^`]*`", "", text)
    return re.findall(r"-?\d+(?:\.\d+)?", prose)


def assert_numbers_are_facts(text: str, facts: LessonFacts) -> None:
    """Every number printed equals a fact rounded to the decimals printed, and no NaN is printed."""
    assert not NAN.search(text), text
    values = facts.numbers()
    for number in printed_numbers(text):
        decimals = len(number.split(".")[1]) if "." in number else 0
        matches = [k for k, v in values.items() if math.isclose(round(v, decimals), float(number), abs_tol=1e-9)]
        assert matches, f"{number} in the answer is none of the facts {values}:\n{text}"


# -- check -----------------------------------------------------------------------------------------


RIGHT = {
    1: [(0, 7), [0, 7], np.array([0, 7]), (np.int64(0), np.int64(7)), (0.0, 7.0), torch.tensor([0, 7]),
        {"block_y": xr.DataArray(0), "block_x": xr.DataArray(7)}],
    2: [0, np.int64(0), 0.0, xr.DataArray(0), torch.tensor(0)],
    3: [292, np.int64(292), 292.0, xr.DataArray(292)],
    4: [2.1, 18.9 / 9.0, np.float32(2.1), xr.DataArray(2.1), 2.12, 2.08],
}
WRONG = {
    1: [(7, 7), (7, 0), [0, 6], 7, (0, 7, 0), "(0, 7)", (True, 7)],
    2: [1, -1, 0.5, "0", [0, 0], True, float("nan")],
    3: [189, 481, 670, -292, 291.5],
    4: [9.0 / 18.9, 2.0, 1.0, float("inf"), "2.1"],
}


@pytest.mark.parametrize("n", sorted(EXERCISES))
def test_check_accepts_every_form_of_a_right_answer(n):
    facts = facts_for(n)
    for answer in RIGHT[n]:
        verdict = check(n, answer, facts)
        assert verdict.status == "right" and verdict.right, (answer, verdict)
        assert str(verdict) == repr(verdict) == verdict.message


@pytest.mark.parametrize("n", sorted(EXERCISES))
def test_check_refuses_wrong_answers_with_a_hint_that_hides_the_answer(n):
    facts = facts_for(n)
    text = answer_text(n, facts)
    for answer in WRONG[n]:
        verdict = check(n, answer, facts)
        assert verdict.status == "not quite" and not verdict.right, (answer, verdict)
        assert verdict.message.startswith("Not quite: ")
        assert text not in verdict.message and not NAN.search(verdict.message)
    expected = {1: "(0, 7)", 3: "292", 4: "2.1"}.get(n)
    if expected is not None:  # the hint of a wrong answer never names the right one
        assert expected not in check(n, WRONG[n][0], facts).message


@pytest.mark.parametrize("n", sorted(EXERCISES))
def test_check_says_not_answered_for_the_placeholder(n):
    verdict = check(n, None, facts_for(n))
    assert verdict.status == "not answered yet" and not verdict.right
    assert verdict.message == f"Not answered yet: set answer_{n} to {EXERCISES[n].task}, then run this cell again."


def test_check_without_a_ratio_to_compute():
    facts = facts_for(4, few_draws=effects(ate={MARKER: -100.0}, draws=8))
    assert facts.ratio is None
    assert check(4, None, facts).status == "not answered yet"
    assert check(4, 2.0, facts).status == "not quite"


def test_errors_name_the_argument_and_the_value():
    facts = facts_for(1)
    with pytest.raises(ValueError, match=r"n=7 is not supported; expected one of \[1, 2, 3, 4\]"):
        check(7, None, facts)
    with pytest.raises(ValueError, match=r"exercise 2 needs zero_map: pass zero_map=\.\.\. to lesson_facts"):
        answer_text(2, facts)
    with pytest.raises(ValueError, match=r"exercise 4 needs few_draws and more_draws"):
        answer_button(4, facts)
    with pytest.raises(TypeError, match="facts must be the LessonFacts of lesson_facts"):
        check(1, (0, 7), {"strongest": (0, 7)})
    with pytest.raises(ValueError, match=r"marker must be a \(row, col\) pair of integers, got \(0, 7, 1\)"):
        lesson_facts((0, 7, 1), DISTRACTOR)
    with pytest.raises(ValueError, match=r"block \(9, 7\) is outside the 8 x 8 grid of natural_map"):
        lesson_facts((9, 7), DISTRACTOR, natural_map=natural())
    with pytest.raises(ValueError, match=r"unscreened must be computed without screening \(coarse=0\), got coarse=3"):
        lesson_facts(MARKER, DISTRACTOR, natural_map=natural(), unscreened=natural())
    with pytest.raises(ValueError, match="expected more_draws to use more draws"):
        facts_for(4, more_draws=effects(stderr={MARKER: 9.0}, draws=8))
    broken = natural()
    broken["stderr"][0, 0] = np.nan
    with pytest.raises(ValueError, match="natural_map.stderr holds NaN or Inf values"):
        lesson_facts(MARKER, DISTRACTOR, natural_map=broken)
    with pytest.raises(TypeError, match="zero_map must be an effects xarray.Dataset"):
        lesson_facts(MARKER, DISTRACTOR, natural_map=natural(), zero_map=np.zeros((8, 8)))


# -- answer_text: every branch -----------------------------------------------------------------------


BRANCHES = {
    "1: the marker, nothing else": (1, {}, ["**The marker block (0, 7)**", "No other block has an effect",
                                            "has no effect (ATE = 0.0)"]),
    "1: other effects, a distractor effect": (1, dict(natural_map=natural(ate_3_2=-4.5, ate_7_7=1.5)),
                                              ["Besides the marker, 2 blocks have an effect", "has an effect (ATE = 1.5 DSC points)"]),
    "1: the strongest is not the marker": (1, dict(natural_map=effects(ate={MARKER: -10.0, (5, 5): -60.0})),
                                           ["The most negative ATE is at block (5, 5), not at the marker (0, 7)",
                                            "Besides the marker, 1 block has an effect"]),
    "2: agree": (2, {}, ["The two maps **agree**", "the same ATE, -100.0 DSC points"]),
    "2: differ": (2, dict(zero_map=effects(ate={MARKER: -100.0, (4, 5): -30.0, (5, 4): -20.0})),
                  ["disagree on 2 blocks"]),
    "2: same support, other ATE": (2, dict(zero_map=effects(ate={MARKER: -75.0})),
                                   ["**agree**", "-100.0 DSC points with natural occluders", "and -75.0 with the zero"]),
    "3: nothing missed": (3, {}, ["saved **292 forward passes**: 189 instead of 481 (60.7% fewer)",
                                  "irrelevant after S = 3 draws", "It missed no block",
                                  "tau = 0.02 DSC points", "The marker survives"]),
    "3: missed a block": (3, dict(natural_map=effects(forwards=189, screened=True),
                                  unscreened=effects(ate={MARKER: -12.5, (6, 1): -3.0}, forwards=481, coarse=0)),
                          ["It missed 2 blocks", "even the marker was screened out"]),
    "4: agrees with 2": (4, {}, ["about √4 = 2", "18.9 DSC points with N = 8 draws and 9.0 with N = 32",
                                 "a ratio of **2.10**", "That agrees with the expected 2"]),
    "4: far from 2": (4, dict(few_draws=effects(stderr={MARKER: 12.5}, draws=8)),
                      ["a ratio of **1.39**", "further from 2 than usual", "N = 8 draws"]),
    "4: no block varies with N": (4, dict(few_draws=effects(ate={MARKER: -100.0}, draws=8)),
                                  ["with N = 8 draws the marker's Dice never changed", "standard error is 0.0",
                                   "no ratio"]),
    "4: no block varies with 4N": (4, dict(more_draws=effects(ate={MARKER: -100.0}, draws=32)),
                                   ["with N = 32 draws", "no ratio"]),
    "4: other sizes": (4, dict(few_draws=effects(stderr={MARKER: 14.0}, draws=50),
                               more_draws=effects(stderr={MARKER: 7.0}, draws=200)),
                       ["about √4 = 2", "with N = 50 draws and 7.0 with N = 200"]),
}


@pytest.mark.parametrize("branch", sorted(BRANCHES))
def test_answer_text_follows_the_results(branch):
    n, maps, expected = BRANCHES[branch]
    facts = facts_for(n, **maps)
    text = answer_text(n, facts)
    for part in expected:
        assert part in text, f"{part!r} missing:\n{text}"
    assert_numbers_are_facts(text, facts)
    if n == 2 and facts.differ == 0:
        assert "disagree" not in text
    if n == 4 and facts.ratio is None:
        assert "ratio of" not in text


def test_answers_never_format_nan():
    facts = LessonFacts(MARKER, DISTRACTOR, ("few_draws", "more_draws"), n=8, n_more=32, growth=4.0,
                        expected_ratio=2.0, se_n=float("nan"), se_more=9.0, ratio=float("nan"))
    with pytest.raises(ValueError, match="cannot write nan into an answer"):
        answer_text(4, facts)


def test_lesson_facts_of_hand_made_results():
    facts = lesson_facts(MARKER, DISTRACTOR, natural_map=natural(ate_7_7=2.0), zero_map=effects(ate={(4, 5): -1.0}),
                         unscreened=effects(ate={MARKER: -100.0, (6, 1): -3.0}, forwards=481, coarse=0),
                         few_draws=effects(stderr={MARKER: 18.0}, draws=8),
                         more_draws=effects(stderr={MARKER: 9.0}, draws=32))
    assert facts.strongest == MARKER and facts.marker_ate == -100.0 and facts.distractor_ate == 2.0
    assert facts.other_effects == 1 and facts.differ == 3 and facts.zero_marker_ate == 0.0
    assert (facts.saved, facts.candidates, facts.screened_out, facts.missed) == (292, 60, 58, 1)
    assert (facts.n, facts.n_more, facts.growth, facts.expected_ratio, facts.ratio) == (8, 32, 4.0, 2.0, 2.0)
    assert facts.given == ("natural_map", "zero_map", "unscreened", "few_draws", "more_draws")


# -- showing the answer -------------------------------------------------------------------------------


def test_answer_button_shows_the_answer_only_when_clicked():
    pytest.importorskip("ipywidgets")
    facts = facts_for(3)
    box = answer_button(3, facts)
    button, output = box.children
    assert button.description == "Show the answer" and output.outputs == ()
    assert "292" not in repr(box)
    button.click()
    button.click()  # a second click shows it once, not twice
    (shown,) = output.outputs
    assert shown["data"]["text/markdown"] == f"**Answer to exercise 3.**\n\n{answer_text(3, facts)}"
    assert button.description == "Answer shown"


def test_show_answer_prints_outside_a_notebook(capsys):
    facts = facts_for(2)
    show_answer(2, facts)
    assert capsys.readouterr().out == f"**Answer to exercise 2.**\n\n{answer_text(2, facts)}\n"


# -- the task helpers -------------------------------------------------------------------------------


def test_planted_blocks_and_banks_follow_the_planted_task():
    data = make_planted("gate", 20, seed=7)
    for i in np.flatnonzero(data.present):
        marker, distractor = planted_blocks(data, int(i))
        rows, cols = np.nonzero(data.cause[i].numpy())
        assert marker == (rows.min() // 8, cols.min() // 8) and marker != distractor
        r, c = distractor
        colour = data.images[i][:, 8 * r:8 * r + 8, 8 * c:8 * c + 8].mean(dim=(1, 2))
        assert colour[2] > 0.6 > colour[0]  # blue
    absent = int(np.flatnonzero(~data.present)[0])
    with pytest.raises(ValueError, match=f"image i={absent} has no marker"):
        planted_blocks(data, absent)
    bank = marker_bank(data, seed=0)
    markers = int(data.present.sum())
    assert len(bank) == 2 * markers and bank.provenance["markers"] == markers == red_blocks(bank)
    assert red_blocks(data.bank(per_image=64)) == markers  # every red block of the set is a marker
    without = dataclasses.replace(data, images=data.images[[absent]], masks=data.masks[[absent]],
                                  cause=data.cause[[absent]], blobs=data.blobs[[absent]], present=data.present[[absent]])
    with pytest.raises(ValueError, match="data has no image with a marker among its 1 images"):
        marker_bank(without)
    with pytest.raises(ValueError, match="expected RGB blocks"):
        red_blocks(PatchBank(torch.zeros(1, 1, 8, 8)))


# -- the notebook, executed --------------------------------------------------------------------------


def _cells(notebook, kind: str) -> list[str]:
    return [cell.source for cell in notebook.cells if cell.cell_type == kind]


def test_notebook_holds_questions_and_student_cells_but_no_answers():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    markdown, code = "\n".join(_cells(notebook, "markdown")), _cells(notebook, "code")
    assert "reveal(" not in "\n".join(code) and "answer_text(" not in "\n".join(code)
    for n, exercise in EXERCISES.items():
        assert exercise.question in markdown, n
        (student,) = [k for k, source in enumerate(code) if source.endswith(f"\nanswer_{n} = None")]
        *comment, _ = code[student].splitlines()
        assert all(line.startswith("# ") and len(line) <= 100 for line in comment)
        assert " ".join(line[2:] for line in comment) == f"Exercise {n}, your code: {exercise.task}"
        assert code[student + 1].endswith(f"check({n}, answer_{n}, facts)")
        assert code[student + 2] == f"answer_button({n}, facts)"


SOLUTIONS = {  # written here, apart from the notebook and from lesson_facts
    1: "answer_1 = tuple(int(v) for v in np.unravel_index(int(np.argmin(natural_map.ate.values)), natural_map.ate.shape))",
    2: "answer_2 = int(((natural_map.ate != 0) != (zero_map.ate != 0)).sum())",
    3: "answer_3 = int(unscreened.forwards) - int(natural_map.forwards)",
    4: "answer_4 = float(few_draws.stderr[marker]) / float(more_draws.stderr[marker])",
}
RESULTS = ("natural_map", "zero_map", "unscreened", "few_draws", "more_draws")


def _outputs_text(cell, kinds: tuple[str, ...] = ("text/plain", "text/markdown"), streams=("stdout", "stderr")) -> str:
    """What a cell shows as text: its streams and the given kinds of data (all kinds with ``kinds=()``)."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream" and output.name in streams:
            parts.append(output.text)
        parts.extend(str(v) for k, v in output.get("data", {}).items() if not kinds or k in kinds)
    return "\n".join(parts)


@pytest.mark.slow
def test_notebook_hides_the_answers_and_checks_the_students_work(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for module in ("ipykernel", "ipywidgets", "holoviews", "panel"):
        pytest.importorskip(module)
    env = {k: v for k, v in os.environ.items() if k not in ("PDCR_LAB_RESULTS", "PDCR_LAB_FIGURES")}
    env.update(PDCR_LAB_HOME=str(tmp_path / "home"), MPLBACKEND="Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})

    def run(source: str):
        cell = nbformat.v4.new_code_cell(source)
        notebook.cells.append(cell)
        return client.execute_cell(cell, len(notebook.cells) - 1)

    with client.setup_kernel(env=env):
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
        shown = "\n".join(_outputs_text(cell) for cell in notebook.cells)  # text (bokeh's JavaScript says NaN)
        shown_all = "\n".join(_outputs_text(cell, kinds=()) for cell in notebook.cells)
        # Before any click: each answer's output widget is empty, in the front end's state and in the kernel.
        outputs = [s for s in client.widget_state.values() if s.get("_model_name") == "OutputModel"]
        assert len(outputs) == len(EXERCISES) and all(not s.get("outputs") for s in outputs)
        # (a) correct answers, written into the student cells, are right for the notebook's own checks
        for n, solution in SOLUTIONS.items():
            index = next(k for k, c in enumerate(notebook.cells) if c.source.endswith(f"\nanswer_{n} = None"))
            notebook.cells[index].source = solution
            client.execute_cell(notebook.cells[index], index)
            client.execute_cell(notebook.cells[index + 1], index + 1)
            verdict = _outputs_text(notebook.cells[index + 1])
            assert verdict.startswith("Right."), (n, verdict)
        # (b) the answers, the results they come from, and the notebook's own buttons clicked
        folder = tmp_path / "results"
        folder.mkdir()
        dump = run(f"""
import ipywidgets, json, pdcr_lab
from pdcr_lab.teaching import answer_text
for name in {RESULTS!r}:
    pdcr_lab.save(globals()[name], {str(folder)!r} + f"/{{name}}.nc")
full = lesson_facts(marker, distractor, **{{name: globals()[name] for name in {RESULTS!r}}})
boxes = [v for k, v in sorted(Out.items()) if isinstance(v, ipywidgets.VBox)]
empty = [box.children[1].outputs == () for box in boxes]
for box in boxes:
    box.children[0].click()
print(json.dumps(dict(marker=marker, distractor=distractor, empty=empty,
                      texts={{n: answer_text(n, full) for n in range(1, 5)}},
                      clicked=[box.children[1].outputs[0]["data"]["text/markdown"] for box in boxes])))
""")
    printed = json.loads(_outputs_text(dump, streams=("stdout",)))
    texts = {int(n): text for n, text in printed["texts"].items()}
    assert printed["empty"] == [True] * len(EXERCISES)
    assert printed["clicked"] == [f"**Answer to exercise {n}.**\n\n{texts[n]}" for n in sorted(EXERCISES)]

    assert "Traceback" not in shown and not NAN.search(shown), shown
    sources = "\n".join(cell.source for cell in notebook.cells[:-1])
    for n, text in texts.items():
        for line in filter(None, text.splitlines()):
            assert line not in shown_all and line not in sources, f"the answer to {n} is visible: {line}"

    # The facts, recomputed here from the notebook's results
    maps = {name: pdcr_lab.load(folder / f"{name}.nc") for name in RESULTS}
    task = make_planted("gate", 12, seed=3)
    i = int(np.argmax(task.present))
    rows, cols = np.nonzero(task.cause[i].numpy())
    marker = (int(rows.min()) // 8, int(cols.min()) // 8)
    assert tuple(printed["marker"]) == marker
    facts = lesson_facts(marker, tuple(printed["distractor"]), **maps)
    natural_map, few, more = maps["natural_map"], maps["few_draws"], maps["more_draws"]
    ratio = float(few.stderr[marker]) / float(more.stderr[marker])
    assert facts.ratio == pytest.approx(ratio) and 0 < ratio < math.inf  # blocks really vary at both sizes
    assert facts.saved == int(maps["unscreened"].forwards) - int(natural_map.forwards)
    assert facts.strongest == tuple(int(v) for v in np.unravel_index(int(np.argmin(natural_map.ate.values)), (8, 8)))
    for text in texts.values():
        assert_numbers_are_facts(text, facts)
    assert f"a ratio of **{ratio:.2f}**" in texts[4]
    assert few.attrs["bank_id"] != natural_map.attrs["bank_id"]  # the half-red bank, not the natural one
