"""The error shape's ``error`` code is the same on every supported Python."""

from __future__ import annotations

from sgp_infra.api.errors import error_code


def test_codes_do_not_follow_the_phrases_python_3_13_renamed() -> None:
    # 3.13's HTTPStatus says "Unprocessable Content", "Content Too Large"...; the API's codes stay put.
    assert [error_code(s) for s in (413, 414, 416, 422)] == [
        "request_entity_too_large", "request_uri_too_long", "requested_range_not_satisfiable", "unprocessable_entity"]


def test_other_codes_come_from_the_status_phrase() -> None:
    assert [error_code(s) for s in (404, 405, 429, 499, 502)] == [
        "not_found", "method_not_allowed", "too_many_requests", "error", "bad_gateway"]
