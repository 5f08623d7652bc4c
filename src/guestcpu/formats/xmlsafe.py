"""One hardened XML parser for every document guestcpu reads.

Entity resolution, DTD loading and network access are off, so a hostile file
cannot read local files or reach the network (XXE); ``huge_tree`` stays off, so
libxml2's limits on depth (256) and on one text node hold, and the input itself is
bounded by whoever read it (``formats.files``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lxml import etree

from guestcpu.errors import InputError

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=False,
)


def parse_xml_bytes(data: bytes, source: str) -> Any:
    """Parse ``data``; ``source`` names it in error messages."""
    if not data.strip():
        raise InputError(f"{source} is empty; expected an XML document")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        reason = " ".join(str(exc.msg).split())  # libxml2 ends some messages with a newline
        raise InputError(f"{source} is not well-formed XML: {reason} (line {exc.lineno})") from None
    doctype: str = getattr(root.getroottree().docinfo, "doctype", "")
    if doctype:
        # libvirt documents never carry a DTD; one here can only smuggle in entities.
        raise InputError(f"{source} has a <!DOCTYPE> declaration; guestcpu reads plain libvirt XML without DTDs "
                         "or entities")
    return root


def parse_xml_file(path: Path) -> Any:
    from guestcpu.formats.files import read_bytes

    return parse_xml_bytes(read_bytes(path, "an XML document"), str(path))
