"""Recognise a response that says it is one page of a longer listing: every common paging marker.

Baseten's listings have no paging. If one starts to page, what a page lacks is not gone, so a
marker that says "there is more" makes the listing incomplete (its unit fails; nothing is marked
deleted). `MARKERS` is the one table of what is recognised: where a marker sits (top level, or
in an envelope object such as `meta` or `pagination`), its spellings, and how its value says
there is more. The HTTP `Link` header's `rel="next"` says it too. A marker that says there is no
more (a null token, `has_more: false`, a total the list reaches, the last page) says nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

TOP = ""  # a marker at the response's top level
ENVELOPES = ("meta", "pagination", "paging", "page_info", "pageInfo")
LINKS = ("links", "_links")

# How a marker's value says there is more, given the value, the response's envelope and the entries listed.
Reading = Callable[[Any, Mapping[str, Any], int], str | None]


def _quoted(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def token(value: Any, _envelope: Mapping[str, Any], _listed: int) -> str | None:
    """A token, cursor, URL, page number or offset of the next page: anything but null, false or empty.

    0 counts: offset tokens start at 0, and a false alarm only fails one unit.
    """
    if value is None or value is False or value in ("", [], {}):
        return None
    if isinstance(value, Mapping):  # a link object, {"href": "..."}
        href = value.get("href")
        return None if href in (None, "") else _quoted(href)
    return _quoted(value)


def flag(value: Any, _envelope: Mapping[str, Any], _listed: int) -> str | None:
    """A flag that is true (or the string "true")."""
    return _quoted(value) if value is True or (isinstance(value, str) and value.lower() == "true") else None


def count(value: Any, _envelope: Mapping[str, Any], listed: int) -> str | None:
    """A total above what the response lists; sent as a number or as a string of digits."""
    total = _whole(value)
    return f"{total} for {listed} listed" if total is not None and total > listed else None


def page(value: Any, envelope: Mapping[str, Any], _listed: int) -> str | None:
    """A number of pages above the page this is (pages count from 1; no page number: the first)."""
    pages = _whole(value)
    current = next((_whole(envelope[k]) for k in CURRENT_PAGE if k in envelope), None) or 1
    return f"{pages} (this is page {current})" if pages is not None and pages > current else None


def _whole(value: Any) -> int | None:
    """A whole number sent as a number or as a string of digits; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


CURRENT_PAGE = ("page", "current_page", "currentPage", "page_number", "pageNumber")


@dataclass(frozen=True)
class Marker:
    """One kind of paging marker: the objects it may sit in, its spellings, how its value says more."""

    places: tuple[str, ...]  # TOP, or the key of an envelope object
    names: tuple[str, ...]
    reading: Reading


_EVERYWHERE = (TOP, *ENVELOPES)

MARKERS: tuple[Marker, ...] = (
    Marker(_EVERYWHERE, ("next_page_token", "nextPageToken", "page_token", "pageToken"), token),
    Marker(_EVERYWHERE, ("next_cursor", "nextCursor", "end_cursor", "endCursor"), token),
    Marker((*_EVERYWHERE, *LINKS), ("next", "next_url", "nextUrl", "next_link", "nextLink"), token),
    Marker(_EVERYWHERE, ("next_page", "nextPage"), token),
    Marker(_EVERYWHERE, ("next_offset", "nextOffset"), token),
    Marker(_EVERYWHERE, ("has_more", "hasMore", "has_next", "hasNext", "has_next_page", "hasNextPage"), flag),
    Marker(_EVERYWHERE, ("more",), flag),
    Marker(
        _EVERYWHERE,
        ("total", "total_count", "totalCount", "total_results", "totalResults", "total_items", "totalItems"),
        count,
    ),
    Marker(
        _EVERYWHERE, ("total_pages", "totalPages", "page_count", "pageCount", "last_page", "lastPage"), page
    ),
)


def _places(payload: Mapping[str, Any], place: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The object a marker's place names in this response, with its path prefix, if it is there."""
    if place == TOP:
        yield "", payload
    elif isinstance(nested := payload.get(place), Mapping):
        yield f"{place}.", nested


def markers_of(payload: Mapping[str, Any], listed: int) -> list[str]:
    """Every marker in a response body that says there is more, as `path=value (why)`, in table order."""
    said: list[str] = []
    seen: set[str] = set()
    for marker in MARKERS:
        for place in marker.places:
            for prefix, envelope in _places(payload, place):
                for name in marker.names:
                    path = prefix + name
                    if name not in envelope or path in seen:
                        continue
                    seen.add(path)
                    if (why := marker.reading(envelope[name], envelope, listed)) is not None:
                        said.append(f"{path}={why}")
    return said


_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)")
_REL = re.compile(r"""\brel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.I)


def link_next(header: str) -> str | None:
    """The URL of a `Link` header's `rel="next"` entry, if it has one (RFC 8288)."""
    for url, params in _LINK.findall(header or ""):
        for quoted, bare in _REL.findall(params):
            if "next" in (quoted or bare).lower().split():
                return str(url)
    return None


def more_than_listed(payload: Mapping[str, Any], listed: int, link: str = "") -> list[str]:
    """What in a response (its body, its `Link` header) says it has more entries than the `listed` ones."""
    said = markers_of(payload, listed)
    if (url := link_next(link)) is not None:
        said.append(f'Link: <{url if len(url) <= 80 else url[:79] + "…"}>; rel="next"')
    return said
