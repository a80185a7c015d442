"""Identifying text patterns."""

from bidsanon.schema import defaults
from bidsanon.scrub import POLICY, Scrubber, find


def scrub(text, patterns=("email", "url", "phone")):
    return Scrubber.from_policy(defaults(POLICY) | {"patterns": list(patterns)}).scrub(text)[0]


def test_email_phone_url_replaced_public_urls_kept():
    text = ("Contact jane.doe@uni.edu or +49 30 1234 5678 or (555) 123-4567; "
            "see https://doi.org/10.1016/j.x and http://jane.example.com/~jd/index.html.")
    out = scrub(text)
    assert "jane.doe@uni.edu" not in out and "1234 5678" not in out and "123-4567" not in out
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
