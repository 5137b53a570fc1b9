"""S3's error document: the elements clients read, and escaping."""

from __future__ import annotations

from xml.etree.ElementTree import fromstring

from pockity.s3api.errors import S3Error
from pockity.s3api.xml import error_document


def test_the_error_document_has_what_s3_clients_read() -> None:
    err = S3Error("NoSuchKey", "The specified key does not exist.", 404, Key="a<&>.txt", BucketName="pockity")
    body = error_document(err, "/pockity/a<&>.txt", "req-1")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error>')
    root = fromstring(body)
    fields = {child.tag: child.text for child in root}
    assert fields == {
        "Code": "NoSuchKey",
        "Message": "The specified key does not exist.",
        "Key": "a<&>.txt",
        "BucketName": "pockity",
        "Resource": "/pockity/a<&>.txt",
        "RequestId": "req-1",
    }
    assert b"a&lt;&amp;&gt;.txt" in body
