"""Relabelling of entities in names, paths and text."""

from bidsanon.labels import Labels, relabel_name, replace_bare_labels

LABELS = Labels(subjects={"01": "X7K2", "JS042": "AB12", "emptyroom": "emptyroom"},
                sessions={"01": {"20230415": "19210101"}},
                emptyroom={"01": {"20230415": "19200301"}})


def test_path_entities():
    assert relabel_name("sub-01/ses-20230415/meg/sub-01_ses-20230415_meg.fif", LABELS) == \
        "sub-X7K2/ses-19210101/meg/sub-X7K2_ses-19210101_meg.fif"


def test_emptyroom_session_follows_referrer():
    ref = "sub-emptyroom/ses-20230415/meg/sub-emptyroom_ses-20230415_task-noise_meg.fif"
    assert relabel_name(ref, LABELS, subject="01") == \
        "sub-emptyroom/ses-19200301/meg/sub-emptyroom_ses-19200301_task-noise_meg.fif"


def test_entities_inside_words_are_not_touched():
    assert relabel_name("mysub-01 and bids::sub-01/x", LABELS) == "mysub-01 and bids::sub-X7K2/x"


def test_bare_labels_only_long_enough():
    assert replace_bare_labels("subject JS042 and 01", LABELS) == "subject AB12 and 01"
