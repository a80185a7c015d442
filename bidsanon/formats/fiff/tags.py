"""The one table of identifying FIFF tags, read by the rewriter, ``bidsanon check``
and the docs (``docs/fiff.md`` embeds :func:`markdown_table`).

Each :class:`TagRule` says which tag (kind, in which blocks, with which types), what is
written instead (``action`` and ``placeholder``), whether it is replaced by default or
only under a policy switch, and which ``check`` rule reports it when it still holds a
non-placeholder value. Kind numbers are those of ``mne.io.constants.FIFF`` (a test checks
the names against it) and of MEGIN's ``fiff_file.h`` for the few MNE does not define.
"""

# No ``from __future__ import annotations`` (named tuples: see bidsanon.records).

from typing import NamedTuple

# Tag kinds the reader/rewriter handles for structure (not identifying).
FILE_ID = 100
DIR_POINTER = 101
DIR = 102
BLOCK_START = 104
BLOCK_END = 105
FREE_LIST = 106
FREE_BLOCK = 107
NOP = 108  # no operation (void); MNE ends every file with one

# Tag types (FIFFT_*) the rewriter writes or parses.
T_VOID, T_INT, T_FLOAT, T_DOUBLE, T_STRING = 0, 3, 4, 5, 10

# Block kinds (FIFFB_*) the table refers to.
B_MEAS = 100
B_MEAS_INFO = 101
B_EVOKED = 104
#: Blocks whose readers look at tags by their place (MNE's raw reader: the first
#: sample and the initial skip lead the raw data block).
B_RAW_DATA = (102, 112, 119)  # raw, continuous, IAS raw
B_MNE_EVENTS = 361
B_MNE_EPOCHS = 373
B_ANNOTATIONS = 3810

#: (secs, usecs) values seen for "no date": MNE writes (0, 2**31 - 1), MaxFilter and old
#: converters (0, 0). Any time within the first second of 1970 is taken as "no date"
#: (see :func:`no_date`) and kept: it reveals nothing and cannot be shifted into range.
NO_DATE = frozenset({(0, 0x7FFFFFFF), (0, 0)})


def no_date(secs: int, usecs: int = 0) -> bool:
    """Whether an ID time or FIFF_MEAS_DATE means "no date" (seconds 0)."""
    return secs == 0

#: ``action`` values, what they write and how check decides a value is a placeholder.
ACTIONS = {
    "id": "ID struct: machine ID zeroed; time shifted by the offset (or set to the fixed "
          "date); version and the no-date value kept",
    "date": "date (int or double, secs[, usecs]) shifted by the offset or set to the fixed "
            "date; the no-date value kept",
    "julian": "Julian day shifted by the (birthday) offset or set to the fixed birthday",
    "text": "string replaced by the policy's `text` placeholder",
    "his": "string replaced by the policy's `his` value",
    "literal": "string replaced by the placeholder shown",
    "int": "integer replaced by the placeholder shown",
    "float": "float replaced by the placeholder shown",
    "path": "path reduced to its file name, with subject/session labels relabelled",
    "annotation": "free text typed during the recording, per `annotations`: `scrub` "
                  "replaces known identifying values, original labels and text patterns "
                  "(`text.patterns` plus dates) in each description, `blank` replaces "
                  "each by `annotation`, `BAD_annotation` or `EDGE_annotation` (the "
                  "prefix MNE acts on is kept), `keep` leaves them; the list structure "
                  "(count, order, event codes, JSON) and the onset and duration tags "
                  "are unchanged",
    "auto": "string replaced by `text` when it looks identifying (a path, `@`, or more "
            "than a program name and version); kept otherwise",
    "warn": "copied unchanged with a warning; the policy can refuse the file instead",
}


class TagRule(NamedTuple):
    """One identifying tag.

    Attributes
    ----------
    kind : int
        FIFF tag kind.
    field : str
        Field name used in policy overrides (``meg.fiff.fields``) and change records.
    fiff : str
        FIFF constant name.
    action : str
        What is written instead, one of :data:`ACTIONS`.
    placeholder : str | int | float | None
        The value ``literal``/``int``/``float`` actions write.
    default : str
        ``replace`` or ``keep`` when no switch or override applies.
    switch : str | None
        Policy switch that turns it on (``brute``, ``mne_environment``,
        ``project_text``; ``brute`` turns all three on) or off (``keep_his``), or the
        mode that decides (``annotations``: replaced unless ``keep``).
    blocks : tuple of int | None
        Only inside these (innermost) blocks; None: everywhere.
    rule : str
        ``bidsanon check`` rule, reported as ``fiff.<rule>``.
    severity : str
        Severity of that finding.
    doc : str
        What the tag holds.
    """

    kind: int
    field: str
    fiff: str
    action: str
    doc: str
    placeholder: str | int | float | None = None
    default: str = "replace"
    switch: str | None = None
    blocks: tuple[int, ...] | None = None
    rule: str = ""
    severity: str = "error"

    @property
    def check_rule(self) -> str:
        return "fiff." + (self.rule or self.field.replace("_", "-"))


_ID_DOC = "ID struct: version, machine ID (from the MAC address), date-time"

#: The table. Order: as the tags appear in a typical file.
TAGS: tuple[TagRule, ...] = (
    TagRule(100, "file_id", "FIFF_FILE_ID", "id", _ID_DOC + " (file)", rule="machine-id"),
    TagRule(103, "block_id", "FIFF_BLOCK_ID", "id", _ID_DOC + " (block)", rule="machine-id"),
    TagRule(109, "parent_file_id", "FIFF_PARENT_FILE_ID", "id", _ID_DOC + " (parent file)",
            rule="machine-id"),
    TagRule(110, "parent_block_id", "FIFF_PARENT_BLOCK_ID", "id",
            _ID_DOC + " (parent block; MNE's measurement ID)", rule="machine-id"),
    TagRule(116, "ref_file_id", "FIFF_REF_FILE_ID", "id",
            _ID_DOC + " (referenced split file)", rule="machine-id"),
    TagRule(120, "ref_block_id", "FIFF_REF_BLOCK_ID", "id", _ID_DOC + " (referenced block)",
            rule="machine-id"),
    TagRule(113, "creator", "FIFF_CREATOR", "auto", "program that wrote the file or block",
            rule="program", severity="warning"),
    TagRule(114, "modifier", "FIFF_MODIFIER", "auto", "program that modified the file",
            rule="program", severity="warning"),
    TagRule(118, "ref_file_name", "FIFF_REF_FILE_NAME", "path",
            "name (MNE: sometimes the full path) of the previous/next split file",
            rule="path", severity="warning"),
    TagRule(150, "dacq_pars", "FIFF_DACQ_PARS", "text",
            "acquisition parameters (text; MEGIN defaults such as `DEFpatFirstName`)",
            default="keep", rule="dacq-pars", severity="info"),
    TagRule(152, "device_type", "FIFF_DEVICE_TYPE", "text", "device type (e.g. TRIUX)",
            default="keep", rule="device", severity="info"),
    TagRule(153, "device_model", "FIFF_DEVICE_MODEL", "text", "device model",
            default="keep", rule="device", severity="info"),
    TagRule(154, "device_serial", "FIFF_DEVICE_SERIAL", "text", "device serial number",
            rule="device", severity="warning"),
    TagRule(155, "device_site", "FIFF_DEVICE_SITE", "text", "site (institution) name",
            rule="device", severity="warning"),
    TagRule(158, "orig_file_guid", "FIFF_ORIG_FILE_GUID", "literal",
            "GUID of the original file (helium block)",
            placeholder="00000000-0000-0000-0000-000000000000", rule="guid",
            severity="warning"),
    TagRule(159, "utc_offset", "FIFF_UTC_OFFSET", "literal",
            "time zone of the site (e.g. +01:00)", placeholder="+00:00", rule="utc-offset",
            severity="warning"),
    TagRule(204, "meas_date", "FIFF_MEAS_DATE", "date",
            "measurement date: int secs[, usecs] (meas info, processing history, helium, "
            "cross-talk); double secs[, usecs] in the annotation block", rule="date",
            severity="warning"),
    TagRule(206, "description", "FIFF_DESCRIPTION", "text",
            "description of the measurement (FIFF_COMMENT in the meas info block)",
            blocks=(B_MEAS_INFO,), severity="error"),
    TagRule(206, "annotation_description", "FIFF_COMMENT", "annotation",
            "descriptions of MNE annotations (`:`-separated)", switch="annotations",
            blocks=(B_ANNOTATIONS,), rule="annotation", severity="info"),
    TagRule(106, "annotation_extras", "FIFF_FREE_LIST", "annotation",
            "extra fields of MNE annotations (JSON)", switch="annotations",
            blocks=(B_ANNOTATIONS,), rule="annotation", severity="info"),
    TagRule(206, "epochs_event_id", "FIFF_DESCRIPTION", "annotation",
            "event names of epochs (`name:code;...`)", switch="annotations",
            blocks=(B_MNE_EVENTS,), rule="annotation", severity="info"),
    TagRule(3801, "epochs_drop_log", "FIFF_MNE_EPOCHS_DROP_LOG", "annotation",
            "why each epoch was dropped (JSON: channel names, annotation descriptions)",
            switch="annotations", blocks=(B_MNE_EPOCHS,), rule="annotation",
            severity="info"),
    TagRule(206, "evoked_comment", "FIFF_COMMENT", "annotation",
            "comment (condition name) of an evoked response", switch="annotations",
            blocks=(B_EVOKED,), rule="annotation", severity="info"),
    TagRule(212, "experimenter", "FIFF_EXPERIMENTER", "text",
            "experimenter's name (meas info and every processing record)"),
    TagRule(400, "subject_id", "FIFF_SUBJ_ID", "int", "subject number", placeholder=0,
            rule="subject"),
    TagRule(401, "subject_first_name", "FIFF_SUBJ_FIRST_NAME", "text",
            "subject's first name", rule="subject"),
    TagRule(402, "subject_middle_name", "FIFF_SUBJ_MIDDLE_NAME", "text",
            "subject's middle name", rule="subject"),
    TagRule(403, "subject_last_name", "FIFF_SUBJ_LAST_NAME", "text",
            "subject's last name", rule="subject"),
    TagRule(404, "subject_birthday", "FIFF_SUBJ_BIRTH_DAY", "julian",
            "subject's birthday (Julian day)", rule="birthday"),
    TagRule(405, "subject_sex", "FIFF_SUBJ_SEX", "int", "sex (0 unknown, 1 male, 2 female)",
            placeholder=0, default="keep", switch="brute", rule="subject-traits",
            severity="info"),
    TagRule(406, "subject_hand", "FIFF_SUBJ_HAND", "int", "handedness", placeholder=0,
            default="keep", switch="brute", rule="subject-traits", severity="info"),
    TagRule(407, "subject_weight", "FIFF_SUBJ_WEIGHT", "float", "weight (kg)",
            placeholder=0.0, default="keep", switch="brute", rule="subject-traits",
            severity="info"),
    TagRule(408, "subject_height", "FIFF_SUBJ_HEIGHT", "float", "height (m)",
            placeholder=0.0, default="keep", switch="brute", rule="subject-traits",
            severity="info"),
    TagRule(409, "subject_comment", "FIFF_SUBJ_COMMENT", "text", "comment about the subject",
            rule="subject"),
    TagRule(410, "subject_his_id", "FIFF_SUBJ_HIS_ID", "his",
            "subject's ID in the hospital information system (MNE: FreeSurfer subject)",
            switch="keep_his", rule="subject"),
    TagRule(500, "project_id", "FIFF_PROJ_ID", "int", "project number", placeholder=0,
            default="keep", switch="brute", rule="project", severity="info"),
    TagRule(501, "project_name", "FIFF_PROJ_NAME", "text", "project name", default="keep",
            switch="project_text", rule="project", severity="warning"),
    TagRule(502, "project_aim", "FIFF_PROJ_AIM", "text", "project aim", default="keep",
            switch="project_text", rule="project", severity="info"),
    TagRule(503, "project_persons", "FIFF_PROJ_PERSONS", "text",
            "persons in the project (names)", rule="project"),
    TagRule(504, "project_comment", "FIFF_PROJ_COMMENT", "text", "comment about the project",
            default="keep", switch="project_text", rule="project", severity="info"),
    TagRule(1101, "ref_path", "FIFF_REF_PATH", "path", "path of a referenced (MRI) file",
            rule="path", severity="warning"),
    TagRule(2006, "mri_pixel_data", "FIFF_MRI_PIXEL_DATA", "warn",
            "MRI slice pixels: a face can be reconstructed from them", rule="mri-data",
            severity="warning"),
    TagRule(2020, "mri_orig_source_path", "FIFF_MRI_ORIG_SOURCE_PATH", "path",
            "path of the original MRI data", rule="path", severity="warning"),
    TagRule(2030, "mri_voxel_data", "FIFF_MRI_VOXEL_DATA", "warn",
            "MRI voxels: a face can be reconstructed from them", rule="mri-data",
            severity="warning"),
    TagRule(3508, "mne_file_name", "FIFF_MNE_FILE_NAME", "path",
            "file name (often a full path) stored by MNE", rule="path", severity="warning"),
    TagRule(3550, "mne_working_dir", "FIFF_MNE_ENV_WORKING_DIR", "text",
            "working directory of the MNE program that wrote the file", default="keep",
            switch="mne_environment", rule="mne-env", severity="warning"),
    TagRule(3551, "mne_command_line", "FIFF_MNE_ENV_COMMAND_LINE", "text",
            "command line of the MNE program that wrote the file", default="keep",
            switch="mne_environment", rule="mne-env", severity="warning"),
    TagRule(3552, "mne_external_big_endian", "FIFF_MNE_EXTERNAL_BIG_ENDIAN", "path",
            "reference to an external binary file", rule="path", severity="warning"),
    TagRule(3553, "mne_external_little_endian", "FIFF_MNE_EXTERNAL_LITTLE_ENDIAN", "path",
            "reference to an external binary file", rule="path", severity="warning"),
    TagRule(3598, "mne_source_space_mri_file", "FIFF_MNE_SOURCE_SPACE_MRI_FILE", "path",
            "MRI file used by a source space", rule="path", severity="warning"),
)

FIELDS: dict[str, TagRule] = {t.field: t for t in TAGS}
_BY_KIND: dict[int, tuple[TagRule, ...]] = {}
for _t in TAGS:
    _BY_KIND[_t.kind] = _BY_KIND.get(_t.kind, ()) + (_t,)
#: The tag kinds that have a rule (most tags of a file have none).
KINDS: frozenset[int] = frozenset(_BY_KIND)


def rule_for(kind: int, block: int | None) -> TagRule | None:
    """The rule for a tag of ``kind`` whose innermost block is ``block`` (or None)."""
    for rule in _BY_KIND.get(kind, ()):
        if rule.blocks is None or block in rule.blocks:
            return rule
    return None


def is_replaced(rule: TagRule, brute: bool = False, mne_environment: bool = False,
                keep_his: bool = False, overrides: dict | None = None,
                annotations: str = "keep", project_text: bool = False) -> bool:
    """Whether ``rule``'s tag is rewritten under these switches and per-field overrides.

    Precedence: a per-field override (``keep``/``replace``), then the switch, then the
    rule's default. ``brute`` also implies ``mne_environment`` (as in mne_anonymize) and
    ``project_text`` (mne_anonymize replaces the project's texts only with ``--brute``;
    the dataset policy turns ``project_text`` on by default). ``annotations`` is the
    annotation mode (``scrub``, ``blank`` or ``keep``).
    """
    if overrides and rule.field in overrides:
        return overrides[rule.field] == "replace"
    if rule.switch == "annotations":
        return annotations != "keep"
    if rule.switch == "brute":
        return brute
    if rule.switch == "mne_environment":
        return mne_environment or brute
    if rule.switch == "project_text":
        return project_text or brute
    if rule.switch == "keep_his":
        return not keep_his
    return rule.default == "replace"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|")


def markdown_table() -> str:
    """The table as Markdown (embedded in docs/fiff.md; a test keeps them equal)."""
    head = ("| kind | FIFF constant | field (policy override) | blocks | action | "
            "placeholder | default | switch | check rule (severity) | holds |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for t in TAGS:
        blocks = "any" if t.blocks is None else ", ".join(map(str, t.blocks))
        if t.placeholder is not None:
            placeholder = f"`{t.placeholder}`"
        else:
            placeholder = {"id": "fixed date / offset", "date": "fixed date / offset",
                           "julian": "fixed birthday / offset", "text": "policy `text`",
                           "his": "policy `his`", "path": "relabelled file name",
                           "annotation": "per `annotations`", "auto": "policy `text`",
                           "warn": "(unchanged)"}[t.action]
        check = f"`{t.check_rule}` ({t.severity})"
        if t.action == "id":  # an ID is also a date
            check += ", `fiff.date` (warning)"
        rows.append("| " + " | ".join(_cell(c) for c in (
            t.kind, t.fiff, f"`{t.field}`", blocks, t.action, placeholder, t.default,
            t.switch or "", check, t.doc)) + " |")
    return head + "\n".join(rows) + "\n"
