"""The ``dataset_description`` format: the output's ``dataset_description.json``,
written from the input's with no path or name of the source, the dataset type the policy
asks for, and bidsanon in ``GeneratedBy``."""

from __future__ import annotations

from pathlib import Path

from bidsanon._version import __version__
from bidsanon.check.rules import check_json_text, read_text_or_none, settings_for
from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import write_text_atomic
from bidsanon.formats.sidecars import check_data, dump_json, load_json
from bidsanon.records import Change, FileResult, Finding, markdown_table
from bidsanon.schema import Key
from bidsanon.scrub import Scrubber, replace_known_values

CODE_URL = "https://github.com/bidsanon/bidsanon"

#: Keys copied (scrubbed) from the input; every other key is left out.
KEPT_KEYS = ("License", "Authors", "Acknowledgements", "HowToAcknowledge", "Funding",
             "EthicsApprovals", "ReferencesAndLinks", "DatasetDOI", "HEDVersion")

#: (key, what is done): the contract's field table.
FIELDS: tuple[tuple[str, str], ...] = (
    ("Name", "`output.name`, or the input's Name scrubbed (labels, known values, text "
     "patterns)"),
    ("DatasetType", "`output.dataset_type`"),
    ("GeneratedBy", "bidsanon (derivative datasets), replacing the input's"),
    *((k, "scrubbed (labels, known values, text patterns)") for k in KEPT_KEYS),
    ("any other key", "left out (e.g. SourceDatasets with local paths)"),
)

POLICY = {
    "dataset_type": Key("derivative", "`derivative` (DatasetType derivative with "
                        "GeneratedBy) or `raw` (for direct upload to an archive).",
                        choices=("derivative", "raw")),
    "name": Key("", "Name written to dataset_description.json (default: the input's Name, "
                "scrubbed).", type=str),
}


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """dataset_description.json of the output: no path or name of the source."""
    if not src.is_file():
        raise InputError("the dataset has no dataset_description.json (BIDS requires it)",
                         src)
    data = load_json(src)
    if not isinstance(data, dict):
        raise InputError("dataset_description.json must be a JSON object", src)
    out_policy = ctx.policy["output"]
    scrubber = Scrubber.from_policy(ctx.policy["text"])
    desc: dict = {}
    changes: list[Change] = []
    name = out_policy["name"] or data.get("Name", "dataset")
    desc["Name"] = _scrub_any(str(name), ctx, scrubber, "Name", changes)
    desc["BIDSVersion"] = data.get("BIDSVersion", "1.9.0")
    desc["DatasetType"] = out_policy["dataset_type"]
    for k in KEPT_KEYS:
        if k in data:
            desc[k] = _scrub_any(data[k], ctx, scrubber, k, changes)
    generated = [{"Name": "bidsanon", "Version": __version__, "CodeURL": CODE_URL,
                  "Description": "De-identification: subjects relabelled, dates shifted per "
                                 "subject, identifying metadata removed, faces removed from "
                                 "anatomical MRI"}]
    if out_policy["dataset_type"] == "derivative" or data.get("GeneratedBy"):
        desc["GeneratedBy"] = generated
    write_text_atomic(dst, dump_json(desc))
    return FileResult(changes=changes + [Change(k, "remove", location="dataset_description.json")
                                         for k in data if k not in desc])


def _scrub_any(value, ctx: TaskContext, scrubber: Scrubber, where: str,
               changes: list[Change]):
    """Scrub every string of a JSON value: the plan's known identifying values (each
    replacement recorded), original labels, text patterns (recorded)."""
    if isinstance(value, str):
        if ctx.section("text").get("known_identifiers", True):
            value, found = replace_known_values(value, ctx.known, field=where)
            changes += found
        value, found = scrubber.scrub(ctx.scrub_labels(value), field=where)
        changes += found
        return value
    if isinstance(value, list):
        return [_scrub_any(v, ctx, scrubber, f"{where}[{i}]", changes)
                for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _scrub_any(v, ctx, scrubber, f"{where}.{k}", changes)
                for k, v in value.items()}
    return value




def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """The sidecar rules (dates, text patterns, deny-listed keys)."""
    return check_json_text(read_text_or_none(path), rel, settings_for(policy), check_data)


def peek_dates(path: Path) -> list:
    """No acquisition dates."""
    return []


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` for ``docs/formats.md``."""
    return markdown_table(["key", "what bidsanon writes"], [[f"`{k}`", w] for k, w in FIELDS])


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """The output parses as JSON."""
    from bidsanon.verify import parses_json
    return parses_json(Path(dst))
