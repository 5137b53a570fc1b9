"""S3's XML: the error document (and, as operations arrive, their results), built with the standard library."""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement, tostring

from pockity.s3api.errors import S3Error

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def document(root: Element) -> bytes:
    """The bytes of an XML document with S3's declaration."""
    body: bytes = tostring(root, encoding="utf-8", xml_declaration=False)
    return _DECLARATION + body


def error_document(err: S3Error, resource: str, request_id: str) -> bytes:
    """`<Error><Code/><Message/><Resource/><RequestId/>...</Error>` (S3 puts no namespace on errors)."""
    root = Element("Error")
    for name, value in (("Code", err.code), ("Message", err.message), *err.extra.items()):
        SubElement(root, name).text = value
    SubElement(root, "Resource").text = resource
    SubElement(root, "RequestId").text = request_id
    return document(root)
