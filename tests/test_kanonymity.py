"""k-anonymity of participants.tsv: measured, enforced with the fewest suppressed cells,
deterministic, reported by the run, the report and `bidsanon check`."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from pathlib import Path

import pytest
import yaml

from bidsanon import kanonymity as ka
from bidsanon.check import scan_dataset
from bidsanon.errors import InputError
from bidsanon.run import report_path, run_dataset
from conftest import validator_errors



def skewed_table(n: int = 60, seed: int = 7) -> dict[str, list[str]]:
    """A participants table with skewed ages (students, a few older, one of 95), sex,
    handedness and a group column with a rare category."""
    rng = random.Random(seed)
    ages = [str(rng.randint(19, 29)) for _ in range(n - 12)]
    ages += [str(rng.randint(30, 55)) for _ in range(9)] + ["67", "71", "95"]
    sex = [rng.choice("MF") for _ in range(n)]
    hand = ["L" if i % 9 == 0 else "R" for i in range(n)]
    group = ["control"] * (n // 2) + ["patient"] * (n - n // 2 - 2) + ["pilot"] * 2
    return {"age": ages, "sex": sex, "handedness": hand, "group": group}


def brute_force_record_suppression(values: dict[str, list[str]], k: int) -> int:
    """An independent computation (written without the module's code) of the fewest
    cells that suppressing whole records needs, over the same lattice of
    generalisations: an upper bound for the module's cell-level suppression."""
    def age_levels(v: str) -> list[str]:
        if v in ("n/a", ""):
            return ["n/a"] * 4
        x = int(float(v))
        if x >= 89:
            return ["89+"] * 4
        out = [str(x)]
        for w in (5, 10, 20):
            lo = x // w * w
            out.append(f"{lo}-{min(lo + w - 1, 88)}")
        return out

    def cat_levels(col: list[str]) -> list[list[str]]:
        counts = Counter(col)
        return [col, [v if counts[v] >= k else "other" for v in col]]

    cols = list(values)
    options = []
    for c in cols:
        if c == "age":
            per_row = [age_levels(v) for v in values[c]]
            options.append([[r[i] for r in per_row] for i in range(4)])
        else:
            options.append(cat_levels(values[c]))
    best = None
    for choice in itertools.product(*options):
        rows = list(zip(*choice))
        sizes = Counter(rows)
        cells = sum(len(cols) for r in rows if sizes[r] < k)
        best = cells if best is None else min(best, cells)
    return best


def test_skewed_table_reaches_k_with_the_fewest_suppressed_cells():
    values = skewed_table()
    before = ka.k_of(list(zip(*values.values())))
    out = ka.anonymize(values, k=5, max_suppressed=0.2)
    assert before < 5
    assert out.met and out.k_before == before
    assert out.k_after >= 5
    assert ka.k_of(list(zip(*out.values.values()))) == out.k_after
    assert out.suppressed_cells <= brute_force_record_suppression(values, 5)
    # no other node of the lattice suppresses fewer cells
    ladders = [ka.ladder(c, values[c]) for c in values]
    for node in itertools.product(*(range(len(lad.levels)) for lad in ladders)):
        cells, _, _ = ka.evaluate(ladders, values, node, 5)
        assert cells >= out.suppressed_cells
    # never a row removed; the 95-year-old is in the top bin or suppressed
    assert all(len(v) == 60 for v in out.values.values())
    assert "95" not in out.values["age"]
    assert out.levels["age"] >= 1  # whole years cannot reach k on this table


def test_narrowest_bins_among_equally_suppressing_generalisations():
    ages = [str(a) for a in [20, 21, 22, 23, 24] * 2 + [30, 31, 32, 33, 34] * 2]
    out = ka.anonymize({"age": ages}, k=5, max_suppressed=0.0)
    assert out.met and out.suppressed_cells == 0
    assert out.levels["age"] == 1  # bins of 5 suffice: 10 and 20 are not chosen
    # a bin is written as its lower bound: BIDS types age as a number
    assert sorted(set(out.values["age"])) == ["20", "30"] and out.widths == {"age": 5}
    assert ka.levels_of(out.values["age"], 5) == {"20": "age 20-24 years",
                                                  "30": "age 30-34 years"}


def test_same_input_same_output():
    values = skewed_table()
    a, b = ka.anonymize(values, 5, 0.2), ka.anonymize(dict(values), 5, 0.2)
    assert a.values == b.values and a.levels == b.levels


def test_unreachable_target_names_the_blocking_column():
    values = {"age": [str(20 + 7 * i) for i in range(10)], "sex": ["M", "F"] * 5}
    out = ka.anonymize(values, k=5, max_suppressed=0.05, age_bins=(1,))
    assert not out.met
    assert out.blocking == "age"
    assert out.values == values  # nothing applied when the target is not met


def test_quasi_columns_from_names_and_descriptions():
    cols = ["participant_id", "age", "sex", "hand", "score", "edu_years", "center"]
    desc = {"edu_years": {"Description": "years of education"},
            "center": {"Description": "recording site"}}
    assert ka.quasi_columns(cols, desc) == ["age", "sex", "hand", "edu_years", "center"]
    assert ka.quasi_columns(cols, desc, ["score"]) == ["score"]


def write_dataset(root: Path, values: dict[str, list[str]]) -> None:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "k test", "BIDSVersion": "1.9.0"}))
    n = len(next(iter(values.values())))
    lines = ["participant_id\t" + "\t".join(values)]
    for i in range(n):
        lines.append(f"sub-{i + 1:03d}\t" + "\t".join(values[c][i] for c in values))
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    (root / "participants.json").write_text(json.dumps({
        "age": {"Description": "age of the participant", "Units": "year"},
        "group": {"Description": "study group"}}))
    for i in range(n):
        sub = root / f"sub-{i + 1:03d}" / "beh"
        sub.mkdir(parents=True)
        (sub / f"sub-{i + 1:03d}_task-x_beh.tsv").write_text("onset\tduration\n1.0\t0.5\n")


def _policy(tmp_path: Path, section: dict) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump({"tsv": {"participants": {
        "columns": {"participant_id": "relabel", "age": "keep", "sex": "keep",
                    "handedness": "keep", "group": "keep"},
        "quasi_identifiers": section}}, "dates": {"shift": "none"}}))
    return p


def test_run_enforces_k_and_describes_the_bins(tmp_path):
    src = tmp_path / "in"
    write_dataset(src, skewed_table())
    assert any(f.rule == "participants.k-anonymity" for f in scan_dataset(src).findings)
    out, key = tmp_path / "out", tmp_path / "key.json"
    summary = run_dataset(src, out, key_path=key, quiet=True,
                          policy_path=_policy(tmp_path, {"k": 5, "max_suppressed": 0.2}))
    assert summary.published
    assert any("k = " in p and "(target 5)" in p for p in summary.privacy)
    assert "k-anonymity:" in summary.text()
    rows = [ln.split("\t") for ln in (out / "participants.tsv").read_text().splitlines()]
    header, body = rows[0], rows[1:]
    qi = [header.index(c) for c in ("age", "sex", "handedness", "group")]
    assert len(body) == 60
    assert ka.k_of([tuple(r[i] for i in qi) for r in body]) >= 5
    assert not any(f.rule == "participants.k-anonymity" for f in scan_dataset(out).findings)
    desc = json.loads((out / "participants.json").read_text())
    assert "Levels" in desc["age"] and "k-anonymity" in desc["age"]["Description"]
    assert set(desc["age"]["Levels"]) == {r[header.index("age")] for r in body} - {"n/a"}
    # the binned ages stay numbers, as BIDS types the age column (bids-examples ds000117
    # and others got TSV_VALUE_INCORRECT_TYPE for "20-39")
    assert "TSV_VALUE_INCORRECT_TYPE" not in validator_errors(out)
    # the key records what was generalised; the report shows k and the class sizes
    record = next(f for f in json.loads(key.read_text())["files"]
                  if f["output"] == "participants.tsv")
    assert any(c["action"] == "generalise" and c["field"] == "age" for c in record["changes"])
    html = report_path(key).read_text()
    assert 'id="privacy"' in html and "<svg" in html
    # same input and key: same bytes
    out2 = tmp_path / "out2"
    run_dataset(src, out2, key_path=key, quiet=True,
                policy_path=_policy(tmp_path, {"k": 5, "max_suppressed": 0.2}))
    assert (out2 / "participants.tsv").read_bytes() == (out / "participants.tsv").read_bytes()


def test_run_fails_in_one_line_when_k_cannot_be_reached(tmp_path):
    src = tmp_path / "in"
    values = {"age": [str(20 + 7 * i) for i in range(8)], "sex": ["M", "F"] * 4,
              "handedness": ["R"] * 8, "group": ["a"] * 8}
    write_dataset(src, values)
    policy = _policy(tmp_path, {"k": 5, "max_suppressed": 0.05, "age_bins": [1],
                                "on_unmet": "fail"})
    with pytest.raises(InputError) as err:
        run_dataset(src, tmp_path / "out", key_path=tmp_path / "k.json", quiet=True,
                    policy_path=policy)
    message = str(err.value)
    assert "\n" not in message and "participants.tsv" in message
    assert "column 'age' blocks it" in message
    # no value quoted (the temporary folder's own name may hold digits such as "20")
    assert not any(a in message.replace(str(tmp_path), "") for a in values["age"])
    assert not (tmp_path / "out").exists()
