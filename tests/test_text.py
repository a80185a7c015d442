"""Identifying text patterns."""

import pytest

from bidsanon.schema import defaults
from bidsanon.scrub import POLICY, Scrubber, find


def scrub(text, patterns=("email", "url", "phone")):
    return Scrubber.from_policy(defaults(POLICY) | {"patterns": list(patterns)}).scrub(text)[0]


def test_email_phone_url_replaced_public_urls_kept():
    text = ("Contact jane.doe@uni.edu or +49 30 1234 5678 or (617) 555-0142; "
            "see https://doi.org/10.1016/j.x and http://jane.example.com/~jd/index.html.")
    out = scrub(text)
    assert "jane.doe@uni.edu" not in out and "1234 5678" not in out and "555-0142" not in out
    assert "jane.example.com" not in out
    assert "https://doi.org/10.1016/j.x" in out
    assert out.endswith("[url removed].")  # trailing punctuation kept outside the URL


def test_numbers_that_are_not_phones_are_kept():
    text = "ISSN 1053-8119, 2019-03-04, 1000 Hz, v1.2.3, 600.614990234375"
    assert scrub(text) == text


def test_dates_after_1925_only():
    out = scrub("on 2019-03-04 and 1921-08-16 and 04.03.2019", patterns=("date",))
    assert "2019-03-04" not in out and "04.03.2019" not in out
    assert "1921-08-16" in out


def test_find_reports_pattern_names():
    kinds = {k for k, _ in find("mail a@b.org, call +1 617 555 0142")}
    assert kinds == {"email", "phone"}


#: Real formats of several countries' numbers (fictional ones where the country
#: reserves them): with the country code, with spaces, dashes, brackets or none.
PHONES = [
    "+45 3545 1234", "+45-3545-1234", "+4535451234", "0045 3545 1234",
    "+44 20 7946 0958", "+44 (0)20 7946 0958", "+44-20-7946-0958", "+442079460958",
    "+49 30 1234567", "+49 (30) 1234567", "+49-30-1234567", "+49301234567",
    "+1 (617) 555-0199", "+1 617 555 0199", "+1-617-555-0199", "+16175550199",
    "+33 1 23 45 67 89", "+33-1-23-45-67-89", "+33123456789",
    "+81 3-1234-5678", "+81 3 1234 5678", "+81312345678",
    # national formats of the default regions (no country code)
    "(617) 555-0199", "617-555-0199", "020 7946 0958", "030 1234567", "01 23 45 67 89",
    "03-1234-5678",
]

#: Numeric data of BIDS datasets that is not a phone number.
NOT_PHONES = [
    "1000 1000 1000 1000 1000",  # b-values (.bval)
    "0 0 0 1000 1000 1000 2000 2000",
    "12.5 13.75", "onset 12.5 13.75 14.0 20.25",  # events.tsv onsets
    "n_samples 1201 2402 3603 4804", "-0.5 0.5 1200 1201 1202",  # sample counts
    "2023-01-01", "2019-03-04T12:30:45.123456", "04.03.2019", "20230101", "12:30:45",
    "sub-003_ses-20230101_task-rest_meg.fif",  # IDs in BIDS names
    "ISSN 1053-8119", "v1.2.3", "600.614990234375", "1.2.840.10008.5.1.4.1.1.4",
    "[0.0, 0.0575, 0.115, 0.1725, 0.23]", "doi 10.1016/j.neuroimage.2013.12.123",
    "DeviceSerialNumber 167035, 1200 Hz",
    "Mk78=Stimulus,S1,1645439,1,0", "12345678",  # sample positions, bare integers
    " ".join(["0"] + ["1000", "2000", "3000"] * 20),  # a whole .bval line
    " ".join(f"{0.0575 * i - 0.9:.4f}" for i in range(60)),  # a .bvec line
    " ".join(str(1201 * i) for i in range(60)),  # sample indices
    # false positives of the check on bids-examples (docs/check.md, measured precision):
    # page and year ranges of references, an index list, a date in brackets
    "Cerebral Cortex 28(9), 3095-3114", "collected 2012-2016", "Neuron 49(4):1690-701",
    "subjects [29 30 34 36]", "for i in 01 02 03 04 05; do", "as of yet (02-26-2019)",
]


@pytest.mark.parametrize("number", PHONES)
def test_phone_formats_of_several_countries_found(number):
    text = f"Questions: call {number}, or write."
    assert find(text, ["phone"]) == [("phone", number)]
    assert scrub(text) == "Questions: call [phone removed], or write."


@pytest.mark.parametrize("data", NOT_PHONES)
@pytest.mark.parametrize("leniency", ["valid", "strict"])
def test_numeric_data_is_not_a_phone(data, leniency):
    section = defaults(POLICY) | {"patterns": ["phone"], "phone_leniency": leniency}
    assert Scrubber.from_policy(section).scrub(data) == (data, [])


def test_phone_shaped_numbers_count_at_valid_but_not_at_strict():
    """555 is no US area code (the numbers are not valid), but brackets or dashes
    between three groups are written only in phone numbers."""
    for text in ("lab phone (555) 123-4567", "lab phone 555-123-4567"):
        number = text.removeprefix("lab phone ")
        assert find(text, ["phone"]) == [("phone", number)]
        assert find(text, ["phone"], {"phone_leniency": "strict"}) == []
        assert find(text, ["phone"], {"phone_leniency": "possible"}) == [("phone", number)]
    assert find("lab phone 555 123 4567", ["phone"]) == []  # spaces: as numeric data


def test_phone_regions_decide_national_formats():
    text = "Tel. 3545 1234"  # a Danish number written without +45
    assert find(text, ["phone"], {"phone_regions": ["US"]}) == []
    assert find(text, ["phone"], {"phone_regions": ["DK"]}) == [("phone", "3545 1234")]


def test_phone_region_must_be_known():
    from bidsanon.errors import PolicyError
    from bidsanon.schema import validate
    with pytest.raises(PolicyError, match=r"phone_regions\[1\]` is not a region"):
        validate({"phone_regions": ["DK", "XX"]}, POLICY)


def test_number_with_country_code_inside_numeric_data_found():
    data = " ".join(str(1201 * i) for i in range(30))
    text = f"{data} +45 3545 1234 {data}"
    assert find(text, ["phone"]) == [("phone", "+45 3545 1234")]
