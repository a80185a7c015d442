"""Relabelling of entities in names, paths and text."""

from bidsanon.labels import Labels, relabel_name, relabel_path, replace_bare_labels

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


def test_short_numeric_labels_replaced_only_as_labels():
    # eeg_ds003645s_hed_demo: subject 003, response times 1.003, stimuli u003.bmp
    labels = Labels(subjects={"003": "K2P9", "cm4": "AB12"})
    assert replace_bare_labels("1.003\t2\tu003.bmp", labels) == "1.003\t2\tu003.bmp"
    assert replace_bare_labels("run-003 img_003 003.5", labels) == "run-003 img_003 003.5"
    assert replace_bare_labels("subject 003.\n\"003\"\t003", labels) == \
        "subject K2P9.\n\"K2P9\"\tK2P9"
    assert replace_bare_labels("cm4_audio.wav", labels) == "AB12_audio.wav"


def test_output_paths_replace_bare_labels_like_text():
    # ieeg_filtered_speech: stimuli/cm4_audio.wav, named in events.tsv's stim_file
    labels = Labels(subjects={"cm4": "AB12", "003": "K2P9"})
    assert relabel_path("stimuli/cm4_audio.wav", labels) == "stimuli/AB12_audio.wav"
    assert relabel_path("stimuli/003.wav", labels) == "stimuli/K2P9.wav"
    assert relabel_path("sub-003/func/sub-003_task-a_run-003_bold.nii", labels) == \
        "sub-K2P9/func/sub-K2P9_task-a_run-003_bold.nii"
